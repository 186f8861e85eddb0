"""Benchmark of ``geoclass predict --dask``: one vs two 1-thread Dask workers on the same scene.

Starts a real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 (the commands the
README gives), builds a VRT that repeats a real scene to about ``--mp`` megapixels (no pixels
copied), and predicts it with the shipped default model:

- on one worker with one thread, then on two workers with one thread each (same scene, model,
  options; each cluster is warmed up first, so worker start-up and imports are not timed);
- in this process without Dask, for reference.

Prints megapixels per second of each, the ratio two workers / one worker (the issue's bound:
>= 1.6 on a 2-core machine), and whether all maps are the same bytes.

    python bench/cluster_bench.py              # ~8 MP
    python bench/cluster_bench.py --mp 20 --source scene.tif
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_bench import build_repeat_vrt  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "t33uuu_rgb.tif"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dask() -> str:
    exe = shutil.which("dask") or str(Path(sys.executable).with_name("dask"))
    if not Path(exe).exists():
        sys.exit("cluster_bench: the dask command is missing; pip install 'geoclass[dask]'")
    return exe


STRATEGY = "auto"


def _predict(scene: Path, out: Path, dask: str | None) -> float:
    """Seconds of one predict run (in this process); the map goes to ``out``."""
    from geoclass.engine.predict import PredictConfig, predict

    t0 = time.perf_counter()
    predict(PredictConfig(scenes=scene, output=out, overwrite=True, dask=dask, strategy=STRATEGY))
    return time.perf_counter() - t0


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mp", type=float, default=8.0, help="scene size in megapixels")
    parser.add_argument("--source", type=Path, default=SAMPLE, help="scene to repeat")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per setting (best)")
    parser.add_argument("--strategy", default="auto", help="predict --strategy")
    args = parser.parse_args()
    global STRATEGY
    STRATEGY = args.strategy
    import torch

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        vrt = tmp / "scene.vrt"
        width, height = build_repeat_vrt(args.source, vrt, args.mp * 1e6)
        mp = width * height / 1e6
        print(f"scene: {width}x{height} px ({mp:.1f} MP), {os.cpu_count()} cores, "
              f"strategy {STRATEGY}")
        port = _free_port()
        address = f"tcp://127.0.0.1:{port}"
        log = (tmp / "dask.log").open("w")
        scheduler = subprocess.Popen(
            [_dask(), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=log, stderr=log,
        )
        results: dict[str, tuple[float, str]] = {}
        try:
            for n in (1, 2):
                workers = subprocess.Popen(
                    [_dask(), "worker", address, "--nworkers", str(n), "--nthreads", "1",
                     "--no-dashboard", "--memory-limit", "0"],
                    stdout=log, stderr=log,
                )
                try:
                    from distributed import Client

                    with Client(address, timeout="30s") as client:
                        client.wait_for_workers(n, timeout=120)
                        # What --preload geoclass.engine.predict.cluster does at worker start.
                        client.run(__import__, "geoclass.engine.predict.cluster")
                    _predict(SAMPLE, tmp / "warm.tif", address)  # imports, model load
                    out = tmp / f"dask{n}.tif"
                    best = min(_predict(vrt, out, address) for _ in range(args.repeats))
                    results[f"{n} worker{'s' if n > 1 else ''} x 1 thread"] = (best, _digest(out))
                finally:
                    workers.terminate()
                    workers.wait(30)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            out = tmp / "local1.tif"
            best = min(_predict(vrt, out, None) for _ in range(args.repeats))
            results["local, 1 torch thread (no Dask)"] = (best, _digest(out))
            torch.set_num_threads(threads)
            out = tmp / "local.tif"
            best = min(_predict(vrt, out, None) for _ in range(args.repeats))
            results[f"local, {threads} torch threads (no Dask)"] = (best, _digest(out))
        finally:
            scheduler.terminate()
            scheduler.wait(30)
            log.close()
        print(f"{'setting':40s} {'seconds':>8s} {'MP/s':>6s}  map sha256")
        for name, (secs, digest) in results.items():
            print(f"{name:40s} {secs:8.1f} {mp / secs:6.2f}  {digest}")
        one = results["1 worker x 1 thread"][0]
        two = results["2 workers x 1 thread"][0]
        print(f"2 workers / 1 worker throughput: {one / two:.2f}x (bound: >= 1.6x)")
        same = len({d for _, d in results.values()}) == 1
        print(f"maps identical: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
