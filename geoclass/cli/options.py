"""Shared command-line options and the small parsers behind them.

Every option used by more than one command is declared once here as an ``Annotated`` alias
(in the style of rasterio's ``rio`` options module and fastapi-cli), so that ``--device`` or
``--bands`` read, parse and document themselves the same way in every command::

    def predict(device: DeviceOpt = "auto", bands: BandsOpt = None) -> None: ...

Defaults stay in each command's signature. Parsers raise ``typer.BadParameter``, which the CLI
reports as a usage error (exit code 2).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, NewType

import typer

__all__ = [
    "AmpChoice",
    "AmpOpt",
    "BandList",
    "BandsOpt",
    "BatchSizeOpt",
    "DeviceChoice",
    "DeviceOpt",
    "GroupOpt",
    "JsonOpt",
    "ModelOpt",
    "OutputOpt",
    "OverwriteOpt",
    "QuietOpt",
    "ResumeOpt",
    "SeedOpt",
    "VerboseOpt",
    "WorkersOpt",
    "check_exclusive",
    "output_option",
    "parse_bands",
    "parse_groups",
    "validate_groups",
]

# Help panels: options are grouped the same way in every command's --help.
PANEL_INPUT = "Input"
PANEL_OUTPUT = "Output"
PANEL_MODEL = "Model"
PANEL_TRAINING = "Training"
PANEL_RUNTIME = "Runtime"

DeviceChoice = Literal["auto", "cpu", "cuda"]
AmpChoice = Literal["auto", "on", "off"]

BandList = NewType("BandList", list)
"""A list of 1-based band indexes; a distinct name so Typer parses it as ONE option value."""

_GROUP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .-]*$")


# --- parsers ----------------------------------------------------------------------------------


def parse_bands(text: str | Iterable[int] | None) -> list[int] | None:
    """Parse a band selection such as ``"4,3,2"`` into 1-based band indexes.

    Args:
        text: Comma-separated positive integers (spaces allowed), or an already parsed list.

    Returns:
        The band indexes in the order given, or ``None`` for ``None`` (all bands).

    Raises:
        typer.BadParameter: The text is not a list of distinct positive integers.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        return [int(b) for b in text]
    if not text.strip():
        raise typer.BadParameter("empty band list: give band numbers counted from 1, e.g. 4,3,2")
    bands: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise typer.BadParameter(
                f"{text!r} is not a band list: expected comma-separated band numbers "
                "counted from 1, e.g. 4,3,2"
            )
        band = int(part)
        if band < 1:
            raise typer.BadParameter(f"{text!r}: band numbers start at 1 (as in GDAL), got {band}")
        if band in bands:
            raise typer.BadParameter(f"{text!r}: band {band} is listed twice")
        bands.append(band)
    return bands


def parse_groups(text: str | Iterable[str] | None) -> dict[str, list[str]]:
    """Parse class groups such as ``"agri=AnnualCrop,PermanentCrop"``.

    Args:
        text: One ``NAME=CLASS,CLASS`` string, several of them separated by ``;``, or an
            iterable of such strings (a repeated ``--group`` option).

    Returns:
        Group name -> class names, in the order given.

    Raises:
        typer.BadParameter: A group is malformed, empty, or named twice.
    """
    if text is None:
        return {}
    items = [text] if isinstance(text, str) else list(text)
    groups: dict[str, list[str]] = {}
    for item in items:
        for spec in item.split(";"):
            if not spec.strip():
                continue
            name, sep, members = spec.partition("=")
            name = name.strip()
            classes = [c.strip() for c in members.split(",") if c.strip()]
            if not sep or not name or not classes:
                raise typer.BadParameter(
                    f"{spec.strip()!r} is not a class group: expected NAME=CLASS,CLASS,..., "
                    "e.g. agri=AnnualCrop,PermanentCrop"
                )
            if not _GROUP_NAME.match(name):
                raise typer.BadParameter(f"{name!r} is not a usable group name")
            if name in groups:
                raise typer.BadParameter(f"group {name!r} is given twice")
            if len(set(classes)) != len(classes):
                raise typer.BadParameter(f"group {name!r} lists a class twice")
            groups[name] = classes
    return groups


def validate_groups(value: list[str] | None) -> list[str] | None:
    """Option callback: check ``--group`` values while parsing; the command calls parse_groups."""
    parse_groups(value)
    return value


def check_exclusive(**options: Any) -> None:
    """Raise a usage error if more than one of the named options was given.

    Args:
        **options: Option name (``stride``, ``overlap``) -> value; ``None`` and ``False`` mean
            "not given".

    Raises:
        typer.BadParameter: Two or more options are set.
    """
    given = [name for name, value in options.items() if value is not None and value is not False]
    if len(given) > 1:
        hint = " / ".join(f"'--{name.replace('_', '-')}'" for name in given)
        raise typer.BadParameter("use only one of these options", param_hint=hint)


def output_option(help_text: str, metavar: str = "PATH") -> Any:
    """A required ``-o/--output`` option with a command-specific help text and metavar."""
    return typer.Option(
        "-o",
        "--output",
        help=help_text,
        metavar=metavar,
        rich_help_panel=PANEL_OUTPUT,
        show_default=False,
    )


# --- shared option aliases --------------------------------------------------------------------

QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="Print only warnings, errors and results; no progress bars."
    ),
]
VerboseOpt = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="More detail, and a full traceback on errors."),
]

OutputOpt = Annotated[Path, output_option("Output path.")]

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "-m",
        "--model",
        metavar="MODEL",
        help="Model file (.safetensors written by 'geoclass train', or a run folder). "
        "Default: the model shipped with geoclass.",
        rich_help_panel=PANEL_MODEL,
        show_default=False,
    ),
]

BandsOpt = Annotated[
    BandList | None,
    typer.Option(
        "--bands",
        parser=parse_bands,
        metavar="B,B,...",
        help="Bands to read, counted from 1 as in GDAL, in model order, e.g. 4,3,2 for "
        "Landsat 8 RGB. Default: all bands (or what the model expects).",
        rich_help_panel=PANEL_INPUT,
        show_default=False,
    ),
]

NodataOpt = Annotated[
    float | None,
    typer.Option(
        "--nodata",
        metavar="VALUE",
        help="Treat VALUE as nodata in every band, for scenes with fill but no declared nodata "
        "(e.g. Landsat's 0, or 255 outside an 8-bit scene's footprint). Default: what the files declare.",
        rich_help_panel=PANEL_INPUT,
        show_default=False,
    ),
]

DeviceOpt = Annotated[
    DeviceChoice,
    typer.Option(
        "--device",
        help="Where to run the model: auto picks CUDA when available, else the CPU.",
        rich_help_panel=PANEL_RUNTIME,
    ),
]

AmpOpt = Annotated[
    AmpChoice,
    typer.Option(
        "--amp",
        help="Mixed precision: auto uses it on CUDA and keeps fp32 on CPUs "
        "(bf16 on most CPUs is slower than fp32).",
        rich_help_panel=PANEL_RUNTIME,
    ),
]

def default_workers() -> int:
    """Loader processes when --workers is not given: leave the main process a core for the model."""
    import os

    return max(0, min(4, (os.cpu_count() or 1) - 1))


WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-j",
        min=0,
        metavar="N",
        help="Reader/loader worker processes; 0 reads in the main process. "
        "Default: chosen from the CPU count.",
        rich_help_panel=PANEL_RUNTIME,
        show_default=False,
    ),
]

BatchSizeOpt = Annotated[
    int,
    typer.Option(
        "--batch-size",
        "-b",
        min=1,
        metavar="N",
        help="Chips per batch.",
        rich_help_panel=PANEL_RUNTIME,
    ),
]

SeedOpt = Annotated[
    int,
    typer.Option("--seed", metavar="S", help="Random seed, for reproducible runs."),
]

OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace outputs that already exist.",
        rich_help_panel=PANEL_OUTPUT,
    ),
]

ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue an interrupted run: keep finished work in the output and do the rest.",
        rich_help_panel=PANEL_OUTPUT,
    ),
]

JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print the result as JSON on stdout (progress still goes to stderr).",
        rich_help_panel=PANEL_OUTPUT,
    ),
]

GroupOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--group",
        metavar="NAME=CLASS,CLASS",
        callback=validate_groups,
        help="A group of classes, e.g. agri=AnnualCrop,PermanentCrop. Repeat for more groups.",
        show_default=False,
    ),
]
