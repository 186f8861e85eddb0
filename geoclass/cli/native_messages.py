"""Keep libtiff's own messages off the terminal: geoclass reports each failure in one line.

libtiff prints some errors straight to stderr ("_tiffWriteProc: No space left on device.") besides
handing them to GDAL, which rasterio turns into the exception geoclass reports. The CLI switches
that duplicate off (``--verbose`` keeps it). Only libtiff's default printer is removed; GDAL still
receives every error through its own per-file handlers.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

__all__ = ["silence_libtiff_stderr"]


def _loaded_libtiff() -> str | None:
    """Path of the libtiff this process has loaded (rasterio's bundled copy or the system's)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux: leave the messages alone
        return None
    for line in maps.splitlines():
        path = line.split()[-1] if line.split() else ""
        if "libtiff" in Path(path).name:
            return path
    return None


def silence_libtiff_stderr() -> bool:
    """Remove libtiff's default stderr error printer; True when done. Call after importing rasterio."""
    path = _loaded_libtiff()
    if path is None:
        return False
    try:
        lib = ctypes.CDLL(path)
        lib.TIFFSetErrorHandler.restype = ctypes.c_void_p
        lib.TIFFSetErrorHandler.argtypes = [ctypes.c_void_p]
        lib.TIFFSetErrorHandler(None)
    except (OSError, AttributeError):
        return False
    return True
