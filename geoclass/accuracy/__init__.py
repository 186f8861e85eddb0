"""Map accuracy and class areas the way map-makers report them (Olofsson et al. 2014).

- ``estimators``: the stratified estimators (pure numpy) of accuracy and area with 95% intervals;
- ``mapped_area``: pixel count and area of each class of a map, streamed;
- ``reference``: reference points, polygons or rasters read against a map;
- ``assess``: ``assess_map``, the whole assessment and its report (``geoclass eval MAP --reference``);
- ``sample``: stratified random samples of a map for reference labelling (``geoclass sample``).
"""

from __future__ import annotations

from typing import Any

from geoclass.accuracy.estimators import Z95, Estimate, StratifiedEstimates, stratified_estimates

__all__ = [
    "Z95",
    "Estimate",
    "MapAccuracyConfig",
    "StratifiedEstimates",
    "assess_map",
    "stratified_estimates",
]


def __getattr__(name: str) -> Any:
    """Import the raster-reading parts (rasterio, fiona, shapely) only when they are used."""
    if name in ("MapAccuracyConfig", "assess_map"):
        from geoclass.accuracy import assess

        return getattr(assess, name)
    raise AttributeError(f"module 'geoclass.accuracy' has no attribute {name!r}")
