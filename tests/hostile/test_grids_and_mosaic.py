"""Hostile grids and outputs: plain images without georeferencing, inputs far apart, an output that
is an input (through a VRT or a link), a full disk and two runs writing one mosaic."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.io
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from typer.testing import CliRunner

import geoclass.engine.mosaic as mosaic_module
from geoclass.cli.app import app
from geoclass.data.tiling import TileConfig, tile
from geoclass.engine.mosaic import MosaicConfig, mosaic
from geoclass.errors import ConfigError, DiskFullError, GeoreferenceError, OutputBusyError
from geoclass.io.outputs import OutputLock
from geoclass.progress import ProgressEvent
from tests.conftest import make_raster

UTM = "EPSG:32632"


def plain(path: Path, array: np.ndarray, *, driver: str = "GTiff", transform: Affine | None = None) -> Path:
    """A raster without a CRS (and, unless given, without a transform: a pixel grid)."""
    arr = np.asarray(array)
    arr = arr[None] if arr.ndim == 2 else arr
    extra = {"transform": transform} if transform is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver=driver, width=arr.shape[2], height=arr.shape[1],
                           count=arr.shape[0], dtype=arr.dtype.name, **extra) as ds:
            ds.write(arr)
    return path


def read(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read(1)


def warnings_of(events: list[ProgressEvent]) -> list[str]:
    return [e.message for e in events if e.kind == "message" and e.level == "warning"]


def leftovers(folder: Path) -> list[str]:
    """Hidden files (temporary outputs, lock files) left in a folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- item 8: plain images without georeferencing ----------------------------------------------


def test_tile_plain_png_with_png_mask(tmp_path: Path) -> None:
    # A pixel-grid raster (identity transform: y grows downwards) has bottom > top.
    image = plain(tmp_path / "image.png", np.random.default_rng(0).integers(0, 255, (3, 64, 96), np.uint8),
                  driver="PNG")
    mask = np.full((64, 96), 2, np.uint8)
    mask[:, :64] = 1
    labels = plain(tmp_path / "mask.png", mask, driver="PNG")
    result = tile(TileConfig(scenes=image, output=tmp_path / "chips", labels=labels, size=32, workers=0))
    assert result.chips == 6
    by_class: dict[str, int] = {}
    for split in result.counts.values():
        for name, n in split.items():
            by_class[name] = by_class.get(name, 0) + n
    assert by_class == {"1": 4, "2": 2}


def test_mosaic_of_rasters_without_crs_on_one_pixel_grid(tmp_path: Path) -> None:
    a = plain(tmp_path / "a.png", np.full((4, 5), 1, np.uint8), driver="PNG")  # identity transform
    b = plain(tmp_path / "b.tif", np.full((4, 5), 2, np.uint8), transform=Affine.translation(3, 2))
    events: list[ProgressEvent] = []
    result = mosaic(MosaicConfig([a, b], tmp_path / "m.tif"), progress=events.append)
    assert (result.width, result.height, result.crs) == (8, 6, "")
    expected = np.full((6, 8), 255, np.uint8)
    expected[2:6, 3:8] = 2
    expected[0:4, 0:5] = 1  # first wins
    assert (read(tmp_path / "m.tif") == expected).all()
    assert [w for w in warnings_of(events) if "no CRS" in w] == [
        "the inputs have no CRS: they are joined on their shared pixel grid and the mosaic has no CRS "
        "either"
    ]
    mosaic(MosaicConfig([a, b], tmp_path / "m.vrt"))
    assert (read(tmp_path / "m.vrt") == expected).all()


def test_mosaic_without_crs_refuses_other_grids_and_mixing(tmp_path: Path) -> None:
    a = plain(tmp_path / "a.tif", np.ones((4, 5), np.uint8))
    half = plain(tmp_path / "half.tif", np.ones((4, 5), np.uint8), transform=Affine.translation(2.5, 0))
    with pytest.raises(GeoreferenceError, match=r"half\.tif: has no CRS and is not on the pixel grid of .*a\.tif"):
        mosaic(MosaicConfig([a, half], tmp_path / "m.tif"))
    with pytest.raises(ConfigError, match="no CRS, so they cannot be reprojected"):
        mosaic(MosaicConfig([a], tmp_path / "m.tif", crs=UTM))
    geo = make_raster(tmp_path / "geo.tif", np.ones((4, 5), np.uint8), crs=UTM, nodata=255)
    with pytest.raises(GeoreferenceError, match=r"a\.tif: has no CRS, but .*geo\.tif is in EPSG:32632"):
        mosaic(MosaicConfig([geo, a], tmp_path / "m.tif"))
    res = CliRunner().invoke(app, ["-q", "mosaic", str(geo), str(a), "-o", str(tmp_path / "m.tif")])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no CRS" in lines[0], res.stderr
    assert not (tmp_path / "m.tif").exists() and not leftovers(tmp_path)


# --- item 15: inputs far apart ------------------------------------------------------------------


def test_far_apart_inputs_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    # 100 x 100 m in UTM 32 and in UTM 34 (about 1000 km east): at 10 m the canvas is about
    # 94,000 x 7,000 pixels (0.67 gigapixels) of which the inputs cover 0.003%.
    a = make_raster(tmp_path / "a.tif", np.ones((10, 10), np.uint8), crs=UTM, nodata=255)
    b = make_raster(tmp_path / "b.tif", np.full((10, 10), 2, np.uint8), crs="EPSG:32634", nodata=255,
                    transform=Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5060000.0))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConfigError) as info:
        mosaic(MosaicConfig([a, b], tmp_path / "m.tif"))
    msg = str(info.value)
    assert "\n" not in msg
    assert "gigapixels" in msg and " x " in msg and "less than 0.01%" in msg and "--force" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    res = CliRunner().invoke(app, ["-q", "mosaic", str(a), str(b), "-o", str(tmp_path / "m.tif")])
    assert res.exit_code == 2 and "--force" in res.stderr and "Traceback" not in res.output


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lower the canvas limits so a 4-megapixel canvas counts as huge (a fast test)."""
    monkeypatch.setattr(mosaic_module, "_WARN_PIXELS", 100_000)
    monkeypatch.setattr(mosaic_module, "_REFUSE_PIXELS", 1_000_000)


def test_force_writes_a_sparse_canvas_and_a_vrt_only_warns(tmp_path: Path, small_limits: None) -> None:
    # Two 10 x 10 maps 20 km apart on one 10 m grid: a 2010 x 2010 canvas, 0.005% covered.
    a = make_raster(tmp_path / "a.tif", np.ones((10, 10), np.uint8), crs=UTM, nodata=255,
                    transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0))
    b = make_raster(tmp_path / "b.tif", np.full((10, 10), 2, np.uint8), crs=UTM, nodata=255,
                    transform=Affine(10.0, 0.0, 520000.0, 0.0, -10.0, 4980000.0))
    with pytest.raises(ConfigError, match=r"2010 x 2010 pixels \(0\.00404 gigapixels\)"):
        mosaic(MosaicConfig([a, b], tmp_path / "m.tif"))
    events: list[ProgressEvent] = []
    result = mosaic(MosaicConfig([a, b], tmp_path / "m.tif", force=True), progress=events.append)
    assert (result.width, result.height) == (2010, 2010)
    assert any("2010 x 2010 pixels" in w and "less than 0.01%" in w for w in warnings_of(events))
    arr = read(tmp_path / "m.tif")
    assert arr[0, 0] == 1 and arr[-1, -1] == 2 and int((arr != 255).sum()) == 200
    events.clear()
    mosaic(MosaicConfig([a, b], tmp_path / "m.vrt"), progress=events.append)
    assert any("2010 x 2010 pixels" in w for w in warnings_of(events))
    res = CliRunner().invoke(app, ["-q", "mosaic", str(a), str(b), "-o", str(tmp_path / "c.tif"), "--force"])
    assert res.exit_code == 0, res.output


def test_neighbours_do_not_warn(tmp_path: Path, small_limits: None) -> None:
    a = make_raster(tmp_path / "a.tif", np.ones((600, 600), np.uint8), crs=UTM, nodata=255)
    b = make_raster(tmp_path / "b.tif", np.full((600, 600), 2, np.uint8), crs=UTM, nodata=255,
                    transform=Affine(10.0, 0.0, 306000.0, 0.0, -10.0, 5800000.0))
    events: list[ProgressEvent] = []
    mosaic(MosaicConfig([a, b], tmp_path / "m.tif"), progress=events.append)
    assert warnings_of(events) == []


# --- items 2, 3, 4: the output is an input, a full disk, two runs -----------------------------


def test_output_read_through_a_vrt_or_a_link_is_refused(tmp_path: Path) -> None:
    x = make_raster(tmp_path / "x.tif", np.ones((10, 10), np.uint8), crs=UTM, nodata=255)
    b = make_raster(tmp_path / "b.tif", np.full((10, 10), 2, np.uint8), crs=UTM, nodata=255,
                    transform=Affine(10.0, 0.0, 300100.0, 0.0, -10.0, 5800000.0))
    vrt = mosaic(MosaicConfig([x], tmp_path / "a.vrt")).output  # a.vrt reads x.tif
    original = x.read_bytes()
    with pytest.raises(ConfigError, match=r"x\.tif: the mosaic would replace .*x\.tif, which .*a\.vrt reads"):
        mosaic(MosaicConfig([vrt, b], x, overwrite=True))
    link = tmp_path / "link.tif"
    link.symlink_to(x)
    with pytest.raises(ConfigError, match="would replace"):
        mosaic(MosaicConfig([link, b], x, overwrite=True))
    with pytest.raises(ConfigError, match="would replace"):
        mosaic(MosaicConfig([x, b], link, overwrite=True))
    os.link(x, tmp_path / "hard.tif")
    with pytest.raises(ConfigError, match="would replace"):
        mosaic(MosaicConfig([x, b], tmp_path / "hard.tif", overwrite=True))
    res = CliRunner().invoke(app, ["-q", "mosaic", str(vrt), str(b), "-o", str(x), "--overwrite"])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert x.read_bytes() == original and not leftovers(tmp_path)


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    a = make_raster(tmp_path / "a.tif", np.ones((20, 20), np.uint8), crs=UTM, nodata=255)
    b = make_raster(tmp_path / "b.tif", np.full((20, 20), 2, np.uint8), crs=UTM, nodata=255,
                    transform=Affine(10.0, 0.0, 300100.0, 0.0, -10.0, 5800000.0))
    return a, b


def _enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _gdal_enospc(*args: object, **kwargs: object) -> None:
    raise RasterioIOError("Read or write failed. _tiffWriteProc: No space left on device")


@pytest.mark.parametrize("fail", [_enospc, _gdal_enospc])
def test_disk_full_while_writing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail) -> None:
    a, b = _inputs(tmp_path)
    out = tmp_path / "m.tif"
    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", fail)
    with pytest.raises(DiskFullError) as info:
        mosaic(MosaicConfig([a, b], out))
    msg = str(info.value)
    assert msg.startswith(f"{out}: the disk is full") and " free " in msg and "needs up to" in msg
    assert "\n" not in msg
    assert not out.exists() and not leftovers(tmp_path)
    res = CliRunner().invoke(app, ["-q", "mosaic", str(a), str(b), "-o", str(out)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: the disk is full"), res.stderr


def test_disk_full_at_close_and_in_the_vrt_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _inputs(tmp_path)
    close = rasterio.io.DatasetWriter.close

    def close_then_fail(self: rasterio.io.DatasetWriter) -> None:
        close(self)
        raise RasterioIOError("Write failed. _tiffWriteProc: No space left on device")

    with monkeypatch.context() as m:
        m.setattr(rasterio.io.DatasetWriter, "close", close_then_fail)
        with pytest.raises(DiskFullError, match=r"m\.tif: the disk is full"):
            mosaic(MosaicConfig([a, b], tmp_path / "m.tif"))
    with monkeypatch.context() as m:
        m.setattr(Path, "write_bytes", _enospc)
        with pytest.raises(DiskFullError, match=r"m\.vrt: the disk is full .* free"):
            mosaic(MosaicConfig([a], tmp_path / "m.vrt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]


_FULL_DISK_SCRIPT = """
import sys
from geoclass.cli.app import main
sys.argv = ["geoclass", "-q", "mosaic", *sys.argv[1:]]
main()
"""


def test_a_real_full_disk(tmp_path: Path) -> None:
    """A 300 KB tmpfs in a private mount namespace; skipped where it cannot be mounted."""
    probe = subprocess.run(["unshare", "--mount", "--map-root-user", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot mount a private tmpfs here (unshare --mount --map-root-user failed)")
    noise = np.random.default_rng(0).integers(0, 255, (3, 600, 600), np.uint8)  # 1.1 MB, incompressible
    a = make_raster(tmp_path / "a.tif", noise, crs=UTM, nodata=0)
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "run.py"
    script.write_text(_FULL_DISK_SCRIPT)
    out = disk / "m.tif"
    cmd = (f"mount -t tmpfs -o size=300k tmpfs {disk} && {sys.executable} {script} {a} -o {out}; "
           f"rc=$?; ls -A {disk}; exit $rc")
    res = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", cmd],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 1, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {out}: the disk is full"), res.stderr
    assert "free" in errors[0] and "Traceback" not in res.stderr
    # nothing but geoclass's own lines: no "_tiffWriteProc: No space left on device." from libtiff
    assert all(line.startswith(("warning:", "error:")) for line in res.stderr.splitlines()), res.stderr
    assert res.stdout.strip() == ""  # nothing left on the full disk: no temporary file, no lock


def test_a_second_run_on_the_same_output_fails_at_once(tmp_path: Path) -> None:
    a, b = _inputs(tmp_path)
    out = tmp_path / "m.tif"
    with OutputLock(out):  # another run holds the output
        with pytest.raises(OutputBusyError, match=rf"{out}: another geoclass run \(process {os.getpid()}\)"):
            mosaic(MosaicConfig([a, b], out))
        res = CliRunner().invoke(app, ["-q", "mosaic", str(a), str(b), "-o", str(out)])
        assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "another geoclass run" in res.stderr
    assert not out.exists()
    mosaic(MosaicConfig([a, b], out))
    assert out.exists() and not leftovers(tmp_path)
