"""Local weight files for geoclass's own architectures (``--weights FILE`` for cnn, compact, hybrid ...).

Tensors are matched by name; the first convolution is adapted when the band count differs and
layers whose shape still differs (the classifier head for another class count) keep their fresh
initialisation, as timm does for its pretrained weights.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from geoclass.errors import InputNotFoundError, ModelError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a ``.safetensors`` file (geoclass model files included) or a torch ``.pth``/``.pt``.

    Raises:
        InputNotFoundError: The file does not exist.
        ModelError: The file holds no readable tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: weights file not found")
    unreadable = f"{path}: cannot read weights (expected .safetensors or a torch state dict)"
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):  # torch names the refused global; without one the file is just unreadable
            raise ModelError(f"{unreadable}: not a readable torch file") from exc
        raise ModelError(f"{path}: holds Python objects besides tensors (expected a plain state dict); "
                         "not loaded, since unpickling them could run code") from exc
    except Exception as exc:  # safetensors and torch raise their own error types
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelError(f"{unreadable}: {type(exc).__name__} {detail}".rstrip()) from exc
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: no tensors found (expected a state dict)")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_local_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Copy the tensors of ``path`` into ``model`` where names match; returns the names left at init.

    A file of the same architecture saved under other names (the efficientnet_pytorch package's
    ``_conv_stem``/``_blocks`` layout of an EfficientNet, say) is matched by position instead: only
    when its tensors, in order, have exactly the model's shapes (the file may go on with a
    classifier head the model lacks).

    Raises:
        ModelError: Less than half of the model's tensors are in the file (another architecture).
    """
    from timm.models import adapt_input_conv

    source = read_state_dict(path)
    target = model.state_dict()
    if not set(source) & set(target):
        source = _by_position(source, target)
    first_conv = next((name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)), None)
    loaded: dict[str, torch.Tensor] = {}
    for name, tensor in target.items():
        value = source.get(name)
        if value is None:
            continue
        if value.shape != tensor.shape and first_conv is not None and name == f"{first_conv}.weight" \
                and value.ndim == 4 and value.shape[0] == tensor.shape[0]:
            value = adapt_input_conv(tensor.shape[1], value.float()).to(tensor.dtype)
        if value.shape == tensor.shape:
            loaded[name] = value
    weight_names = [n for n in target if not n.endswith(("num_batches_tracked",))]
    fitting = sum(n in loaded for n in weight_names)
    # A head for another class count is expected to differ; most of the body must fit.
    if fitting < 0.5 * len(weight_names):
        raise ModelError(f"{path}: only {fitting} of the {len(weight_names)} tensors of {type(model).__name__} "
                         "match the file (weights of another architecture?)")
    model.load_state_dict(loaded, strict=False)
    return [n for n in weight_names if n not in loaded]


def _by_position(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``source`` renamed to ``target``'s names by position, if its first tensors have the target's shapes.

    The first convolution may differ in its input bands (adapted later); every other shape must
    agree, so a file of another architecture is left as it was (and then fails to fit by name).
    """
    values = list(source.values())
    if len(values) < len(target) or len(target) < 20:
        return source
    for i, (tensor, value) in enumerate(zip(target.values(), values)):
        same = value.shape == tensor.shape or (i == 0 and value.ndim == 4 and value.shape[0] == tensor.shape[0])
        if not same:
            return source
    return dict(zip(target, values))
