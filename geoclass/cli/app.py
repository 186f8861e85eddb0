"""The ``geoclass`` command: a thin Typer shell over the library.

Each command lives in its own module and only turns options into one library call. This module
registers them, holds the global options, and maps errors to exit codes at the edge:

- ``GeoclassError``  -> ``error: <message>`` on stderr, exit ``err.exit_code``
                       (1; 2 for ConfigError)
- ``Interrupted``    -> ``interrupted: <how to resume>``, exit 130
- Ctrl-C             -> ``interrupted: ...``, exit 130
- usage errors       -> Typer's usage message, exit 2

``--verbose`` adds the traceback. Anything else is a bug and shows a full traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from geoclass import __version__
from geoclass.cli import eval as eval_command
from geoclass.cli import mosaic as mosaic_command
from geoclass.cli import predict as predict_command
from geoclass.cli import tile as tile_command
from geoclass.cli import train as train_command
from geoclass.cli.options import QuietOpt, VerboseOpt
from geoclass.cli.render import CliState, cli_state, report_error, report_interrupt
from geoclass.errors import GeoclassError

__all__ = ["app", "main"]


class GeoclassGroup(TyperGroup):
    """The root command group; turns library errors into one line and an exit code."""

    def list_commands(self, ctx: Any) -> list[str]:
        """List commands in workflow order rather than alphabetically."""
        return list(self.commands)

    def invoke(self, ctx: Any) -> Any:
        """Run the command; report ``GeoclassError`` and Ctrl-C instead of a traceback."""
        try:
            return super().invoke(ctx)
        except GeoclassError as err:
            raise typer.Exit(report_error(err, verbose=cli_state(ctx).verbose)) from err
        except KeyboardInterrupt as err:
            raise typer.Exit(report_interrupt()) from err


app = typer.Typer(
    name="geoclass",
    cls=GeoclassGroup,
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"geoclass {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Land-cover classification of satellite and aerial imagery, at any scale.

    [bold]tile[/] a labelled scene into chips, [bold]train[/] a model on them, [bold]eval[/] it,
    [bold]predict[/] a map of a whole scene, [bold]mosaic[/] maps of neighbouring scenes.
    """
    if quiet and verbose:
        raise typer.BadParameter("use one or the other", param_hint="'--quiet' / '--verbose'")
    ctx.obj = CliState(quiet=quiet, verbose=verbose)


app.command("tile")(tile_command.tile)
app.command("train")(train_command.train)
app.command("eval")(eval_command.evaluate)
app.command("predict")(predict_command.predict)
app.command("mosaic")(mosaic_command.mosaic)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and exit with its status.

    Args:
        argv: Arguments (without the program name); default ``sys.argv[1:]``.
    """
    try:
        app(args=argv, prog_name="geoclass")
    except KeyboardInterrupt:  # Ctrl-C outside a command, e.g. during start-up
        sys.exit(report_interrupt())


if __name__ == "__main__":
    main()
