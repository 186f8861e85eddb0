"""The hostile-input corpus: bad input and bad luck, each built in code, each with one clear line."""
