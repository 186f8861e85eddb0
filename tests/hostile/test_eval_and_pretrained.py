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
