"""Vector output files: the driver an extension means, the files a layer is made of, and writing
them atomically (a shapefile is up to five files that must be replaced together)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from geoclass.errors import ConfigError
from geoclass.io.outputs import InputFile, check_output_path

__all__ = [
    "VECTOR_DRIVERS",
    "check_vector_output",
    "commit_vector",
    "discard_vector",
    "vector_driver",
    "vector_files",
]

VECTOR_DRIVERS: dict[str, str] = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".shp": "ESRI Shapefile",
}
_SHP_FILES = (".shp", ".shx", ".dbf", ".prj", ".cpg")
_STALE_SHP_FILES = (".qix", ".sbn", ".sbx", ".qpj")  # spatial indexes of a replaced file


def vector_driver(path: Path) -> str:
    """The OGR driver for ``path``'s extension.

    Raises:
        ConfigError: An extension geoclass does not write.
    """
    driver = VECTOR_DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise ConfigError(
            f"{path}: unknown vector format {path.suffix or '(no extension)'!r}; use one of "
            + ", ".join(VECTOR_DRIVERS)
        )
    return driver


def vector_files(path: Path, driver: str) -> list[Path]:
    """The files a layer written to ``path`` consists of (a shapefile's sidecars included)."""
    if driver != "ESRI Shapefile":
        return [path]
    return [path.with_suffix(ext) for ext in _SHP_FILES]


def check_vector_output(
    path: Path, driver: str, *, overwrite: bool, inputs: Iterable[InputFile], kind: str
) -> None:
    """``check_output_path`` for every file of the layer: none is an input; the main one may exist
    only with ``overwrite`` (a stray sidecar is simply replaced)."""
    inputs = list(inputs)
    for target in vector_files(path, driver):
        check_output_path(target, overwrite=overwrite or target != path, inputs=inputs, kind=kind)


def commit_vector(tmp: Path, out: Path, driver: str) -> None:
    """Move the finished temporary layer onto the target name(s)."""
    if driver != "ESRI Shapefile":
        os.replace(tmp, out)
        return
    for ext in _SHP_FILES:
        src = tmp.with_suffix(ext)
        if src.exists():
            os.replace(src, out.with_suffix(ext))
        elif out.with_suffix(ext).exists():
            out.with_suffix(ext).unlink()  # left over from the file replaced
    for ext in _STALE_SHP_FILES:
        out.with_suffix(ext).unlink(missing_ok=True)


def discard_vector(tmp: Path, driver: str) -> None:
    """Remove a temporary layer and whatever its driver left beside it (SQLite journals)."""
    for p in vector_files(tmp, driver) + [Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")]:
        try:
            p.unlink(missing_ok=True)
        except OSError:
            pass
