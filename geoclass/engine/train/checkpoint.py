"""Training checkpoints (``RUN_DIR/checkpoints/last.ckpt``): saved with torch, read without running code.

A run folder may come from a colleague or a download, so its checkpoint is untrusted: it is read
with ``torch.load(weights_only=True)``, which unpickles only tensors and plain containers and
refuses any other Python object (the way a pickle runs code). Random-generator states are stored
as tensors and plain numbers for that reason.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoclass.errors import ModelError
from geoclass.io.outputs import atomic_output

__all__ = ["get_rng_state", "load_checkpoint", "read_partial", "save_checkpoint", "set_rng_state"]

REQUIRED_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "meta", "rng")


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (temp file beside ``path``, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    return path


def _legacy_numpy_globals() -> list[Any]:
    """numpy's array reconstruction, for checkpoints that stored numpy's RNG state as an array.

    These build arrays from bytes and call nothing else, so allowing them keeps loading inert.
    """
    from numpy.core.multiarray import _reconstruct  # type: ignore[attr-defined]

    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint without executing anything from the file.

    Raises:
        ModelError: The file is truncated or corrupt, holds Python objects other than tensors and
            plain values (refused: unpickling them could run code), or lacks what a checkpoint has.
    """
    path = Path(path)
    import warnings

    try:
        # numpy.core's rename, and torch's notes about the pickle protocol of foreign files
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.serialization.safe_globals(_legacy_numpy_globals()):
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        import pickle

        text = str(exc)
        if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text.lower():
            raise ModelError(
                f"{path}: refused: the checkpoint holds Python objects, not only tensors and plain "
                "values, and loading it could run code; expected a checkpoint written by geoclass train"
            ) from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise ModelError(f"{path}: unreadable checkpoint, truncated or corrupt ({first}); "
                         "start the run again with --overwrite") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
        raise ModelError(f"{path}: not a geoclass training checkpoint (missing {', '.join(missing)})")
    return state


def get_rng_state() -> dict[str, Any]:
    """The torch, numpy and Python random states, as tensors and plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``get_rng_state`` returned (also the numpy-array form of older checkpoints)."""
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    if isinstance(npy, dict):
        keys = npy["keys"].numpy() if isinstance(npy["keys"], torch.Tensor) else np.asarray(npy["keys"])
        np.random.set_state((npy["name"], keys.astype(np.uint32), npy["pos"], npy["has_gauss"],
                             npy["cached_gaussian"]))
    else:
        np.random.set_state(tuple(npy))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_partial(found: Any, epoch: int, steps: int) -> dict[str, Any] | None:
    """The within-epoch part of a checkpoint, checked against the run (ValueError if it does not fit)."""
    if found is None:
        return None
    part = {"epoch": int(found["epoch"]), "batches": int(found["batches"]),
            "batches_total": int(found["batches_total"]), "loss_sum": float(found["loss_sum"]),
            "seen": int(found["seen"]), "correct": int(found["correct"]), "seconds": float(found["seconds"])}
    if part["epoch"] != epoch or part["batches_total"] != steps or not 0 <= part["batches"] <= steps:
        raise ValueError(f"it holds {part['batches']} of {part['batches_total']} batches of epoch {part['epoch']}, "
                         f"the run continues at epoch {epoch} with {steps} batches per epoch")
    return part
