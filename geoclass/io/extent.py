"""Extents and CRSs as the messages and overlap tests of every reader show them."""

from __future__ import annotations

from collections.abc import Sequence

from rasterio.crs import CRS

__all__ = ["boxes_overlap", "crs_name", "format_bounds", "one_line", "ordered_bounds"]


def ordered_bounds(b: Sequence[float]) -> tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` with left <= right and bottom <= top.

    A raster without georeferencing has an identity transform (y grows downwards), so its
    "bottom" is larger than its "top"; overlap tests need the ordered form.
    """
    return (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))


def boxes_overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two boxes (any corner order) share some area."""
    a, b = ordered_bounds(a), ordered_bounds(b)
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def format_bounds(b: Sequence[float]) -> str:
    """``(left, bottom, right, top)`` with up to 10 significant digits."""
    return "(" + ", ".join(f"{v:.10g}" for v in b) + ")"


def crs_name(crs: CRS | None) -> str:
    """``EPSG:32633``, else the CRS's string (shortened), or ``no CRS``."""
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg(confidence_threshold=90)
    return f"EPSG:{epsg}" if epsg else (crs.to_string()[:60] or "a custom CRS")


def one_line(exc: BaseException) -> str:
    """An exception's message on one line of at most 200 characters."""
    return " ".join(str(exc).split())[:200] or type(exc).__name__
