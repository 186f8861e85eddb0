"""Device and mixed-precision choices shared by train, eval and predict."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from geoclass.errors import ConfigError


@dataclass(frozen=True)
class Precision:
    """The autocast settings chosen for a device."""

    device: torch.device
    dtype: torch.dtype | None  # None: full fp32
    use_scaler: bool

    @property
    def label(self) -> str:
        return "fp32" if self.dtype is None else str(self.dtype).removeprefix("torch.")

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def select_device(choice: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA GPU is available (use --device cpu or auto)")
    if choice not in ("cpu", "cuda") and not choice.startswith("cuda:"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {choice!r}")
    return torch.device(choice)


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX, where bf16 autocast is faster than fp32."""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        return False
    return "AMX" in capability.upper()


def select_precision(device: torch.device, amp: str = "auto") -> Precision:
    """Mixed precision by device: fp16 + GradScaler or bf16 on CUDA; on a CPU only where bf16 is native.

    On CPUs without native bf16, bf16 autocast is many times slower than fp32, so ``auto`` keeps
    fp32 there; ``on`` forces bf16 anyway.
    """
    if amp not in ("auto", "on", "off"):
        raise ConfigError(f"--amp must be auto, on or off, got {amp!r}")
    if amp == "off":
        return Precision(device, None, False)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(device, torch.bfloat16, False)
        return Precision(device, torch.float16, True)
    if amp == "on" or cpu_has_native_bf16():
        return Precision(device, torch.bfloat16, False)
    return Precision(device, None, False)


@contextlib.contextmanager
def inference_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the duration."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        yield
    model.train(was_training)
