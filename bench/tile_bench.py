"""Benchmark ``geoclass tile`` against a plain rasterio windowed read of the same windows.

A large scene is built without copying pixels: a GDAL VRT that repeats a real scene from
``../shared/data`` N x N times. The same chip windows are then read with plain rasterio (the
floor: read only, no checks, no writes) and tiled with ``geoclass.data.tiling.tile`` (labels,
nodata checks, DEFLATE GeoTIFF chips, index, statistics). Prints chips/s, MB/s and the ratio.

``--compare-writers N`` also tiles the scene N more times with each chip writer, alternating:
tiling's own small-chip TIFF encoder (``tiling/fast_tiff.py``) and GDAL through rasterio for every
chip, and prints the best rate of each and their ratio: the encoder is worth keeping only while it
is clearly (> ~15%) ahead.

Usage::

    python bench/tile_bench.py                       # Landsat 8 row 078, 6x6 repeats, 64 px chips
    python bench/tile_bench.py --repeat 4 --labels raster --workers 0
    python bench/tile_bench.py --repeat 1 --naive 0 --compare-writers 3
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import geoclass.models.model_file  # noqa: E402, F401 - imports torch; keep it out of the timing
from geoclass.data.tiling import TileConfig, chip_writer, tile  # noqa: E402 - after the sys.path line
from geoclass.io.windows import iter_window_grid  # noqa: E402

SHARED = Path(os.environ.get("GEOCLASS_SHARED_DATA", ROOT.parent / "shared" / "data"))
SCENES = {
    "landsat8": [SHARED / "scenes/landsat8-224077-224078/LC08_L1TP_224078_20200518_20200518_01_RT.TIF"],
    "rcr": sorted((SHARED / "scenes/sentinel2-rcr/sentinel-2").glob("*B0[432].tiff")),
}
_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}


def repeat_vrt(sources: list[Path], out: Path, repeat: int) -> Path:
    """A VRT that tiles the stacked bands of ``sources`` ``repeat`` x ``repeat`` times."""
    bands: list[tuple[Path, int]] = []
    with rasterio.open(sources[0]) as ref:
        w, h, crs, t, dtype = ref.width, ref.height, ref.crs, ref.transform, ref.dtypes[0]
        block = ref.block_shapes[0]
    for s in sources:
        with rasterio.open(s) as ds:
            bands += [(s, b) for b in range(1, ds.count + 1)]
    gt = ", ".join(repr(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    parts = [f'<VRTDataset rasterXSize="{w * repeat}" rasterYSize="{h * repeat}">',
             f"<SRS>{escape(crs.to_wkt())}</SRS>", f"<GeoTransform>{gt}</GeoTransform>"]
    for i, (src, b) in enumerate(bands, start=1):
        parts.append(f'<VRTRasterBand dataType="{_GDAL_TYPES[dtype]}" band="{i}">')
        for r in range(repeat):
            for c in range(repeat):
                parts.append(
                    f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(str(src))}</SourceFilename>'
                    f"<SourceBand>{b}</SourceBand>"
                    f'<SourceProperties RasterXSize="{w}" RasterYSize="{h}" DataType="{_GDAL_TYPES[dtype]}" '
                    f'BlockXSize="{block[1]}" BlockYSize="{block[0]}"/>'
                    f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                    f'<DstRect xOff="{c * w}" yOff="{r * h}" xSize="{w}" ySize="{h}"/></SimpleSource>'
                )
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    out.write_text("\n".join(parts))
    return out


def label_vrt(like: Path, tmp: Path, repeat: int) -> Path:
    """A two-class label raster on the scene's grid: one small GeoTIFF, repeated by a VRT."""
    with rasterio.open(like) as ds:
        w, h, crs, t = ds.width, ds.height, ds.crs, ds.transform
    rows, cols = np.mgrid[0:h, 0:w]
    classes = (((rows // 300) + (cols // 300)) % 2 + 1).astype(np.uint8)
    small = tmp / "labels_small.tif"
    with rasterio.open(small, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8", crs=crs,
                       transform=t, compress="deflate", tiled=True) as dst:
        dst.write(classes, 1)
    return repeat_vrt([small], tmp / "labels.vrt", repeat)


def raw_read(path: Path, size: int) -> tuple[int, int, float, float]:
    """Read every chip window with plain rasterio; return (chips, bytes, seconds, CPU seconds)."""
    n = nbytes = 0
    t0, c0 = time.perf_counter(), time.process_time()
    with rasterio.open(path) as ds:
        for gw in iter_window_grid(ds.width, ds.height, size):
            arr = ds.read(window=Window(gw.read.col_off, gw.read.row_off, size, size))
            n += 1
            nbytes += arr.nbytes
    return n, nbytes, time.perf_counter() - t0, time.process_time() - c0


def naive_read_write(path: Path, size: int, limit: int, out: Path) -> tuple[int, float]:
    """What a hand-written loop does: read a window, write it with rasterio (GTiff, DEFLATE)."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    t0 = time.perf_counter()
    with rasterio.open(path) as ds:
        profile = {"driver": "GTiff", "width": size, "height": size, "count": ds.count,
                   "dtype": ds.dtypes[0], "crs": ds.crs, "compress": "deflate"}
        for gw in iter_window_grid(ds.width, ds.height, size):
            if n >= limit:
                break
            win = Window(gw.read.col_off, gw.read.row_off, size, size)
            arr = ds.read(window=win)
            with rasterio.open(out / f"{n}.tif", "w", transform=ds.window_transform(win), **profile) as dst:
                dst.write(arr)
            n += 1
    return n, time.perf_counter() - t0


def compare_writers(vrt: Path, labels: Path | None, args: argparse.Namespace, tmp: Path) -> None:
    """Tile ``args.compare_writers`` times with each chip writer, alternating; print the best rates."""
    best = {"fast TIFF encoder": 0.0, "GDAL (rasterio)": 0.0}
    cpu = dict.fromkeys(best, float("inf"))
    for i in range(args.compare_writers):
        for name in best:
            # FAST_MAX_BYTES = 0: no chip is small enough for the encoder, GDAL writes every chip.
            limit = chip_writer.FAST_MAX_BYTES if name.startswith("fast") else 0
            with mock.patch.object(chip_writer, "FAST_MAX_BYTES", limit):
                t0, c0 = time.perf_counter(), time.process_time()
                r = tile(TileConfig(scenes=vrt, output=tmp / f"cmp-{i}-{limit}", labels=labels, size=args.size,
                                    workers=args.workers, min_labelled=0.5))
                secs, cpu_s = time.perf_counter() - t0, time.process_time() - c0
            best[name] = max(best[name], r.windows / secs)
            cpu[name] = min(cpu[name], cpu_s / r.windows * 1e3)
    for name in best:
        print(f"writer {name:18s}: best {best[name]:8,.0f} chips/s  (CPU {cpu[name]:.3f} ms/chip, "
              f"{args.compare_writers} runs)")
    fast, gdal = best.values()
    cpu_fast, cpu_gdal = cpu.values()
    # CPU time per chip is the steadier measure on a shared machine; both should agree.
    print(f"ratio GDAL / fast : {gdal / fast:.2f}x chips/s, {cpu_fast / cpu_gdal:.2f}x by CPU per chip "
          f"(GDAL within 15% of the encoder: {min(gdal / fast, cpu_fast / cpu_gdal) >= 0.85})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", choices=sorted(SCENES), default="landsat8")
    ap.add_argument("--repeat", type=int, default=6, help="repeat the scene N x N times")
    ap.add_argument("--size", type=int, default=64, help="chip size in pixels")
    ap.add_argument("--workers", type=int, default=None, help="tile worker threads (default: auto)")
    ap.add_argument("--labels", choices=["none", "raster"], default="none",
                    help="none: unlabelled chips; raster: a 2-class label raster on the grid")
    ap.add_argument("--keep", type=Path, default=None, help="write chips here instead of a temp dir")
    ap.add_argument("--naive", type=int, default=5000,
                    help="also time a plain rasterio read+write loop on this many windows (0: skip)")
    ap.add_argument("--compare-writers", type=int, default=0, metavar="N",
                    help="also tile N times with each chip writer (fast TIFF encoder, GDAL), alternating")
    args = ap.parse_args()

    sources = SCENES[args.scene]
    if not sources or not all(p.is_file() for p in sources):
        sys.exit(f"real data not found under {SHARED} (set GEOCLASS_SHARED_DATA)")
    os.environ.setdefault("GDAL_CACHEMAX", "512")
    with tempfile.TemporaryDirectory(prefix="tile-bench-") as tmpdir:
        tmp = Path(tmpdir)
        vrt = repeat_vrt(sources, tmp / "big.vrt", args.repeat)
        labels = label_vrt(sources[0], tmp, args.repeat) if args.labels == "raster" else None
        with rasterio.open(vrt) as ds:
            w, h, count, dtype = ds.width, ds.height, ds.count, ds.dtypes[0]
        print(f"scene: {w} x {h} px x {count} bands {dtype} = {w * h / 1e6:.0f} MP "
              f"({args.scene} repeated {args.repeat}x{args.repeat} by a VRT), chips {args.size} px, "
              f"labels: {args.labels}, cpus: {os.cpu_count()}")

        n_raw, bytes_raw, t_raw, cpu_raw = raw_read(vrt, args.size)
        out = args.keep or tmp / "chips"
        t0, c0 = time.perf_counter(), time.process_time()
        result = tile(TileConfig(scenes=vrt, output=out, labels=labels, size=args.size, workers=args.workers,
                                 min_labelled=0.5, overwrite=args.keep is not None))
        t_tile, cpu_tile = time.perf_counter() - t0, time.process_time() - c0
        chip_bytes = args.size * args.size * count * np.dtype(dtype).itemsize
        on_disk = sum(f.stat().st_size for f in out.rglob("*.tif"))
        raw_rate, tile_rate = n_raw / t_raw, result.windows / t_tile
        print(f"raw rasterio read : {n_raw:>8,} windows in {t_raw:6.1f} s  {raw_rate:8,.0f} chips/s "
              f"{bytes_raw / t_raw / 1e6:7.1f} MB/s  (CPU {cpu_raw / n_raw * 1e3:.3f} ms/chip)")
        print(f"geoclass tile     : {result.windows:>8,} windows in {t_tile:6.1f} s  {tile_rate:8,.0f} chips/s "
              f"{result.windows * chip_bytes / t_tile / 1e6:7.1f} MB/s  ({result.chips:,} chips written, "
              f"{on_disk / 1e6:,.0f} MB DEFLATE on disk, workers={args.workers if args.workers is not None else 'auto'}, "
              f"CPU {cpu_tile / result.windows * 1e3:.3f} ms/chip)")
        print(f"ratio tile / raw  : {tile_rate / raw_rate:.2f}x")
        if args.naive:
            n_naive, t_naive = naive_read_write(vrt, args.size, args.naive, tmp / "naive")
            print(f"rasterio read+write loop (GDAL GTiff DEFLATE, {n_naive:,} windows): "
                  f"{n_naive / t_naive:,.0f} chips/s; tile / loop: {tile_rate / (n_naive / t_naive):.2f}x")
        if args.compare_writers:
            compare_writers(vrt, labels, args, tmp)
        print(f"peak RSS          : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
