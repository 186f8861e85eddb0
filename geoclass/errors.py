"""The geoclass error family.

The library raises these; the CLI turns them into a one-line message and an exit code.
Each also inherits the builtin exception a Python user would expect to catch.
"""

from __future__ import annotations


class GeoclassError(Exception):
    """Base class of every error geoclass raises on purpose."""

    exit_code: int = 1


class InputNotFoundError(GeoclassError, FileNotFoundError):
    """An input path does not exist."""


class RasterOpenError(GeoclassError, ValueError):
    """A file exists but is not a raster GDAL can read, or it cannot be read."""


class GeoreferenceError(GeoclassError, ValueError):
    """Missing or incompatible CRS / extents between inputs."""


class BandError(GeoclassError, ValueError):
    """Band selection out of range or band count not what a model expects."""


class LabelError(GeoclassError, ValueError):
    """Labels (vector or raster) unusable: missing field, no overlap, no values."""


class DatasetError(GeoclassError, ValueError):
    """A chip dataset or class-folder dataset is empty, inconsistent or corrupt."""


class ModelError(GeoclassError, ValueError):
    """Unknown model name, unreadable model file, or weights that do not fit."""


class ConfigError(GeoclassError, ValueError):
    """Options that contradict each other or are out of range."""

    exit_code = 2


class OutputExistsError(GeoclassError, FileExistsError):
    """An output already exists and neither overwrite nor resume was asked for."""


class OutputError(GeoclassError, OSError):
    """An output cannot be written (folder missing or not writable)."""


class OutputBusyError(OutputError):
    """Another run is writing the same output right now."""


class DiskFullError(OutputError):
    """The disk (or a quota) filled up while writing an output."""


class Interrupted(GeoclassError):
    """A long run was interrupted; state was saved so it can be resumed."""

    exit_code = 130
