"""Scale benchmark of the windowed reader: memory stays flat as scenes grow to gigapixels.

Builds, in a temporary folder and without copying pixels, VRTs that tile a real scene many times
(a real multi-gigapixel raster as far as GDAL is concerned), streams every window through
``geoclass.io.reader`` and prints throughput and peak memory next to a run on the small scene.
Each size runs in its own process so peak RSS is measured per size.

    python bench/reader_scale.py                 # small scene, ~0.1 GP and ~1.1 GP
    python bench/reader_scale.py --gigapixels 2 --window 512 --masked
    python bench/reader_scale.py --source .../LC08_..._RT.TIF --cache-mb 1   # decode-bound

The repeated scene sits in GDAL's block cache after the first pass, so by default this measures
the reader's own overhead; ``--cache-mb 1`` evicts blocks and makes every window decode again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape

DEFAULT_SOURCE = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "scenes"
    / "landsat7-rgb"
    / "RGB.byte.tif"
)

_GDAL_TYPES = {
    "uint8": "Byte",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


def build_repeat_vrt(source: Path, out: Path, target_pixels: float) -> tuple[int, int]:
    """Write a VRT that repeats ``source`` on a grid of at least ``target_pixels`` pixels."""
    import rasterio

    with rasterio.open(source) as ds:
        w, h, count = ds.width, ds.height, ds.count
        dtype = _GDAL_TYPES[ds.dtypes[0]]
        t, crs = ds.transform, ds.crs
        nodata = ds.nodata
        bx, by = ds.block_shapes[0][1], ds.block_shapes[0][0]
    reps = max(1, math.ceil(math.sqrt(target_pixels / (w * h))))
    cols, rows = reps, max(1, math.ceil(target_pixels / (w * h * reps)))
    width, height = cols * w, rows * h
    src = escape(str(source.resolve()))
    props = (
        f'<SourceProperties RasterXSize="{w}" RasterYSize="{h}" DataType="{dtype}" '
        f'BlockXSize="{bx}" BlockYSize="{by}"/>'
    )
    with out.open("w") as f:
        f.write(f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n')
        if crs is not None:
            f.write(f"<SRS>{escape(crs.to_wkt())}</SRS>\n")
        f.write(f"<GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}</GeoTransform>\n")
        for band in range(1, count + 1):
            f.write(f'<VRTRasterBand dataType="{dtype}" band="{band}">\n')
            if nodata is not None:
                f.write(f"<NoDataValue>{nodata}</NoDataValue>\n")
            for r in range(rows):
                for c in range(cols):
                    f.write(
                        f'<SimpleSource><SourceFilename relativeToVRT="0">{src}</SourceFilename>'
                        f"<SourceBand>{band}</SourceBand>{props}"
                        f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                        f'<DstRect xOff="{c * w}" yOff="{r * h}" xSize="{w}" ySize="{h}"/>'
                        "</SimpleSource>\n"
                    )
            f.write("</VRTRasterBand>\n")
        f.write("</VRTDataset>\n")
    return width, height


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def stream(path: str, window: int, masked: bool, skip_empty: bool) -> dict[str, float]:
    """Read every window of ``path`` through the reader (runs in a child process)."""
    from geoclass.io.reader import open_scene

    scene = open_scene(path)
    rss_before = _rss_mb()
    itemsize = __import__("numpy").dtype(scene.dtype).itemsize
    n = pixels = 0
    checksum = 0
    t0 = time.perf_counter()
    for gw in scene.windows(window, skip_empty=skip_empty):
        if masked:
            data, valid = scene.read_masked(gw.core)
            checksum += int(valid.sum())
        else:
            data = scene.read(gw.core)
        checksum += int(data[0, 0, 0])
        n += 1
        pixels += data.shape[1] * data.shape[2]
    seconds = time.perf_counter() - t0
    scene.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "width": scene.width,
        "height": scene.height,
        "bands": scene.count,
        "windows": n,
        "megapixels": pixels / 1e6,
        "seconds": seconds,
        "mp_per_s": pixels / 1e6 / seconds,
        "mb_per_s": pixels * scene.count * itemsize / 2**20 / seconds,
        "rss_before_stream_mb": rss_before,
        "peak_rss_mb": peak_mb,
        "checksum": checksum,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="scene to repeat")
    parser.add_argument("--gigapixels", type=float, default=1.1, help="size of the big VRT")
    parser.add_argument("--medium", type=float, default=0.1, help="size of the middle VRT (GP)")
    parser.add_argument("--window", type=int, default=1024, help="window side in pixels")
    parser.add_argument("--masked", action="store_true", help="read_masked instead of read")
    parser.add_argument("--skip-empty", action="store_true", help="windows(skip_empty=True)")
    parser.add_argument("--cache-mb", type=int, help="GDAL_CACHEMAX for the runs (MB)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(stream(args.child, args.window, args.masked, args.skip_empty)))
        return
    if args.cache_mb is not None:
        os.environ["GDAL_CACHEMAX"] = str(args.cache_mb)  # inherited by the child runs
    if not args.source.is_file():
        sys.exit(f"source scene not found: {args.source} (needs ../shared/data or --source)")

    runs: list[tuple[str, str]] = [("small (the scene itself)", str(args.source))]
    with tempfile.TemporaryDirectory(prefix="geoclass-bench-") as tmp:
        for label, gp in (("medium VRT", args.medium), ("big VRT", args.gigapixels)):
            vrt = Path(tmp) / f"repeat_{gp:g}gp.vrt"
            w, h = build_repeat_vrt(args.source, vrt, gp * 1e9)
            runs.append((f"{label} ({w}x{h})", str(vrt)))
        print(
            f"source {args.source.name}; window {args.window}; "
            f"{'read_masked' if args.masked else 'read'}; skip_empty={args.skip_empty}; "
            f"GDAL_CACHEMAX={os.environ.get('GDAL_CACHEMAX', 'default')}"
        )
        header = (
            f"{'scene':<32}{'MPix':>9}{'win':>7}{'s':>8}{'MP/s':>8}{'MB/s':>8}"
            f"{'RSS0 MB':>9}{'peak MB':>9}"
        )
        print(header)
        print("-" * len(header))
        for label, path in runs:
            cmd = [sys.executable, __file__, "--child", path, "--window", str(args.window)]
            cmd += ["--masked"] * args.masked + ["--skip-empty"] * args.skip_empty
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            print(
                f"{label:<32}{res['megapixels']:>9.1f}{res['windows']:>7d}{res['seconds']:>8.1f}"
                f"{res['mp_per_s']:>8.1f}{res['mb_per_s']:>8.1f}"
                f"{res['rss_before_stream_mb']:>9.0f}{res['peak_rss_mb']:>9.0f}"
            )


if __name__ == "__main__":
    main()
