"""The ``geoclass`` command: a thin Typer shell over the library.

Each command lives in its own module and only turns options into one library call. This module
registers them, holds the global options, and maps errors to exit codes at the edge:

- ``GeoclassError``  -> ``error: <message>`` on stderr, exit ``err.exit_code``
                       (1; 2 for ConfigError)
- ``Interrupted``    -> ``interrupted: <how to resume>``, exit 130
- Ctrl-C             -> ``interrupted: ...``, exit 130
- OSError / GDAL I/O -> ``error: <file>: <reason>`` (a full disk names the free space), exit 1
- usage errors       -> Typer's usage message, exit 2
- with ``--json``    -> also ``{"error": ..., "exit_code": ..., "type": ...}`` on stdout

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
from geoclass.cli import sample as sample_command
from geoclass.cli import tile as tile_command
from geoclass.cli import train as train_command
from geoclass.cli.options import QuietOpt, VerboseOpt
from geoclass.cli.render import (
    JSON_REQUESTED,
    CliState,
    cli_state,
    describe_io_error,
    print_json_error,
    report_error,
    report_interrupt,
)
from geoclass.errors import GeoclassError
from geoclass.io.outputs import is_io_error

__all__ = ["app", "main"]


class GeoclassGroup(TyperGroup):
    """The root command group; turns library errors into one line and an exit code."""

    def list_commands(self, ctx: Any) -> list[str]:
        """List commands in workflow order rather than alphabetically."""
        return list(self.commands)

    def invoke(self, ctx: Any) -> Any:
        """Run the command; report ``GeoclassError``, I/O errors and Ctrl-C instead of a traceback.

        With ``--json`` the error is also printed on stdout as ``{"error": ..., "exit_code": ...}``,
        so a pipeline reading the JSON sees the failure.
        """
        raw_args = [*getattr(ctx, "_protected_args", []), *ctx.args]
        ctx.meta.setdefault(JSON_REQUESTED, "--json" in raw_args[: _end_of_options(raw_args)])
        try:
            return super().invoke(ctx)
        except GeoclassError as err:
            raise typer.Exit(self._fail(ctx, err)) from err
        except KeyboardInterrupt as err:
            code = report_interrupt()
            if ctx.meta.get(JSON_REQUESTED):
                print_json_error("stopped by the user (Ctrl-C)", code, "Interrupted")
            raise typer.Exit(code) from err
        except typer.TyperException as err:  # usage errors: Typer prints them, exit 2
            if ctx.meta.get(JSON_REQUESTED) and hasattr(err, "format_message"):
                print_json_error(err.format_message(), int(getattr(err, "exit_code", 2)), "UsageError")
            raise
        except Exception as err:
            if not is_io_error(err):  # anything else is a bug: its traceback must show
                raise
            # an OS or GDAL I/O failure the library did not expect: still one line
            raise typer.Exit(self._fail(ctx, describe_io_error(err))) from err

    @staticmethod
    def _fail(ctx: Any, err: GeoclassError) -> int:
        code = report_error(err, verbose=cli_state(ctx).verbose)
        if ctx.meta.get(JSON_REQUESTED):
            print_json_error(str(err).strip() or type(err).__name__, code, type(err).__name__)
        return code


def _end_of_options(args: list[str]) -> int:
    return args.index("--") if "--" in args else len(args)


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
    [bold]predict[/] a map of a whole scene, [bold]sample[/] it for reference points,
    [bold]mosaic[/] maps of neighbouring scenes.
    """
    if quiet and verbose:
        raise typer.BadParameter("use one or the other", param_hint="'--quiet' / '--verbose'")
    ctx.obj = CliState(quiet=quiet, verbose=verbose)
    if not verbose:
        import rasterio  # noqa: F401 - loads libtiff, whose stderr printer is then removed

        from geoclass.cli.native_messages import silence_libtiff_stderr

        silence_libtiff_stderr()


app.command("tile")(tile_command.tile)
app.command("train")(train_command.train)
app.command("eval")(eval_command.evaluate)
app.command("predict")(predict_command.predict)
app.command("sample")(sample_command.sample)
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
