"""timm backbones as classifiers, with offline-safe pretrained weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

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
        kwargs["pretrained"] = True
    return kwargs


def create_timm_classifier(name: str, num_classes: int, in_chans: int, chip_size: int = 64, pretrained: bool = False,
                           pretrained_file: str | None = None, **extra: Any) -> nn.Module:
    """Build a timm classifier, turning hub and weight-file failures into ModelError.

    Without network a hub download would retry for most of a minute; unless the user set
    ``HF_HUB_OFFLINE`` themselves we try once with a short timeout and then tell them to pass
    a local weights file.
    """
    import timm

    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ModelError(f"unknown timm model {name!r}{hint}")
    kwargs = timm_kwargs(name, chip_size, pretrained, pretrained_file)
    kwargs.update(extra)
    if pretrained and pretrained_file is None and not _offline_mode() and not hub_reachable():
        raise ModelError(
            f"cannot download pretrained weights for {name}: huggingface.co is not reachable; "
            "pass a local weights file with --weights FILE (set HF_HUB_OFFLINE=1 to use a local hub cache)"
        )
    try:
        return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if pretrained_file is not None:
            raise ModelError(f"{pretrained_file}: cannot load weights into {name}: {_first_line(exc)}") from exc
        if pretrained:
            raise ModelError(
                f"cannot download pretrained weights for {name} ({_first_line(exc)}); without network, "
                "pass a local weights file with --weights FILE (and set HF_HUB_OFFLINE=1)"
            ) from exc
        raise ModelError(f"cannot build timm model {name}: {_first_line(exc)}") from exc


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds.

    Without this check a download on a machine with no network retries for most of a minute.
    """
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
