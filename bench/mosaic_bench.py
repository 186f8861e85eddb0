"""Time ``mosaic`` on the two adjacent Landsat 8 scenes against a plain read of the same inputs.

    python bench/mosaic_bench.py [--repeat N]

Also times ``rasterio.merge.merge`` where it applies (one file per input, one CRS, ``first``):
row 77's three band files are first copied into one file, and ``mosaic`` of the same two files
is timed beside it (the pixels are compared too).

Reads ../shared/data (or $GEOCLASS_SHARED_DATA); exits 0 with a note when it is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.merge import merge

from geoclass.engine.mosaic import MosaicConfig, mosaic
from geoclass.io.reader import open_scene

DATA = Path(
    os.environ.get(
        "GEOCLASS_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
)
FOLDER = DATA / "scenes" / "landsat8-224077-224078"
ROW77 = [FOLDER / f"LC08_L1TP_224077_20200518_20200518_01_RT_B{i}.TIF" for i in (2, 3, 4)]
ROW78 = FOLDER / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def read_all() -> int:
    """Every pixel and mask of both inputs, in 1024 blocks: the bytes the mosaic has to read."""
    n = 0
    for paths in (ROW77, [ROW78]):
        with open_scene(paths, nodata=0) as scene:
            for gw in scene.windows(1024):
                data, _ = scene.read_masked(gw.core)
                n += data.nbytes
    return n


def one_file(paths: list[Path], out: Path) -> Path:
    """The band files of a stack copied into one tiled GeoTIFF (``merge`` takes no stacks)."""
    with rasterio.open(paths[0]) as ds:
        profile = {**ds.profile, "count": len(paths), "tiled": True, "compress": "deflate"}
    with rasterio.open(out, "w", **profile) as dst:
        for i, p in enumerate(paths, 1):
            with rasterio.open(p) as ds:
                dst.write(ds.read(1), i)
    return out


def same_pixels(a: Path, b: Path) -> bool:
    with rasterio.open(a) as da, rasterio.open(b) as db:
        return da.shape == db.shape and bool(np.array_equal(da.read(), db.read()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not ROW78.is_file():
        print(f"skipped: Landsat scenes not found under {FOLDER}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        nbytes = read_all()  # warm the OS cache so both timings read from memory
        t_read = best_of(args.repeat, read_all)
        cases = {
            "mosaic GeoTIFF": MosaicConfig([ROW77, ROW78], out / "m.tif", nodata=0, overwrite=True),
            "mosaic --vrt": MosaicConfig([ROW77, ROW78], out / "m.vrt", nodata=0, overwrite=True),
            "mosaic --crs EPSG:4326": MosaicConfig(
                [ROW77, ROW78], out / "g.tif", nodata=0, crs="EPSG:4326", overwrite=True
            ),
        }
        result = mosaic(cases["mosaic GeoTIFF"])
        print(
            f"inputs: {nbytes / 2**20:.1f} MiB of pixels; mosaic {result.width}x{result.height}x"
            f"{result.count} {result.dtype} ({result.valid_fraction:.1%} with data)"
        )
        print(f"{'raw read of the inputs':<26} {t_read:7.2f} s   1.00x")
        for name, config in cases.items():
            t = best_of(args.repeat, lambda c=config: mosaic(c))
            print(f"{name:<26} {t:7.2f} s   {t / t_read:5.2f}x")
        # rasterio.merge where it applies: one file per input, one CRS, first valid wins.
        pair = [one_file(ROW77, out / "row77.tif"), ROW78]
        tiff = {"tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
                "predictor": 2, "BIGTIFF": "IF_SAFER"}  # fmt: skip
        ours = MosaicConfig(pair, out / "ours.tif", nodata=0, overwrite=True)
        t_ours = best_of(args.repeat, lambda: mosaic(ours))
        t_merge = best_of(
            args.repeat,
            lambda: merge(pair, nodata=0, dst_path=out / "merge.tif", dst_kwds=tiff),
        )
        same = "same pixels" if same_pixels(out / "ours.tif", out / "merge.tif") else "DIFFERENT"
        print(f"{'mosaic, one file each':<26} {t_ours:7.2f} s   {t_ours / t_read:5.2f}x")
        print(
            f"{'rasterio.merge, same':<26} {t_merge:7.2f} s   {t_merge / t_read:5.2f}x   "
            f"merge/mosaic {t_merge / t_ours:.2f} ({same})"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
