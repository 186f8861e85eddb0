"""predict --strategy dense: the windows map where it must be, tiled == whole, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geoclass.engine.predict import strategies
from geoclass.engine.predict.dense import DenseStrategy
from geoclass.engine.predict.lattice import Lattice
from geoclass.errors import ConfigError, Interrupted
from geoclass.io.raster_writer import NODATA, partial_path
from geoclass.progress import ProgressEvent
from tests.conftest import make_raster
from tests.engine.test_predict import make_model, read, run, smooth_image, stop_after

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "t33uuu_rgb.tif"


@pytest.fixture(autouse=True)
def dense_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The strategy under test, registered as ``strategies.STRATEGIES`` will hold it."""
    monkeypatch.setitem(strategies.STRATEGIES, "dense", DenseStrategy)


@pytest.fixture
def cnn32(tmp_path: Path) -> Path:
    """Baseline CNN on 32 px chips: feature stride 8, so dense cells every 8 px."""
    return make_model(tmp_path / "cnn32.safetensors", "cnn", chip=32, seed=3)


def test_one_chip_scene_equals_windows(tmp_path: Path, cnn32: Path) -> None:
    src = make_raster(tmp_path / "chip.tif", smooth_image(3, 32, 32, seed=1))
    common: dict[str, Any] = {"probabilities": None, "confidence": True}
    windows = run(src, cnn32, tmp_path / "w.tif", strategy="windows", **common)
    dense = run(src, cnn32, tmp_path / "d.tif", strategy="dense", **common)  # window cropped
    assert (windows.strategy, dense.strategy) == ("windows", "dense")
    assert np.array_equal(read(tmp_path / "w.tif"), read(tmp_path / "d.tif"))
    conf_w, conf_d = read(tmp_path / "w.confidence.tif"), read(tmp_path / "d.confidence.tif")
    assert np.abs(conf_w.astype(int) - conf_d).max() <= 1  # float32 vs float64 blending


def _scene(tmp_path: Path, height: int = 320, width: int = 256) -> Path:
    img = smooth_image(3, height, width, seed=7)
    img[:, :48, :40] = 0  # a nodata corner
    return make_raster(tmp_path / "scene.tif", img, nodata=0)


@pytest.mark.parametrize(("height", "width"), [(320, 256), (317, 251), (203, 90)])
def test_tiled_equals_whole(tmp_path: Path, cnn32: Path, height: int, width: int) -> None:
    """Any scene extent, any window size: the same bytes as one window over the whole scene."""
    src = _scene(tmp_path, height, width)
    maps, probs = [], []
    for window, stride in ((360, None), (72, None), (96, None), (160, 64), (256, None)):
        out = tmp_path / f"d{window}.tif"
        res = run(
            src,
            cnn32,
            out,
            strategy="dense",
            window=window,
            stride=stride,
            probabilities=tmp_path / f"p{window}.tif",
        )
        assert res.window == window and res.stride % 8 == 0
        maps.append(read(out))
        probs.append(read(tmp_path / f"p{window}.tif"))
    assert len(np.unique(maps[0][maps[0] != NODATA])) > 2  # a map with structure, not one class
    for m, p in zip(maps[1:], probs[1:]):
        assert np.array_equal(maps[0], m)
        assert np.abs(probs[0].astype(int) - p).max() <= 1


@pytest.mark.parametrize("extent", [32, 33, 47, 100, 257, 1000, 1003])
@pytest.mark.parametrize(("size", "stride"), [(56, 8), (96, 48), (96, 16), (208, 160)])
def test_lattice_windows_own_every_cell_once_with_its_halo(
    extent: int, size: int, stride: int
) -> None:
    lattice = Lattice(chip=32, step=8, halo=8)
    offsets, bounds = lattice.windows(extent, size, stride)
    n, end = lattice.cells(extent), lattice.extent(extent)
    assert bounds[0] == 0 and bounds[-1] == n and len(bounds) == len(offsets) + 1
    assert all(a < b for a, b in zip(bounds, bounds[1:]))  # a partition, no window idle
    assert offsets == sorted(set(offsets)) and all(o % 8 == 0 for o in offsets)
    scored = size - 8
    for k, off in enumerate(offsets):
        first, last = bounds[k], bounds[k + 1] - 1
        assert off == 0 or off <= first * 8 - 8  # the first owned chip's left halo is inside
        right = last * 8 + 32 + 8
        assert off + scored >= min(right, end) and off + scored <= max(end, scored)
    assert offsets[-1] + size >= extent  # the last window reads the pixels past the lattice
    cells = lattice.pixel_cells(0, extent, extent)
    assert cells[0] == 0 and cells[-1] == n - 1 and (np.diff(cells) >= 0).all()


def test_nodata_stays_nodata_and_empty_windows_are_skipped(tmp_path: Path, cnn32: Path) -> None:
    img = smooth_image(3, 256, 256, seed=2)
    img[:, :128, :] = 0
    src = make_raster(tmp_path / "half.tif", img, nodata=0)
    events: list[ProgressEvent] = []
    res = run(src, cnn32, tmp_path / "m.tif", strategy="dense", window=96, progress=events.append)
    classes = read(tmp_path / "m.tif")[0]
    assert (classes[:128] == NODATA).all() and (classes[128:] != NODATA).all()
    assert res.windows_skipped > 0
    steps = sum(int(e.step) for e in events if e.kind == "advance" and e.task == "predict")
    assert steps == res.windows


def test_interrupted_dense_run_resumes_to_identical_bytes(tmp_path: Path, cnn32: Path) -> None:
    img = smooth_image(3, 608, 192, seed=5)
    img[:, 248:328, :] = 0  # nodata rows across a strip boundary
    src = make_raster(tmp_path / "tall.tif", img, nodata=0)
    opts: dict[str, Any] = {"strategy": "dense", "window": 96, "batch_size": 4, "confidence": True}
    clean = tmp_path / "clean" / "map.tif"
    n = run(src, cnn32, clean, probabilities=tmp_path / "clean" / "p.tif", **opts).windows
    out, probs = tmp_path / "resumed" / "map.tif", tmp_path / "resumed" / "p.tif"
    with pytest.raises(Interrupted, match="--resume"):
        run(
            src,
            cnn32,
            out,
            probabilities=probs,
            progress=stop_after(int(n * 0.7), KeyboardInterrupt),
            **opts,
        )
    sidecar = json.loads(partial_path(out, ".partial.json").read_text())
    assert 0 < sidecar["rows_done"] < 608
    res = run(src, cnn32, out, probabilities=probs, resume=True, **opts)
    assert res.resumed_from_row == sidecar["rows_done"]
    for name in ("map.tif", "p.tif", "map.confidence.tif"):
        assert (tmp_path / "clean" / name).read_bytes() == (
            tmp_path / "resumed" / name
        ).read_bytes(), name


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"overlap": 0.5}, "--overlap does not apply"),
        ({"window": 100}, "multiple of the output stride"),
        ({"window": 48}, "at least one chip"),
        ({"window": 96, "stride": 12}, "--stride 12"),
        ({"window": 96, "stride": 64}, "--stride 64"),
        ({"output_stride": 12}, "--output-stride 12"),
    ],
)
def test_dense_options_are_checked(
    tmp_path: Path, cnn32: Path, kw: dict[str, Any], match: str
) -> None:
    src = make_raster(tmp_path / "s.tif", smooth_image(3, 64, 64))
    with pytest.raises(ConfigError, match=match) as info:
        run(src, cnn32, tmp_path / "m.tif", strategy="dense", **kw)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not SAMPLE.is_file(), reason="examples/t33uuu_rgb.tif not in this checkout")
def test_shipped_model_dense_map_agrees_with_windows(tmp_path: Path) -> None:
    """The shipped model: dense (16 px cells) and windows (64 px chips every 32 px) mostly agree."""
    with rasterio.open(SAMPLE) as ds:
        img = ds.read(window=Window(256, 0, 768, 768))
        crs, transform = ds.crs, ds.window_transform(Window(256, 0, 768, 768))
    src = make_raster(tmp_path / "crop.tif", img, crs=str(crs), transform=transform)
    run(src, None, tmp_path / "w.tif", strategy="windows", batch_size=64)
    res = run(src, None, tmp_path / "d.tif", strategy="dense")
    agreement = float((read(tmp_path / "w.tif") == read(tmp_path / "d.tif")).mean())
    print(
        f"dense vs windows agreement: {agreement:.1%} "
        f"({res.window} px windows every {res.stride} px)"
    )
    assert agreement > 0.6


@pytest.mark.parametrize(
    ("height", "width"), [(20, 20), (32, 100), (257, 1000), (2304, 4608), (3256, 3256), (10980, 10980)]
)
def test_fitted_window_scores_fewer_pixels_than_the_largest(height: int, width: int) -> None:
    lattice = Lattice(chip=64, step=16, halo=48)
    largest = 1024 + lattice.overlap

    def scored(size: int) -> int:
        stride = size - lattice.overlap
        rows = lattice.windows(height, size, stride)[0]
        cols = lattice.windows(width, size, stride)[0]
        return len(rows) * len(cols) * lattice.scored(size) ** 2

    size = lattice.fit(height, width, largest)
    assert size % 16 == 0 and lattice.overlap + 16 <= size <= largest
    assert scored(size) <= scored(largest)
    if (height, width) == (2304, 4608):  # the bench's scene: 3 x 6 windows of 896 px, not 3 x 5
        assert (size, scored(size)) == (912, 18 * 896**2) and scored(largest) == 15 * 1168**2
