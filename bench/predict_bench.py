"""Benchmark of ``geoclass predict``: throughput, pipeline efficiency and flat memory.

Builds, in a temporary folder and without copying pixels, VRTs that repeat a real scene to about
10 megapixels and to a large size (1 gigapixel by default), and a model (the shipped default
model when installed, else a freshly initialised ``cnn``). Each size runs ``predict`` in its own
process, so peak RSS is per size, and prints:

- scene megapixels per second of the whole pipeline (read -> infer -> blend -> write);
- peak RSS, and the RSS range after warm-up (flat memory: it must not grow with rows done);
- the ratio of predict's window throughput to a bare model forward over the same number of
  batches already in memory, measured in the same process (1.0 = reading, blending and writing
  are completely hidden behind inference).

The large run can be capped in time (``--large-seconds``): it is stopped like a Ctrl-C and the
numbers cover the rows done, which is enough to show that memory does not grow with them.

    python bench/predict_bench.py                          # ~10 MP full, 1 GP for 120 s
    python bench/predict_bench.py --large-mp 100 --large-seconds 0   # 100 MP, full run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

DEFAULT_SOURCE = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "scenes"
    / "landsat7-rgb"
    / "RGB.byte.tif"
)
_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "float32": "Float32"}


def build_repeat_vrt(source: Path, out: Path, target_pixels: float) -> tuple[int, int]:
    """Write a VRT that tiles ``source`` on a grid of about ``target_pixels`` pixels."""
    import rasterio

    with rasterio.open(source) as ds:
        w, h, count, t, crs, nodata = ds.width, ds.height, ds.count, ds.transform, ds.crs, ds.nodata
        dtype = _GDAL_TYPES[ds.dtypes[0]]
    reps = max(1, round(math.sqrt(target_pixels / (w * h))))
    cols, rows = reps, max(1, round(target_pixels / (w * h * reps)))
    src = escape(str(source.resolve()))
    with out.open("w") as f:
        f.write(f'<VRTDataset rasterXSize="{cols * w}" rasterYSize="{rows * h}">\n')
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
                        f"<SourceBand>{band}</SourceBand>"
                        f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                        f'<DstRect xOff="{c * w}" yOff="{r * h}" xSize="{w}" ySize="{h}"/>'
                        "</SimpleSource>\n"
                    )
            f.write("</VRTRasterBand>\n")
        f.write("</VRTDataset>\n")
    return cols * w, rows * h


def build_model(out: Path, arch: str, chip: int) -> Path:
    """The default model when installed, else an untrained ``arch`` for 3-band uint8 chips."""
    from geoclass.models.model_file import ModelMeta, default_model_path, save_model_file
    from geoclass.models.registry import architecture_task, create_model

    if arch == "default":
        if default_model_path().exists():
            return default_model_path()
        arch = "cnn"
    classes = [
        "AnnualCrop",
        "Forest",
        "HerbaceousVegetation",
        "Highway",
        "Industrial",
        "Pasture",
        "PermanentCrop",
        "Residential",
        "River",
        "SeaLake",
    ]
    model = create_model(arch, len(classes), 3, chip_size=chip)
    meta = ModelMeta(
        architecture=arch,
        task=architecture_task(arch),
        classes=classes,
        in_chans=3,
        chip_size=chip,
        mean=[87.0, 97.0, 104.0],
        std=[51.0, 35.0, 29.0],
    )
    return save_model_file(out, model, meta)


# --- child: one run ---------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """VmHWM: unlike ``ru_maxrss`` it does not carry the parent's RSS over fork + exec."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def child(args: argparse.Namespace) -> None:
    import torch

    from geoclass.engine.device import select_device, select_precision
    from geoclass.engine.predict import PredictConfig, predict
    from geoclass.errors import Interrupted
    from geoclass.models.model_file import load_model_file

    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter(), _rss_mb()))
            stop.wait(0.25)

    threading.Thread(target=sample, daemon=True).start()
    state: dict[str, Any] = {"windows": 0, "t0": None, "t1": None}

    def progress(event: Any) -> None:
        now = time.perf_counter()
        if event.kind == "start" and event.task == "predict":
            state["t0"] = now
        elif event.kind == "advance" and event.task == "predict":
            state["windows"] += int(event.step)
            state["t1"] = now
            if args.seconds and now - state["t0"] > args.seconds:
                raise KeyboardInterrupt
        elif event.kind == "end" and event.task == "predict":
            state["t1"] = now

    # The bare model on batches already in memory, same device and precision, on as many batches
    # as predict ran.
    device = select_device(args.device)
    precision = select_precision(device, "auto")
    model, meta = load_model_file(args.model, device)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(args.batch_size, meta.in_chans, meta.chip_size, meta.chip_size).to(device)
    x = x.contiguous(memory_format=torch.channels_last)

    def forward_seconds(n_batches: int) -> float:
        with torch.inference_mode(), precision.autocast():
            model(x)
            t = time.perf_counter()
            for _ in range(n_batches):
                model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t

    per_batch_before = forward_seconds(20) / 20
    rss_before = _rss_mb()
    config = PredictConfig(
        scenes=args.vrt,
        output=args.out,
        model=args.model,
        batch_size=args.batch_size,
        workers=args.workers,
        overlap=args.overlap,
        strategy=args.strategy,
        device=args.device,
        overwrite=True,
    )
    interrupted = False
    try:
        result = predict(config, progress)
        skipped = result.windows_skipped
        stride = result.stride
    except Interrupted:
        interrupted = True
        skipped = 0
        stride = None
    t_predict = state["t1"] - state["t0"]
    stop.set()
    peak = _peak_rss_mb()
    if stride is None:  # interrupted: the stride the run used, from its strategy
        from geoclass.engine.predict.strategies import StrategyOptions, select_strategy

        options = StrategyOptions(device, precision)
        strategy = select_strategy(args.strategy, model, meta, options, str(args.model))
        stride = strategy.grid(
            window=None, stride=None, overlap=args.overlap, width=args.width, height=args.height
        )[1]
    run_windows = state["windows"] - skipped
    n_batches = math.ceil(run_windows / args.batch_size)
    t_forward: float | None = None
    if args.strategy == "windows":  # the bound is chip batches (dense: predict_strategies_bench)
        t_forward = forward_seconds(n_batches)
        # The machine may be shared: average the per-batch time measured before and after predict.
        t_forward = (t_forward + per_batch_before * n_batches) / 2
    warm = [
        mb for ts, mb in samples if state["t0"] is not None and ts > state["t0"] + 0.25 * t_predict
    ]
    print(
        json.dumps(
            {
                "width": args.width,
                "height": args.height,
                "interrupted": interrupted,
                "windows": state["windows"],
                "windows_run": run_windows,
                "stride": stride,
                "seconds": t_predict,
                "mp_per_s": state["windows"] * stride * stride / 1e6 / t_predict,
                "scene_mp_per_s": (args.width * args.height / 1e6 / t_predict)
                if not interrupted
                else None,
                "peak_rss_mb": peak,
                "rss_warm_min_mb": min(warm) if warm else None,
                "rss_warm_max_mb": max(warm) if warm else None,
                "forward_seconds": t_forward,
                "ratio": t_forward / t_predict if t_forward is not None else None,
                "torch_threads": torch.get_num_threads(),
                "rss_before_predict_mb": rss_before,
                "rss_timeline_mb": [
                    [round(ts - state["t0"], 1), round(mb)]
                    for ts, mb in samples[:: max(1, len(samples) // 12)]
                    if state["t0"] is not None and ts >= state["t0"]
                ],
            }
        )
    )


# --- parent -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="scene to repeat")
    parser.add_argument(
        "--small-mp", type=float, default=10.0, help="megapixels of the small run (full)"
    )
    parser.add_argument(
        "--large-mp", type=float, default=1000.0, help="megapixels of the large run"
    )
    parser.add_argument(
        "--large-seconds",
        type=float,
        default=120.0,
        help="stop the large run after this many seconds (0: run it to the end)",
    )
    parser.add_argument(
        "--arch", default="default", help="'default' (shipped model, else cnn) or a registry name"
    )
    parser.add_argument("--chip", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--overlap", type=float, default=None)
    parser.add_argument(
        "--strategy",
        choices=("windows", "dense"),
        default="windows",
        help="predict strategy; the predict/forward bound is measured for windows only",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--vrt", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if not args.source.exists():
        sys.exit(f"source scene not found: {args.source} (pass --source)")

    with tempfile.TemporaryDirectory(prefix="geoclass-predict-bench-") as tmp:
        tmpdir = Path(tmp)
        model = build_model(tmpdir / "model.safetensors", args.arch, args.chip)
        print(f"model: {model}")
        rows = []
        for label, mp, seconds in (
            ("small", args.small_mp, 0.0),
            ("large", args.large_mp, args.large_seconds),
        ):
            vrt = tmpdir / f"{label}.vrt"
            width, height = build_repeat_vrt(args.source, vrt, mp * 1e6)
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--vrt",
                str(vrt),
                "--model",
                str(model),
                "--out",
                str(tmpdir / f"{label}.tif"),
                "--seconds",
                str(seconds),
                "--width",
                str(width),
                "--height",
                str(height),
                "--batch-size",
                str(args.batch_size),
                "--device",
                args.device,
                "--strategy",
                args.strategy,
            ]
            if args.workers is not None:
                cmd += ["--workers", str(args.workers)]
            if args.overlap is not None:
                cmd += ["--overlap", str(args.overlap)]
            print(
                f"{label}: {width}x{height} = {width * height / 1e6:.0f} MP"
                + (f", stopped after {seconds:.0f} s" if seconds else ""),
                flush=True,
            )
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            res["label"] = label
            rows.append(res)
            for f in tmpdir.glob(f".{label}.tif*"):
                f.unlink()
            (tmpdir / f"{label}.tif").unlink(missing_ok=True)

        print()
        print(
            f"{'run':6} {'scene':>16} {'done':>8} {'MP/s':>7} {'peak RSS':>9} "
            f"{'RSS after warm-up':>18} "
            f"{'predict/forward':>15}"
        )
        for r in rows:
            done = r["windows"] * r["stride"] ** 2 / 1e6
            print(
                f"{r['label']:6} {r['width']:>7}x{r['height']:<8} {done:>6.0f}MP "
                f"{r['mp_per_s']:>7.2f} {r['peak_rss_mb']:>7.0f}MB "
                f"{r['rss_warm_min_mb'] or 0:>8.0f}-{r['rss_warm_max_mb'] or 0:<5.0f}MB "
                + (f"{r['ratio']:>15.2f}" if r["ratio"] is not None else f"{'-':>15}")
            )
        print()
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
