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
    dense = run(src, cnn32, tmp_path / "d.tif", strategy="dense", window=32, **common)
    assert (windows.strategy, dense.strategy) == ("windows", "dense")
    assert np.array_equal(read(tmp_path / "w.tif"), read(tmp_path / "d.tif"))
    conf_w, conf_d = read(tmp_path / "w.confidence.tif"), read(tmp_path / "d.confidence.tif")
    assert np.abs(conf_w.astype(int) - conf_d).max() <= 1  # float32 vs float64 blending


def _scene(tmp_path: Path, height: int = 320, width: int = 256) -> Path:
    img = smooth_image(3, height, width, seed=7)
    img[:, :48, :40] = 0  # a nodata corner
    return make_raster(tmp_path / "scene.tif", img, nodata=0)


def test_tiled_equals_whole(tmp_path: Path, cnn32: Path) -> None:
    """Extents that are multiples of the output stride: any window size gives the same bytes."""
    src = _scene(tmp_path)
    maps, probs = [], []
    for window in (96, 160, 256):  # no larger than the scene: a window past its edge is padded
        out = tmp_path / f"d{window}.tif"
        res = run(
            src,
            cnn32,
            out,
            strategy="dense",
            window=window,
            probabilities=tmp_path / f"p{window}.tif",
        )
        assert res.window == window and res.stride % 8 == 0
        maps.append(read(out))
        probs.append(read(tmp_path / f"p{window}.tif"))
    assert len(np.unique(maps[0][maps[0] != NODATA])) > 2  # a map with structure, not one class
    for m, p in zip(maps[1:], probs[1:]):
        assert np.array_equal(maps[0], m)
        assert np.abs(probs[0].astype(int) - p).max() <= 1


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
        ({"window": 16}, "at least one chip"),
        ({"window": 96, "stride": 12}, "--stride 12"),
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
