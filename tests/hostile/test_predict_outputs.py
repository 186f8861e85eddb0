"""predict, tile, preview and vector outputs: no input is ever replaced, a full disk or a second run
writing the same map is one clear line, odd scenes (tiny, GCP-located) say what they are."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from typer.testing import CliRunner

from geoclass.cli.app import app
from geoclass.data.tiling import TileConfig, tile
from geoclass.engine.predict import PredictConfig, predict
from geoclass.errors import ConfigError, DiskFullError, GeoreferenceError, OutputBusyError
from geoclass.io.outputs import OutputLock, input_files
from geoclass.io.reader import open_scene
from geoclass.progress import ProgressEvent
from tests.conftest import make_raster
from tests.engine.test_predict import make_model, smooth_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cnn(tmp_path: Path) -> Path:
    return make_model(tmp_path / "cnn.safetensors", "cnn", chip=16)


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return make_raster(tmp_path / "scene.tif", smooth_image(3, 96, 80))


def _vrt(path: Path, source: Path, width: int, height: int, bands: int = 3) -> Path:
    band_xml = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{os.path.relpath(source, path.parent)}</SourceFilename>'
        f"<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
        for b in range(1, bands + 1)
    )
    path.write_text(f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">{band_xml}</VRTDataset>')
    return path


def _digest(path: Path) -> bytes:
    return path.read_bytes()


_OWN_LINE = re.compile(r"^(note|warning|error|[a-z][a-z ]*): ")  # geoclass's notes and progress lines


def _one_error(err: str) -> str:
    """The one ``error:`` line of a failed command's stderr: last, and nothing but geoclass's own
    notes, warnings and progress lines before it (no traceback, no message of a C library)."""
    lines = err.rstrip().splitlines()
    assert lines and all(_OWN_LINE.match(line) for line in lines), err
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), prog_name="geoclass", env={"COLUMNS": "300", "NO_COLOR": "1"})
    return result.exit_code, result.stdout, result.stderr


# --- outputs never replace inputs ---------------------------------------------------------------


def test_vrt_reading_the_output_is_refused_and_the_scene_survives(scene: Path, cnn: Path, tmp_path: Path) -> None:
    vrt = _vrt(tmp_path / "scene.vrt", scene, 80, 96)
    before = _digest(scene)
    code, _, err = _cli("predict", str(vrt), "-o", str(scene), "-m", str(cnn), "--overwrite")
    assert code == 2 and _digest(scene) == before
    assert "scene.vrt reads" in _one_error(err)
    # a VRT inside a VRT, and every optional output
    outer = tmp_path / "sub" / "outer.vrt"
    outer.parent.mkdir()
    outer.write_text(vrt.read_text().replace('relativeToVRT="1">scene.tif', 'relativeToVRT="1">../scene.vrt'))
    with pytest.raises(ConfigError, match="scene.tif"):
        predict(PredictConfig(scenes=outer, output=tmp_path / "m.tif", model=cnn, probabilities=scene, overwrite=True))
    with pytest.raises(ConfigError, match="preview would replace"):
        predict(PredictConfig(scenes=outer, output=tmp_path / "m.tif", model=cnn, preview=vrt, overwrite=True))
    assert _digest(scene) == before


def test_gdal_connection_strings_reading_the_output_are_refused(scene: Path, cnn: Path, tmp_path: Path) -> None:
    import zipfile

    before = _digest(scene)
    size = scene.stat().st_size
    with zipfile.ZipFile(tmp_path / "s.zip", "w") as archive:
        archive.write(scene, "inner/scene.tif")
    nested = tmp_path / "nested.vrt"  # a VRT whose source is itself a connection string
    nested.write_text(_vrt(tmp_path / "x.vrt", scene, 80, 96).read_text().replace(
        'relativeToVRT="1">scene.tif', f'relativeToVRT="0">vrt://{scene}?bands=1,2,3'))
    for given, victim in (
        (f"vrt://{scene}?bands=1,2,3", scene),
        (f"/vsisubfile/0_{size},{scene}", scene),
        (str(nested), scene),
    ):
        with pytest.raises(ConfigError, match="would replace"):
            predict(PredictConfig(scenes=given, output=victim, model=cnn, overwrite=True))
    assert _digest(scene) == before
    zipped = input_files([f"/vsizip/{tmp_path / 's.zip'}/inner/scene.tif"], "scene")
    assert tmp_path / "s.zip" in {f.path for f in zipped}


def test_vector_sidecars_are_checked_before_predicting(scene: Path, cnn: Path, tmp_path: Path) -> None:
    dbf = tmp_path / "v.dbf"
    dbf.write_bytes(scene.read_bytes())  # a raster that happens to be named like a shapefile part
    vrt = _vrt(tmp_path / "vd.vrt", dbf, 80, 96)
    events: list[ProgressEvent] = []
    with pytest.raises(ConfigError, match="v.dbf"):
        predict(PredictConfig(scenes=vrt, output=tmp_path / "m.tif", model=cnn, vector=tmp_path / "v.shp",
                              overwrite=True), events.append)
    assert not any(e.kind == "start" and e.task == "predict" for e in events)  # refused before any work
    assert dbf.read_bytes() == scene.read_bytes()


def test_symlink_and_hard_link_outputs_are_refused(scene: Path, cnn: Path, tmp_path: Path) -> None:
    before = _digest(scene)
    (tmp_path / "link.tif").symlink_to(scene)
    os.link(scene, tmp_path / "hard.tif")
    (tmp_path / "dir_link").symlink_to(tmp_path)
    for out in (tmp_path / "link.tif", tmp_path / "hard.tif", tmp_path / "dir_link" / "scene.tif"):
        with pytest.raises(ConfigError, match="would replace"):
            predict(PredictConfig(scenes=scene, output=out, model=cnn, overwrite=True))
    with pytest.raises(ConfigError, match="input model"):
        predict(PredictConfig(scenes=scene, output=tmp_path / "m.tif", model=cnn, preview=cnn, overwrite=True))
    assert _digest(scene) == before


def test_input_files_follow_sidecars_and_stacks(scene: Path, tmp_path: Path) -> None:
    (tmp_path / "scene.tif.aux.xml").write_text("<PAMDataset></PAMDataset>")
    vrt = _vrt(tmp_path / "scene.vrt", scene, 80, 96)
    found = {f.path.name for f in input_files([vrt, tmp_path / "missing.tif", "/vsicurl/http://x/y.tif"], "scene")}
    assert found == {"scene.vrt", "scene.tif", "scene.tif.aux.xml"}  # files on a server are not ours to guard
    band = make_raster(tmp_path / "b4.tif", smooth_image(1, 96, 80))
    stack = {f.path.name for f in input_files([band, f"vrt://{scene}?bands=1"], "scene")}
    assert stack == {"b4.tif", "scene.tif", "scene.tif.aux.xml"}
    for ext in (".shp", ".dbf", ".shx"):
        (tmp_path / f"labels{ext}").write_bytes(b"")
    assert {f.path.name for f in input_files([tmp_path / "labels.shp"], "labels")} == {
        "labels.shp", "labels.dbf", "labels.shx"}


def test_tile_refuses_an_output_folder_holding_the_scene(tmp_path: Path) -> None:
    folder = tmp_path / "chips"
    folder.mkdir()
    scene = make_raster(folder / "scene.tif", smooth_image(3, 64, 64))
    with pytest.raises(ConfigError, match="holds .*scene.tif"):
        tile(TileConfig(scenes=[str(scene)], output=str(folder), size=16, overwrite=True))
    assert scene.exists()


# --- disk full ----------------------------------------------------------------------------------


def test_disk_full_in_the_sidecar_writer_is_one_line(
    scene: Path, cnn: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geoclass.engine.predict.resume as resume

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(resume, "write_sidecar", full)
    out = tmp_path / "map.tif"
    with pytest.raises(DiskFullError, match=r"map.tif: the disk is full \(.* free in .*needs up to"):
        predict(PredictConfig(scenes=scene, output=out, model=cnn, probabilities=tmp_path / "p.tif", workers=0))
    assert not out.exists() and not list(tmp_path.glob(".map.tif*")) and not list(tmp_path.glob(".p.tif*"))
    code, _, err = _cli("predict", str(scene), "-o", str(out), "-m", str(cnn), "--probabilities", str(tmp_path / "p.tif"))
    assert code == 1 and "disk is full" in _one_error(err)


def test_disk_full_in_gdal_is_one_line(scene: Path, cnn: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rasterio.errors import RasterioIOError

    import geoclass.io.raster_writer as writer

    real_open = writer.rasterio.open

    def failing_open(path: object, mode: str = "r", **kw: object) -> object:
        if mode == "r+":
            raise RasterioIOError(f"{path}: Write error: No space left on device")
        return real_open(path, mode, **kw)

    monkeypatch.setattr(writer.rasterio, "open", failing_open)
    tall = make_raster(tmp_path / "tall.tif", smooth_image(3, 600, 40))
    with pytest.raises(DiskFullError, match="then run the same command again with --resume"):
        predict(PredictConfig(scenes=tall, output=tmp_path / "map.tif", model=cnn, resume=True, workers=0))


def test_io_errors_reaching_the_cli_are_one_line(scene: Path, cnn: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import geoclass.engine.predict as engine

    def broken(config: PredictConfig, progress: object = None) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/data/x.tif")

    monkeypatch.setattr(engine, "predict", broken)
    monkeypatch.setattr("geoclass.cli.predict.predict", broken, raising=False)
    code, out, err = _cli("predict", str(scene), "-o", "/tmp/never.tif", "-m", str(cnn), "--json")
    assert code == 1 and err.strip() == "error: /data/x.tif: Permission denied", err
    assert json.loads(out) == {"error": "/data/x.tif: Permission denied", "exit_code": 1, "type": "CliError"}


# --- two runs, one output -----------------------------------------------------------------------


def test_a_second_run_on_the_same_output_is_refused(scene: Path, cnn: Path, tmp_path: Path) -> None:
    out = tmp_path / "map.tif"
    with OutputLock(out):
        with pytest.raises(OutputBusyError, match=rf"another geoclass run \(process {os.getpid()}\)"):
            predict(PredictConfig(scenes=scene, output=out, model=cnn))
    assert not out.exists()
    predict(PredictConfig(scenes=scene, output=out, model=cnn))  # released: works
    assert out.exists() and not (tmp_path / ".map.tif.lock").exists()


def test_two_processes_sharing_an_output(tmp_path: Path) -> None:
    """Run B starts while run A holds the probabilities file both name: B fails at once in one line,
    A exits 0 and its probabilities are wholly its own (not a splice of the two runs)."""
    model = make_model(tmp_path / "cnn.safetensors", "cnn", chip=16)
    a = make_raster(tmp_path / "a.tif", smooth_image(3, 2000, 600, seed=1))
    b = make_raster(tmp_path / "b.tif", smooth_image(3, 900, 300, seed=2))
    lock = tmp_path / ".p.tif.lock"
    script = textwrap.dedent(
        """
        import pathlib, sys, time
        import geoclass.engine.predict  # torch and the model code load before the wait, not after
        from geoclass.cli.app import main
        from geoclass.io.outputs import OutputLock
        scene, out, wait_for = sys.argv[1:4]
        b_done = pathlib.Path("b.done")
        if wait_for == "-":  # run A: once it holds p.tif, keep it until run B has tried and ended
            take = OutputLock.acquire
            def acquire_and_wait(self):
                held = take(self)
                deadline = time.monotonic() + 120
                while self.target.name == "p.tif" and not b_done.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
                return held
            OutputLock.acquire = acquire_and_wait
        else:  # run B: start once run A holds p.tif
            while not pathlib.Path(wait_for).exists():
                time.sleep(0.01)
        try:
            main(["predict", scene, "-o", out, "--probabilities", "p.tif", "-m", "cnn.safetensors", "-j", "0"])
        finally:
            if wait_for != "-":
                b_done.touch()
        """
    )
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "300", "PYTHONPATH": str(ROOT)}

    def start(scene: Path, out: str, wait_for: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", script, str(scene), out, wait_for], stderr=subprocess.PIPE,
                                text=True, env=env, cwd=tmp_path)

    second = start(b, "mapB.tif", str(lock))  # imports, then waits until the first run holds p.tif
    first = start(a, "mapA.tif", "-")
    code_b, err_b = second.wait(timeout=300), second.stderr.read()  # type: ignore[union-attr]
    code_a, err_a = first.wait(timeout=300), first.stderr.read()  # type: ignore[union-attr]
    assert code_a == 0, err_a
    assert code_b == 1 and "p.tif: another geoclass run (process" in _one_error(err_b)
    assert not (tmp_path / "mapB.tif").exists() and not lock.exists()
    predict(PredictConfig(scenes=a, output=tmp_path / "alone.tif", model=model, probabilities=tmp_path / "alone_p.tif",
                          workers=0))
    for got, want in (("mapA.tif", "alone.tif"), ("p.tif", "alone_p.tif")):
        with rasterio.open(tmp_path / got) as g, rasterio.open(tmp_path / want) as w:
            assert np.array_equal(g.read(), w.read()), got


def test_every_raster_output_is_locked(scene: Path, cnn: Path, tmp_path: Path) -> None:
    for kind, kwargs in (("probabilities", {"probabilities": tmp_path / "p.tif"}), ("confidence", {"confidence": True})):
        busy = tmp_path / ("p.tif" if kind == "probabilities" else "m.confidence.tif")
        with OutputLock(busy), pytest.raises(OutputBusyError, match=busy.name):
            predict(PredictConfig(scenes=scene, output=tmp_path / "m.tif", model=cnn, **kwargs))  # type: ignore[arg-type]
        assert not (tmp_path / "m.tif").exists()


# --- odd scenes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy, unit", [("windows", "window"), ("auto", "chip")])
def test_scene_smaller_than_a_window_warns_with_the_real_pixels(
    cnn: Path, tmp_path: Path, strategy: str, unit: str
) -> None:
    small = make_raster(tmp_path / "small.tif", smooth_image(3, 10, 5))
    events: list[ProgressEvent] = []
    config = PredictConfig(scenes=small, output=tmp_path / "m.tif", model=cnn, strategy=strategy)
    predict(config, events.append)
    warnings = [e.message for e in events if e.level == "warning"]
    assert any(f"5x10 px is smaller than the model's 16x16 px {unit}" in w
               and "80% padding (50 real pixels each)" in w for w in warnings), warnings


def test_a_crs_without_a_geotransform_is_not_written_with_a_made_up_one(cnn: Path, tmp_path: Path) -> None:
    path = tmp_path / "crs_only.tif"
    with rasterio.open(path, "w", driver="GTiff", width=40, height=40, count=3, dtype="uint8",
                       crs="EPSG:32633") as ds:
        ds.write(smooth_image(3, 40, 40))
    events: list[ProgressEvent] = []
    predict(PredictConfig(scenes=path, output=tmp_path / "m.tif", model=cnn), events.append)
    assert any("has no CRS" in e.message for e in events if e.level == "warning")
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.crs is None


def test_write_errors_are_not_all_called_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import geoclass.io.outputs as outputs

    monkeypatch.setattr(outputs, "free_bytes", lambda path: 1000)  # a nearly full disk
    denied = outputs.write_error(PermissionError(errno.EACCES, "Permission denied"), tmp_path / "m.tif")
    assert not isinstance(denied, DiskFullError) and "Permission denied" in str(denied)
    from rasterio.errors import RasterioIOError

    gdal = outputs.write_error(RasterioIOError("Write error at scanline 256"), tmp_path / "m.tif", 5_000_000)
    assert isinstance(gdal, DiskFullError) and "1.0 KB free" in str(gdal) and "5.0 MB" in str(gdal)


def _gcp_scene(path: Path) -> Path:
    gcps = [GroundControlPoint(0, 0, 300000, 5800000), GroundControlPoint(0, 80, 300800, 5800000),
            GroundControlPoint(96, 0, 300000, 5799040), GroundControlPoint(96, 80, 300800, 5799040)]
    with rasterio.open(path, "w", driver="GTiff", width=80, height=96, count=3, dtype="uint8") as ds:
        ds.gcps = (gcps, CRS.from_epsg(32633))
        ds.write(smooth_image(3, 96, 80))
    return path


def test_gcp_scene_keeps_its_gcps_and_never_gets_a_made_up_transform(cnn: Path, tmp_path: Path) -> None:
    scene = _gcp_scene(tmp_path / "gcp.tif")
    events: list[ProgressEvent] = []
    out = tmp_path / "m.tif"
    predict(PredictConfig(scenes=scene, output=out, model=cnn, confidence=True), events.append)
    assert any("4 ground control points" in e.message for e in events if e.level == "warning")
    for path in (out, tmp_path / "m.confidence.tif"):
        with rasterio.open(path) as ds:
            gcps, crs = ds.gcps
            assert len(gcps) == 4 and crs == CRS.from_epsg(32633) and ds.crs is None
            assert ds.transform.is_identity
    with pytest.raises(ConfigError, match="ground control points.*--vector"):
        predict(PredictConfig(scenes=scene, output=tmp_path / "m2.tif", model=cnn, vector=tmp_path / "m.gpkg"))
    # Commands that need a regular grid refuse it with the way out.
    with pytest.raises(GeoreferenceError, match="gdalwarp"):
        open_scene(scene)
    code, _, err = _cli("tile", str(scene), "-o", str(tmp_path / "chips"), "--size", "16")
    assert code == 1 and "ground control points" in _one_error(err)


# --- --json on failure --------------------------------------------------------------------------


def test_json_failure_prints_a_json_error(scene: Path, tmp_path: Path) -> None:
    code, out, err = _cli("predict", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "m.tif"), "--json")
    assert code == 1 and "missing.tif" in err
    doc = json.loads(out)
    assert doc["exit_code"] == 1 and "missing.tif" in doc["error"] and doc["type"] == "InputNotFoundError"
    code, out, _ = _cli("eval", str(tmp_path / "nothing"), "--json")
    assert code != 0 and json.loads(out)["exit_code"] == code
    code, out, _ = _cli("predict", str(scene), "-o", str(tmp_path / "m.tif"), "--batch-size", "0", "--json")
    assert code == 2 and json.loads(out)["exit_code"] == 2
    code, out, _ = _cli("predict", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "m.tif"))
    assert code == 1 and out == ""  # without --json, stdout stays empty


def test_eval_report_never_replaces_the_model_or_a_chip(tmp_path: Path) -> None:
    from geoclass.engine.evaluate import EvalConfig, evaluate
    from tests.engine.test_train_eval import make_class_folders

    data = make_class_folders(tmp_path / "data", per_class=2)
    model = make_model(tmp_path / "m.safetensors", "cnn", chip=16, classes=["Forest", "Residential", "SeaLake"])
    before = model.read_bytes()
    with pytest.raises(ConfigError, match="would replace .*m.safetensors"):
        evaluate(EvalConfig(data=str(data), model=str(model), workers=0, report=str(model)))
    chip = next((data / "Forest").iterdir())
    with pytest.raises(ConfigError, match="inside the data folder"):
        evaluate(EvalConfig(data=str(data), model=str(model), workers=0, report=str(chip)))
    assert model.read_bytes() == before and chip.stat().st_size > 0


def test_a_real_full_disk_during_predict_then_resume(cnn: Path, tmp_path: Path) -> None:
    """predict --probabilities onto a 32 KB tmpfs (a private mount namespace; skipped where that is
    not allowed): one line, then --resume on a bigger disk gives the uninterrupted map."""
    probe = subprocess.run(["unshare", "--mount", "--map-root-user", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot mount a private tmpfs here (unshare --mount --map-root-user failed)")
    scene = make_raster(tmp_path / "noise.tif", np.random.default_rng(0).integers(1, 255, (3, 1100, 600), np.uint8))
    disk = tmp_path / "disk"
    disk.mkdir()
    args = f"predict {scene} -o {disk}/m.tif -m {cnn} --probabilities {disk}/p.tif -j 0 --resume"
    run = f"{sys.executable} -c 'import sys; from geoclass.cli.app import main; main(sys.argv[1:])' {args}"
    cmd = (f"mount -t tmpfs -o size=32k tmpfs {disk} && {run}; rc=$?; ls -A {disk}; "
           f"mount -o remount,size=20m {disk} && {run} >/dev/null 2>&1 && cp {disk}/m.tif {tmp_path}/resumed.tif; "
           "exit $rc")
    res = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", cmd], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "NO_COLOR": "1", "COLUMNS": "400"})
    assert res.returncode == 1, res.stderr
    line = _one_error(res.stderr)
    assert "the disk is full" in line and "free in" in line and "needs up to" in line, line
    left = res.stdout.split()  # what the failed run left: the partial files --resume continues from
    assert "--resume" in line and not any(n.endswith((".lock", ".tmp")) for n in left), left
    predict(PredictConfig(scenes=scene, output=tmp_path / "straight.tif", model=cnn, workers=0))
    with rasterio.open(tmp_path / "resumed.tif") as got, rasterio.open(tmp_path / "straight.tif") as want:
        assert np.array_equal(got.read(), want.read())
