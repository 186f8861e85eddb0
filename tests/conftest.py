"""Shared test helpers: synthetic GeoTIFFs written under tmp_path, and the real-data location."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

# Real data lives beside the checkout (../shared/data); GEOCLASS_SHARED_DATA overrides it.
SHARED_DATA = Path(
    os.environ.get(
        "GEOCLASS_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
)
HAS_SHARED_DATA = (SHARED_DATA / "README.md").is_file()
needs_shared_data = pytest.mark.skipif(
    not HAS_SHARED_DATA,
    reason=f"real data not found at {SHARED_DATA} (set GEOCLASS_SHARED_DATA to its folder)",
)


def pytest_configure(config: pytest.Config) -> None:
    # rasterio itself still uses Affine's deprecated ``*`` on points; that noise is not ours.
    config.addinivalue_line(
        "filterwarnings", "ignore:Use `@` matmul instead of `\\*`:PendingDeprecationWarning"
    )


UTM_CRS = "EPSG:32633"
UTM_TRANSFORM = Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5800000.0)
GEO_TRANSFORM = Affine(0.0001, 0.0, 12.0, 0.0, -0.0001, 52.0)


def make_raster(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    crs: str | None = UTM_CRS,
    transform: Affine | None = None,
    nodata: float | None = None,
    mask: np.ndarray | None = None,
    descriptions: Sequence[str] | None = None,
    driver: str = "GTiff",
    **creation_options: Any,
) -> Path:
    """Write ``array`` ((h, w) or (bands, h, w)) as a raster and return its path.

    Args:
        path: Output file.
        array: Pixel values; its dtype is the raster's dtype.
        crs: CRS string, or None for a file without georeferencing.
        transform: Affine transform; defaults to a 10 m UTM grid (4326: a 0.0001 degree grid),
            and to none at all when ``crs`` is None.
        nodata: Nodata value to declare.
        mask: Optional (h, w) bool, True = valid, written as an internal per-dataset mask.
        descriptions: Optional band descriptions.
        driver: GDAL driver.
        **creation_options: Passed to ``rasterio.open`` (e.g. ``tiled=True``).
    """
    path = Path(path)
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    if transform is None and crs is not None:
        transform = GEO_TRANSFORM if crs in ("EPSG:4326", "epsg:4326") else UTM_TRANSFORM
    profile: dict[str, Any] = {
        "driver": driver,
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        **creation_options,
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # crs=None is on purpose
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr)
            if mask is not None:
                dst.write_mask(np.where(mask, 255, 0).astype(np.uint8))
            if descriptions is not None:
                for i, d in enumerate(descriptions, start=1):
                    dst.set_band_description(i, d)
    return path


@pytest.fixture
def raster_factory(tmp_path: Path) -> Callable[..., Path]:
    """``raster_factory("name.tif", array, **kw)`` writes ``make_raster`` output under tmp_path."""

    def factory(name: str, array: np.ndarray, **kwargs: Any) -> Path:
        return make_raster(tmp_path / name, array, **kwargs)

    return factory
