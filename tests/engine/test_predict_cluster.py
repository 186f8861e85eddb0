"""predict --dask: a real scheduler and two worker processes on 127.0.0.1, same bytes as one
process, a killed worker, an unreadable window, resume, and the errors of a missing cluster."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from geoclass.cli.app import app
from geoclass.engine.predict import PredictConfig, predict
from geoclass.engine.predict import cluster as cluster_module
from geoclass.engine.predict.cluster import ClusterError, worker_loads
from geoclass.errors import Interrupted, RasterOpenError
from geoclass.io.raster_writer import confidence_path, partial_path
from geoclass.progress import ProgressEvent
from tests.conftest import make_raster
from tests.engine.test_predict import make_model, smooth_image

distributed = pytest.importorskip("distributed", reason="needs dask[distributed] (the test extra)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dask_exe() -> str:
    exe = Path(sys.executable).with_name("dask")
    return str(exe) if exe.exists() else (shutil.which("dask") or "dask")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``dask scheduler`` and ``dask worker --nworkers 2 --nthreads 1`` as real processes."""
    log_dir = tmp_path_factory.mktemp("dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = (log_dir / "dask.log").open("w")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [
        subprocess.Popen([_dask_exe(), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                          "--no-dashboard"], stdout=log, stderr=log, cwd=log_dir, env=env),
    ]
    time.sleep(1.0)
    procs.append(subprocess.Popen(
        [_dask_exe(), "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
         "--memory-limit", "0", "--preload", "geoclass.engine.predict.cluster"],
        stdout=log, stderr=log, cwd=log_dir, env=env))
    try:
        with distributed.Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 900 x 300 px scene (4 output strips, nodata across a strip edge) and a small FCN."""
    tmp = tmp_path_factory.mktemp("inputs")
    img = smooth_image(3, 900, 300, seed=3)
    img[:, 240:300, :] = 0
    scene = make_raster(tmp / "scene.tif", img, nodata=0)
    return scene, make_model(tmp / "fcn.safetensors", "fcn", chip=64)


def _run(scene: Path, model: Path, out: Path, progress: Any = None, **kw: Any) -> Any:
    """predict; run here with one torch thread, like the 1-thread workers.

    The same bits need the same kernels: oneDNN picks its convolution blocking by thread count,
    so a 2-thread and a 1-thread process can differ by one unit in a few probabilities.
    """
    config = PredictConfig(scenes=scene, output=out, model=model, batch_size=8, confidence=True,
                           probabilities=out.with_name("p.tif"), **kw)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return predict(config, progress=progress)
    finally:
        torch.set_num_threads(threads)


def _same_outputs(a: Path, b: Path) -> None:
    for x, y in [(a, b), (a.with_name("p.tif"), b.with_name("p.tif")),
                 (confidence_path(a), confidence_path(b))]:
        assert x.read_bytes() == y.read_bytes(), y.name


@pytest.mark.parametrize("strategy", ["windows", "dense"])
def test_cluster_map_is_the_same_bytes_and_loads_once_per_worker(
    tmp_path: Path, cluster: str, inputs: tuple[Path, Path], strategy: str
) -> None:
    scene, model = inputs
    if strategy == "dense":
        model = make_model(tmp_path / "cnn.safetensors", "compact", chip=32)
    local = tmp_path / "local" / "map.tif"
    _run(scene, model, local, strategy=strategy)
    with distributed.Client(cluster) as client:
        before = sum(client.run(worker_loads).values())
        events: list[ProgressEvent] = []
        res = _run(scene, model, tmp_path / "dask" / "map.tif", dask=cluster, strategy=strategy,
                   progress=events.append)
        after = sum(client.run(worker_loads).values())
    _same_outputs(local, tmp_path / "dask" / "map.tif")
    assert res.strategy == strategy
    assert 1 <= after - before <= 2  # once per worker that got a task, not once per task
    steps = sum(e.step for e in events if e.kind == "advance" and e.task == "predict")
    assert steps == res.windows


def test_interrupted_local_run_resumes_on_the_cluster(
    tmp_path: Path, cluster: str, inputs: tuple[Path, Path]
) -> None:
    scene, model = inputs
    clean = tmp_path / "clean" / "map.tif"
    n = _run(scene, model, clean).windows
    out = tmp_path / "resumed" / "map.tif"

    def stop(event: ProgressEvent) -> None:
        stop.seen += event.step if event.kind == "advance" else 0  # type: ignore[attr-defined]
        if stop.seen >= n * 0.7:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    stop.seen = 0  # type: ignore[attr-defined]
    with pytest.raises(Interrupted):
        _run(scene, model, out, progress=stop)
    assert partial_path(out).exists()
    res = _run(scene, model, out, resume=True, dask=cluster)
    assert res.resumed_from_row > 0
    _same_outputs(clean, out)


def test_unreadable_window_stops_the_run_naming_it(
    tmp_path: Path, cluster: str, inputs: tuple[Path, Path]
) -> None:
    _, model = inputs
    img = smooth_image(3, 768, 256, seed=1)
    broken = make_raster(tmp_path / "broken.tif", img, tiled=True, blockxsize=256, blockysize=256)
    size = broken.stat().st_size
    with broken.open("r+b") as f:  # the last tiles' bytes are gone
        f.truncate(size - 60_000)
    out = tmp_path / "map.tif"
    with pytest.raises(RasterOpenError, match=r"broken.tif: read failed at window col=\d+ row="):
        _run(broken, model, out, dask=cluster)
    assert not out.exists() and not partial_path(out).exists()
    assert list(tmp_path.iterdir()) == [broken]


def test_no_scheduler_is_one_line_and_no_output(
    tmp_path: Path, inputs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT_S", 1.0)
    scene, model = inputs
    address = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler"):
        _run(scene, model, tmp_path / "map.tif", dask=address)
    assert list(tmp_path.iterdir()) == []
    result = CliRunner().invoke(app, ["predict", str(scene), "-m", str(model), "-o",
                                      str(tmp_path / "m.tif")], env={"GEOCLASS_DASK": address})
    assert result.exit_code != 0
    assert "cannot reach the Dask scheduler" in result.output
    assert "Traceback" not in result.output


def test_killed_worker_tasks_are_recomputed_and_the_map_is_identical(
    tmp_path: Path, cluster: str, inputs: tuple[Path, Path]
) -> None:
    """Runs last in this module: it kills a worker process (its nanny starts a new one)."""
    scene, model = inputs
    img = np.concatenate([smooth_image(3, 900, 300, seed=s) for s in (4, 5)], axis=1)
    wide = make_raster(tmp_path / "wide.tif", np.concatenate([img, img], axis=1))
    local = tmp_path / "local" / "map.tif"
    _run(wide, model, local, tta=True)
    with distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        killed: list[int] = []

        def kill_busy_worker(event: ProgressEvent) -> None:
            if killed or event.kind != "advance" or event.task != "predict":
                return
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # a worker holding a task of this run
                busy = [w for w, keys in client.processing().items()
                        if any("geoclass-predict" in str(k) for k in keys)]
                if busy:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(pids[busy[0]])
                    return
                time.sleep(0.02)

        _run(wide, model, tmp_path / "dask" / "map.tif", dask=cluster, tta=True,
             progress=kill_busy_worker)
        assert killed, "no worker was busy with the run"
        client.wait_for_workers(2, timeout=60)  # the nanny restarted it
    _same_outputs(local, tmp_path / "dask" / "map.tif")
