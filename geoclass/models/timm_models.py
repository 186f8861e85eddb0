"""timm backbones as classifiers, with offline-safe pretrained weights."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from torch import nn

from geoclass.errors import InputNotFoundError, ModelError

# Architectures whose timm constructor needs the input size (patch embeddings, attention windows).
_NEEDS_IMG_SIZE = ("vit", "swin", "deit", "beit", "eva", "maxvit", "coatnet")


def timm_kwargs(name: str, chip_size: int, pretrained: bool, pretrained_file: str | None) -> dict[str, Any]:
    """Keyword arguments for ``timm.create_model`` common to classifiers and backbones.

    Args:
        name: timm architecture name.
        chip_size: Input size; passed as ``img_size`` to architectures that need it.
        pretrained: Fetch weights from the hub (fails fast when offline).
        pretrained_file: Local ``.safetensors``/``.pth`` weights; works offline.

    Raises:
        InputNotFoundError: ``pretrained_file`` does not exist.
        ModelError: ``pretrained`` without a file while the hub does not answer (see
            :func:`require_hub`); raised here so that no download, with its retries, starts.
    """
    kwargs: dict[str, Any] = {}
    if any(name.startswith(prefix) for prefix in _NEEDS_IMG_SIZE):
        kwargs["img_size"] = chip_size
    if pretrained_file is not None:
        path = Path(pretrained_file)
        if not path.exists():
            raise InputNotFoundError(f"{path}: weights file not found")
        kwargs["pretrained"] = True
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    elif pretrained:
        require_hub(name)
        kwargs["pretrained"] = True
    return kwargs


def create_timm_classifier(name: str, num_classes: int, in_chans: int, chip_size: int = 64, pretrained: bool = False,
                           pretrained_file: str | None = None, **extra: Any) -> nn.Module:
    """Build a timm classifier, turning hub and weight-file failures into ModelError.

    Without network a hub download retries each file for most of a minute; unless the user set
    ``HF_HUB_OFFLINE`` themselves we check once, with a short timeout, that the hub answers and
    otherwise tell them to pass a local weights file.
    """
    import timm

    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ModelError(f"unknown timm model {name!r}{hint}")
    kwargs = timm_kwargs(name, chip_size, pretrained, pretrained_file)
    kwargs.update(extra)
    return build_timm(name, pretrained_file, num_classes=num_classes, in_chans=in_chans, **kwargs)


def build_timm(name: str, pretrained_file: str | None = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` with every failure a ModelError; a failed download names --weights.

    Args:
        name: timm architecture name.
        pretrained_file: The local weights file ``kwargs`` load, if any (for messages).
        **kwargs: For ``timm.create_model`` (``timm_kwargs`` output, ``num_classes``, ``features_only``...).
    """
    import timm

    pretrained = bool(kwargs.get("pretrained"))

    try:
        return timm.create_model(name, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if pretrained_file is not None:
            raise ModelError(f"{pretrained_file}: cannot load weights into {name}: {_first_line(exc)}") from exc
        if pretrained:
            raise _download_error(name, exc) from exc
        raise ModelError(f"cannot build timm model {name}: {_first_line(exc)}") from exc
    except Exception as exc:
        # The hub client's own errors (a proxy refusing, say) are not OSError; a download that
        # fails in any way must still point to --weights.
        if pretrained and pretrained_file is None:
            raise _download_error(name, exc) from exc
        raise


def require_hub(name: str, timeout: float = 3.0) -> None:
    """Fail fast, naming ``--weights``, when pretrained weights for ``name`` cannot be downloaded.

    Skipped when ``HF_HUB_OFFLINE`` is set: then huggingface_hub reads its local cache only and
    fails at once when the weights are not there.

    Args:
        name: timm architecture name, for the message.
        timeout: Seconds the whole reachability check may take.

    Raises:
        ModelError: The hub did not answer within ``timeout`` seconds.
    """
    if _offline_mode() or hub_reachable(timeout):
        return
    raise ModelError(
        f"cannot download pretrained weights for {name}: {urlsplit(_hub_endpoint()).netloc or 'the hub'} "
        f"did not answer within {timeout:g} s; pass a local weights file with --weights FILE (.safetensors "
        "or .pth), or set HF_HUB_OFFLINE=1 to use weights already in the local Hugging Face cache"
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers one HTTPS request within ``timeout`` seconds, all told.

    One HEAD request to the hub endpoint (``HF_ENDPOINT``) through huggingface_hub's own HTTP
    session, so proxies and certificates are those of the download, and without retries. A TCP
    connection alone proves nothing: transparent proxies and firewalls accept it and then fail the
    TLS handshake, and the download retries that for most of a minute. The request runs in a
    daemon thread because name resolution ignores socket timeouts and can block for long; a probe
    still blocked after ``timeout`` is abandoned and counts as unreachable.

    Args:
        timeout: Seconds for resolution, connection, TLS and the answer together.
    """
    answers: list[bool] = []
    probe = threading.Thread(target=lambda: answers.append(_hub_answers(_hub_endpoint(), timeout)),
                             name="geoclass-hub-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(answers) and answers[0]


def _hub_answers(url: str, timeout: float) -> bool:
    """One HEAD request to ``url``; True for any answer but a server error."""
    try:
        from huggingface_hub import get_session

        response = get_session().head(url, timeout=timeout)
    except Exception:  # noqa: BLE001 - any failure (DNS, TLS, proxy, timeout) means "not reachable"
        return False
    return response.status_code < 500


def _hub_endpoint() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.ENDPOINT)
    except (ImportError, AttributeError):
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _download_error(name: str, exc: BaseException) -> ModelError:
    if _offline_mode():
        where = "HF_HUB_OFFLINE is set and they are not in the local Hugging Face cache"
        hint = "pass a local weights file with --weights FILE (.safetensors or .pth)"
    else:
        where = _first_line(exc)
        hint = ("pass a local weights file with --weights FILE (.safetensors or .pth), or set HF_HUB_OFFLINE=1 "
                "to use the local Hugging Face cache")
    return ModelError(f"cannot download pretrained weights for {name} ({where}); {hint}")


def _offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
