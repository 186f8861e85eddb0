"""Choosing how a model is run: --strategy auto|windows|dense|pixel and --output-stride."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from geoclass.cli.app import app
from geoclass.engine.device import Precision
from geoclass.engine.predict import PredictConfig, predict, strategies
from geoclass.engine.predict.strategies import (
    STRATEGIES,
    StrategyOptions,
    WindowStrategy,
    select_strategy,
)
from geoclass.errors import ConfigError, Interrupted
from geoclass.io.raster_writer import partial_path
from geoclass.models.model_file import default_model_path, load_model_file
from tests.conftest import make_raster
from tests.engine.test_predict import make_model, smooth_image, stop_after

CPU = torch.device("cpu")
OPTIONS = StrategyOptions(CPU, Precision(CPU, None, False))


class FakeDense(WindowStrategy):
    """Stands in for the dense strategy: windows under another name, keeping its scorer."""

    name = "dense"

    def __init__(self, model: Any, meta: Any, options: StrategyOptions) -> None:
        super().__init__(model, meta, options)
        self.scorer = options.scorer


@pytest.fixture
def cnn(tmp_path: Path) -> Path:
    return make_model(tmp_path / "cnn.safetensors", "cnn", chip=16)


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return make_raster(tmp_path / "scene.tif", smooth_image(3, 48, 40))


@pytest.fixture
def no_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry as it is until the dense strategy is registered."""
    monkeypatch.delitem(STRATEGIES, "dense", raising=False)


@pytest.fixture
def fake_dense(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A registered dense strategy; ``support["scorer"]`` is what the dense module answers."""
    support: dict[str, Any] = {"scorer": object(), "why": ""}
    monkeypatch.setitem(STRATEGIES, "dense", FakeDense)
    monkeypatch.setattr(
        strategies,
        "dense_scorer_for",
        lambda model, meta, stride: (support["scorer"], support["why"]),
    )
    return support


def one_line_error(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def _predict(scene: Path, model: Path, out: Path, **kw: Any) -> Any:
    progress = kw.pop("progress", None)
    config = PredictConfig(scenes=scene, output=out, model=model, workers=0, batch_size=8, **kw)
    return predict(config, progress)


# --- selection ----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["cnn", "compact", "fcn"])
def test_auto_is_windows_while_no_dense_strategy_is_registered(
    tmp_path: Path, arch: str, no_dense: None
) -> None:
    model, meta = load_model_file(make_model(tmp_path / "m.safetensors", arch, chip=32))
    strategy = select_strategy("auto", model, meta, OPTIONS, "m.safetensors")
    assert isinstance(strategy, WindowStrategy) and strategy.name == "windows"
    assert strategy.blending == ("pixel" if meta.task == "segment" else "chip")


def test_auto_is_windows_for_the_shipped_model(no_dense: None) -> None:
    if not default_model_path().exists():
        pytest.skip("the default model is not installed")
    model, meta = load_model_file(default_model_path())
    assert select_strategy("auto", model, meta, OPTIONS, "default").name == "windows"


def test_windows_always_works_even_where_dense_could_run(
    tmp_path: Path, fake_dense: dict[str, Any]
) -> None:
    model, meta = load_model_file(make_model(tmp_path / "m.safetensors", "cnn", chip=16))
    assert select_strategy("windows", model, meta, OPTIONS, "m").name == "windows"


def test_auto_and_dense_use_a_registered_dense_strategy_with_the_scorer(
    tmp_path: Path, fake_dense: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(strategies, "AUTO_PICKS_DENSE", True)  # the day auto picks dense
    model, meta = load_model_file(make_model(tmp_path / "m.safetensors", "cnn", chip=16))
    for name in ("auto", "dense"):
        strategy = select_strategy(name, model, meta, OPTIONS, "m")
        assert isinstance(strategy, FakeDense) and strategy.scorer is fake_dense["scorer"]


def test_auto_falls_back_to_windows_for_a_model_dense_rejects(
    tmp_path: Path, fake_dense: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(strategies, "AUTO_PICKS_DENSE", True)
    fake_dense.update(scorer=None, why="its head is not global pooling + a linear layer")
    model, meta = load_model_file(make_model(tmp_path / "m.safetensors", "cnn", chip=16))
    assert select_strategy("auto", model, meta, OPTIONS, "m").name == "windows"


def test_dense_on_a_model_that_cannot_run_densely_is_one_line(
    tmp_path: Path, fake_dense: dict[str, Any]
) -> None:
    fake_dense.update(scorer=None, why="Attention is not a layer known to be local")
    model, meta = load_model_file(make_model(tmp_path / "m.safetensors", "cnn", chip=16))
    with pytest.raises(ConfigError) as excinfo:
        select_strategy("dense", model, meta, OPTIONS, "/models/m.safetensors")
    text = one_line_error(excinfo)
    assert text.startswith(
        "/models/m.safetensors: a cnn chip classifier cannot run with --strategy dense"
    )
    assert "Attention is not a layer known to be local" in text and "--strategy windows" in text


def test_dense_without_a_dense_strategy_says_so(tmp_path: Path, no_dense: None) -> None:
    model, meta = load_model_file(make_model(tmp_path / "m.safetensors", "cnn", chip=16))
    with pytest.raises(ConfigError, match="m.safetensors: .*dense inference is not available"):
        select_strategy("dense", model, meta, OPTIONS, "m.safetensors")


@pytest.mark.parametrize("arch", ["cnn", "fcn"])
def test_pixel_is_one_line_naming_the_model(tmp_path: Path, arch: str) -> None:
    model, meta = load_model_file(make_model(tmp_path / "m.safetensors", arch, chip=16))
    with pytest.raises(ConfigError) as excinfo:
        select_strategy("pixel", model, meta, OPTIONS, "m.safetensors")
    text = one_line_error(excinfo)
    assert text.startswith("m.safetensors: --strategy pixel needs a per-pixel model")
    assert f"this is a {arch} " in text


def test_unknown_strategy_is_refused(tmp_path: Path) -> None:
    model, meta = load_model_file(make_model(tmp_path / "m.safetensors", "cnn", chip=16))
    with pytest.raises(
        ConfigError, match="strategy must be one of auto, windows, dense, pixel, got 'tiles'"
    ):
        select_strategy("tiles", model, meta, OPTIONS, "m")


@pytest.mark.parametrize("name", ["windows", "auto"])
def test_output_stride_with_windows_is_refused(tmp_path: Path, name: str, no_dense: None) -> None:
    model, meta = load_model_file(make_model(tmp_path / "m.safetensors", "cnn", chip=16))
    options = StrategyOptions(CPU, OPTIONS.precision, output_stride=4)
    with pytest.raises(ConfigError) as excinfo:
        select_strategy(name, model, meta, options, "m.safetensors")
    assert one_line_error(excinfo).startswith(
        "m.safetensors: --output-stride 4 applies only to --strategy dense"
    )


# --- through predict ------------------------------------------------------------------------------


def test_the_strategy_used_is_in_the_result(
    tmp_path: Path, scene: Path, cnn: Path, no_dense: None
) -> None:
    auto = _predict(scene, cnn, tmp_path / "auto.tif")
    windows = _predict(scene, cnn, tmp_path / "windows.tif", strategy="windows")
    assert auto.strategy == windows.strategy == "windows"
    assert (tmp_path / "auto.tif").read_bytes() == (tmp_path / "windows.tif").read_bytes()


def test_predict_refuses_bad_strategy_options_before_writing(
    tmp_path: Path, scene: Path, cnn: Path
) -> None:
    for kw in (
        {"strategy": "pixel"},
        {"strategy": "windows", "output_stride": 8},
        {"output_stride": 0},
    ):
        with pytest.raises(ConfigError):
            _predict(scene, cnn, tmp_path / "map.tif", **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.safetensors", "scene.tif"]


def test_resume_with_another_strategy_is_refused(
    tmp_path: Path, cnn: Path, fake_dense: dict[str, Any]
) -> None:
    tall = make_raster(tmp_path / "tall.tif", smooth_image(3, 600, 40))
    out = tmp_path / "map.tif"
    with pytest.raises(Interrupted):
        _predict(tall, cnn, out, strategy="windows", progress=stop_after(150, KeyboardInterrupt))
    fingerprint = json.loads(partial_path(out, ".partial.json").read_text())["fingerprint"]
    assert fingerprint["strategy"] == "windows" and fingerprint["output_stride"] is None
    with pytest.raises(
        ConfigError, match="cannot resume: the interrupted run used a different strategy "
    ):
        _predict(tall, cnn, out, strategy="dense", resume=True)
    assert _predict(tall, cnn, out, strategy="windows", resume=True).resumed_from_row > 0


# --- the command line -----------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["predict", *args], env={"NO_COLOR": "1", "COLUMNS": "200"})


def test_cli_help_explains_strategy_and_output_stride() -> None:
    result = _cli("--help")
    assert result.exit_code == 0
    model_panel = result.stdout.split("─ Model ─")[1].split("╰")[0]
    assert "--strategy" in model_panel and "--output-stride" in model_panel
    for word in ("windows", "dense", "pixel", "auto"):
        assert word in model_panel


def test_cli_strategy_options(tmp_path: Path, scene: Path, cnn: Path, no_dense: None) -> None:
    common = [str(scene), "-m", str(cnn), "-j", "0", "--device", "cpu"]
    ok = _cli(*common, "-o", str(tmp_path / "w.tif"), "--strategy", "windows", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["strategy"] == "windows"

    bad_name = _cli(*common, "-o", str(tmp_path / "x.tif"), "--strategy", "tiles")
    assert bad_name.exit_code == 2 and "tiles" in bad_name.stderr
    for extra, message in [
        (["--strategy", "pixel"], "--strategy pixel needs a per-pixel model"),
        (
            ["--strategy", "windows", "--output-stride", "8"],
            "--output-stride 8 applies only to --strategy dense",
        ),
        (["--output-stride", "8"], "--output-stride 8 applies only to --strategy dense"),
    ]:
        result = _cli(*common, "-o", str(tmp_path / "x.tif"), *extra)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "x.tif").exists()


@pytest.mark.parametrize("arch, picked", [("compact", "dense"), ("cnn", "dense"), ("fcn", "windows")])
def test_auto_picks_dense_where_the_model_runs_densely(
    tmp_path: Path, arch: str, picked: str
) -> None:
    model, meta = load_model_file(make_model(tmp_path / "m.safetensors", arch, chip=32))
    assert strategies.AUTO_PICKS_DENSE
    assert select_strategy("auto", model, meta, OPTIONS, "m").name == picked
    # --overlap is a windows option: auto honours it with windows
    assert select_strategy("auto", model, meta, OPTIONS, "m", overlap_given=True).name == "windows"


def test_auto_is_dense_for_the_shipped_model() -> None:
    if not default_model_path().exists():
        pytest.skip("the default model is not installed")
    model, meta = load_model_file(default_model_path())
    assert select_strategy("auto", model, meta, OPTIONS, "default").name == "dense"
