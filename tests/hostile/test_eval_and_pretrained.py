"""Hostile inputs: --pretrained without network, and eval on data holding only some of the classes."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import geoclass.models.timm_models as timm_models
from geoclass.cli.app import app
from geoclass.errors import ModelError
from geoclass.models.registry import create_model
from tests.engine.test_train_eval import make_class_folders

# --- --pretrained without network ---------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No name resolves (as on a machine without network); returns the names asked for."""
    asked: list[str] = []

    def refuse(host: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(str(host))
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return asked


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to build a timm model with hub weights fails the test at once (no retries)."""
    import timm

    real = timm.create_model

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("pretrained") and "pretrained_cfg_overlay" not in kwargs:
            raise AssertionError("a hub download was attempted")
        return real(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", guarded)


@pytest.mark.parametrize("name", ["resnet18", "timm:mobilenetv3_small_050", "fpn"])
def test_pretrained_without_network_fails_at_once_pointing_to_weights(
    name: str, no_network: list[str], no_download: None
) -> None:
    with pytest.raises(ModelError) as caught:
        create_model(name, num_classes=3, pretrained=True)
    message = str(caught.value)
    assert "\n" not in message
    assert (name.removeprefix("timm:") if name != "fpn" else "resnet18") in message
    assert "--weights FILE" in message and "HF_HUB_OFFLINE=1" in message
    assert no_network, "the reachability probe never tried to resolve the hub"


def test_probe_gives_up_while_name_resolution_still_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()

    def hanging(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(10)  # bounded, so a broken probe cannot hang the suite
        returned.set()
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        assert timm_models.hub_reachable(timeout=0.3) is False
        # It gave up while resolution was still blocked: the timeout covers DNS too.
        assert entered.is_set() and not returned.is_set()
    finally:
        release.set()


def test_probe_counts_a_tls_failure_as_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    # Transparent proxies accept any TCP connection and then fail the TLS handshake: a bare TCP
    # connect said "reachable" there, and the download then retried for most of a minute.
    import huggingface_hub

    class FailingSession:
        def head(self, url: str, **kwargs: Any) -> Any:
            raise OSError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")

    monkeypatch.setattr(huggingface_hub, "get_session", lambda: FailingSession())
    assert timm_models.hub_reachable(timeout=2.0) is False

    class AnsweringSession:
        def __init__(self, status: int) -> None:
            self.status_code = status

        def head(self, url: str, **kwargs: Any) -> Any:
            return self  # stands in for the response too

    monkeypatch.setattr(huggingface_hub, "get_session", lambda: AnsweringSession(503))
    assert timm_models.hub_reachable(timeout=2.0) is False
    monkeypatch.setattr(huggingface_hub, "get_session", lambda: AnsweringSession(200))
    assert timm_models.hub_reachable(timeout=2.0) is True


class ProxyRefused(Exception):
    """Like httpx's ProxyError: not an OSError."""


@pytest.mark.parametrize("failure", [ProxyRefused("403 Forbidden"), OSError("Connection reset by peer")])
def test_a_failing_download_still_points_to_weights(monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    import timm

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(timm_models, "hub_reachable", lambda timeout=3.0: True)

    def download_fails(*args: Any, **kwargs: Any) -> Any:
        raise failure

    monkeypatch.setattr(timm, "create_model", download_fails)
    with pytest.raises(ModelError, match=r"resnet18 .*--weights FILE") as caught:
        create_model("resnet18", num_classes=3, pretrained=True)
    assert caught.value.__cause__ is failure


def test_offline_mode_skips_the_probe_and_names_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    def no_probe(timeout: float = 3.0) -> bool:
        raise AssertionError("probed the hub although HF_HUB_OFFLINE is set")

    def not_cached(*args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(timm_models, "hub_reachable", no_probe)
    monkeypatch.setattr(timm, "create_model", not_cached)
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set .*--weights FILE"):
        create_model("resnet18", num_classes=3, pretrained=True)


def test_cli_train_pretrained_without_network_is_one_error_line(
    tmp_path: Path, no_network: list[str], no_download: None
) -> None:
    data = make_class_folders(tmp_path / "data", per_class=3)
    result = CliRunner().invoke(app, ["train", str(data), "-m", "resnet18", "-o", str(tmp_path / "run"),
                                      "--pretrained", "--epochs", "1", "--workers", "0"], prog_name="geoclass")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "resnet18" in errors[0] and "--weights FILE" in errors[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "model.safetensors").exists()


# --- eval on data that holds only some of the model's classes -----------------------------------

MODEL_CLASSES = ["Forest", "Residential", "SeaLake"]  # make_class_folders' classes, in model order


def _constant_model(path: Path, predicts: str) -> Path:
    """A model file whose classifier ignores the image and always answers ``predicts``."""
    import torch
    from torch import nn

    from geoclass.models.model_file import ModelMeta, build_model, save_model_file

    meta = ModelMeta(architecture="cnn", task="classify", classes=list(MODEL_CLASSES), in_chans=3, chip_size=16,
                     mean=[100.0] * 3, std=[50.0] * 3)
    model = build_model(meta)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([10.0 if c == predicts else 0.0 for c in MODEL_CLASSES]))
    return save_model_file(path, model, meta)


def _folders_with(root: Path, keep: list[str]) -> Path:
    import shutil

    data = make_class_folders(root, per_class=4)
    for name in MODEL_CLASSES:
        if name not in keep:
            shutil.rmtree(data / name)
    return data


def _strict_json(text: str) -> dict[str, Any]:
    import json

    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_eval_on_one_present_class_averages_over_it_and_lists_the_absent(tmp_path: Path) -> None:
    import warnings

    from geoclass.engine.evaluate import EvalConfig, evaluate
    from geoclass.progress import ProgressEvent

    data = _folders_with(tmp_path / "data", keep=["Forest"])
    model = _constant_model(tmp_path / "forest.safetensors", predicts="Forest")
    events: list[ProgressEvent] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scikit-learn (or any other) warning may reach the user
        report = evaluate(EvalConfig(data=str(data), model=str(model), workers=0, report=str(tmp_path / "r.json"),
                                     plots=str(tmp_path / "plots")), progress=events.append)
    assert report["samples"] == 4
    assert report["accuracy"] == 1.0
    assert report["macro_f1"] == 1.0 and report["macro_precision"] == 1.0 and report["macro_recall"] == 1.0
    assert report["weighted_f1"] == 1.0
    assert report["macro_over"] == ["Forest"]
    assert report["classes_absent"] == ["Residential", "SeaLake"]
    assert report["per_class"]["Forest"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 4,
                                             "predicted": 4, "absent": False}
    for name in ("Residential", "SeaLake"):
        assert report["per_class"][name] == {"precision": None, "recall": None, "f1": None, "support": 0,
                                             "predicted": 0, "absent": True}
    # One class in reference and prediction: kappa and ROC-AUC are undefined, not NaN.
    assert report["cohen_kappa"] is None and report["roc_auc"] is None
    assert _strict_json((tmp_path / "r.json").read_text())["classes_absent"] == ["Residential", "SeaLake"]
    notes = [e.message for e in events if e.kind == "message" and "absent" in e.message]
    assert len(notes) == 1 and "Residential, SeaLake" in notes[0] and "1 of the model's 3 classes" in notes[0]


def test_eval_where_the_model_predicts_an_absent_class(tmp_path: Path) -> None:
    import warnings

    from geoclass.engine.evaluate import EvalConfig, evaluate

    data = _folders_with(tmp_path / "data", keep=["Forest", "Residential"])
    model = _constant_model(tmp_path / "sea.safetensors", predicts="SeaLake")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = evaluate(EvalConfig(data=str(data), model=str(model), workers=0))
    assert report["accuracy"] == 0.0 and report["macro_f1"] == 0.0
    assert report["macro_over"] == ["Forest", "Residential"] and report["classes_absent"] == ["SeaLake"]
    # The absent class was predicted 8 times, all wrong: precision 0, but no recall or F1.
    assert report["per_class"]["SeaLake"] == {"precision": 0.0, "recall": None, "f1": None, "support": 0,
                                              "predicted": 8, "absent": True}
    assert report["per_class"]["Forest"]["f1"] == 0.0 and report["per_class"]["Forest"]["support"] == 4
    assert report["cohen_kappa"] == 0.0
    assert report["roc_auc"] == 0.5  # constant scores rank nothing


def test_metrics_average_over_present_classes_without_warnings() -> None:
    import warnings

    import numpy as np

    from geoclass.engine.metrics import classification_summary, segmentation_summary

    truth = np.array([3, 3, 3, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Training validation keeps its keys; four right answers of one class out of ten is F1 1.
        assert classification_summary(truth, truth, 10) == {"accuracy": 1.0, "macro_f1": 1.0}
        assert classification_summary(truth, np.array([3, 3, 0, 0]), 10)["macro_f1"] == pytest.approx(2 / 3)
        masks = np.array([[0, 0, 255], [1, 1, 255]])
        seg = segmentation_summary(masks, np.array([[0, 0, 2], [1, 2, 2]]), 3, ignore_index=255)
    assert seg["iou"] == [1.0, 0.5, None] and seg["mean_iou"] == 0.75 and seg["absent_labels"] == [2]


def test_cli_eval_json_and_table_on_partial_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    data = _folders_with(tmp_path / "data", keep=["Forest"])
    model = _constant_model(tmp_path / "forest.safetensors", predicts="Forest")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    runner = CliRunner()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would become an error and a non-zero exit
        as_json = runner.invoke(app, ["eval", str(data), "-m", str(model), "--json", "--workers", "0"],
                                prog_name="geoclass")
        as_table = runner.invoke(app, ["eval", str(data), "-m", str(model), "--workers", "0"], prog_name="geoclass")
    assert as_json.exit_code == 0, as_json.output
    report = _strict_json(as_json.stdout)
    for key in ("samples", "accuracy", "macro_f1", "weighted_f1", "cohen_kappa", "per_class", "confusion_matrix",
                "classes", "roc_auc", "macro_over", "classes_absent", "model", "data", "seconds"):
        assert key in report, key
    assert report["macro_f1"] == 1.0 and report["classes_absent"] == ["Residential", "SeaLake"]
    assert "Warning" not in as_json.stderr
    assert as_table.exit_code == 0, as_table.output
    assert "macro F1 1.0000 (over 1 of 3 classes)" in as_table.stdout
    assert "kappa -" in as_table.stdout
    assert as_table.stdout.count("(absent)") == 2
