"""``python -m geoclass``: the command line, also as ``torchrun ... -m geoclass train ...``."""

from geoclass.cli.app import main

if __name__ == "__main__":
    main()
