"""Shell completion scripts for ``geoclass``, generated from the app.

The scripts are the ones Typer emits for ``_GEOCLASS_COMPLETE=source_<shell> geoclass``: they
call back into ``geoclass`` at completion time, so commands and options always match the
installed version. Regenerate the committed copies in ``completions/`` after changing the CLI
or upgrading Typer::

    python -m geoclass.cli.completions            # writes completions/
    python -m geoclass.cli.completions --check    # exit 1 if they are stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from typer.testing import CliRunner

from geoclass.cli.app import app

PROG_NAME = "geoclass"
COMPLETE_VAR = "_GEOCLASS_COMPLETE"

SCRIPT_FILES: dict[str, str] = {
    "bash": "geoclass.bash",
    "zsh": "_geoclass",
    "fish": "geoclass.fish",
}


def completion_script(shell: str) -> str:
    """Return the completion script for ``shell`` exactly as the installed app generates it.

    The app is run in-process with ``_GEOCLASS_COMPLETE=source_<shell>``, the same request a
    shell makes of the console script. Leading blank lines are dropped (zsh needs
    ``#compdef`` on the first line) and the text ends with one newline.

    Args:
        shell: ``bash``, ``zsh`` or ``fish``.

    Raises:
        ValueError: Unknown shell, or the app refused to generate a script.
    """
    if shell not in SCRIPT_FILES:
        raise ValueError(f"unknown shell {shell!r}; expected one of {', '.join(SCRIPT_FILES)}")
    result = CliRunner().invoke(app, [], prog_name=PROG_NAME, env={COMPLETE_VAR: f"source_{shell}"})
    if result.exit_code != 0 or not result.stdout.strip():
        raise ValueError(
            f"could not generate the {shell} completion script: {result.output.strip()}"
        )
    return result.stdout.lstrip("\n").rstrip() + "\n"


def default_directory() -> Path:
    """The ``completions/`` folder of the source checkout (or of the working directory)."""
    checkout = Path(__file__).resolve().parents[2] / "completions"
    return checkout if checkout.is_dir() else Path.cwd() / "completions"


def write_scripts(directory: Path) -> list[Path]:
    """Write all completion scripts into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for shell, name in SCRIPT_FILES.items():
        path = directory / name
        path.write_text(completion_script(shell), encoding="utf-8")
        written.append(path)
    return written


def stale_scripts(directory: Path) -> list[Path]:
    """Return the scripts in ``directory`` that are missing or differ from the generated ones."""
    stale = []
    for shell, name in SCRIPT_FILES.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != completion_script(shell):
            stale.append(path)
    return stale


def main(argv: list[str] | None = None) -> int:
    """Regenerate (or with ``--check`` verify) the committed completion scripts."""
    parser = argparse.ArgumentParser(
        prog="python -m geoclass.cli.completions", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "directory", nargs="?", type=Path, help="output folder (default: completions/)"
    )
    parser.add_argument(
        "--check", action="store_true", help="only check; exit 1 if any script is stale"
    )
    args = parser.parse_args(argv)
    directory = args.directory or default_directory()
    if args.check:
        stale = stale_scripts(directory)
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        return 1 if stale else 0
    for path in write_scripts(directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
