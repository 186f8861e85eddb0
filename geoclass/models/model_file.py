"""The self-describing model file: safetensors weights with geoclass metadata in the header.

One ``.safetensors`` file holds the weights and, in its string metadata under the key
``geoclass``, a JSON document with everything eval and predict need: the architecture and its
arguments, the bands, how raw pixel values are scaled and normalised, the chip size, class names
and colours, metrics and where the training data came from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoclass import __version__
from geoclass.errors import BandError, InputNotFoundError, ModelError
from geoclass.io.outputs import atomic_output
from geoclass.palette import colors_for_classes

if TYPE_CHECKING:  # torch loads only when a model is built: tile and mosaic never pay for it
    import torch
    from torch import nn

FORMAT_VERSION = 1
METADATA_KEY = "geoclass"

@dataclass
class Radiometry:
    """Maps raw pixel values of one data type to the units the model was trained on.

    ``model_input = clip(raw * scale + offset, clip_min, clip_max)`` per band, then normalised
    with the model's mean and std. For EuroSAT-style models the trained units are 8-bit
    renderings; a uint16 Sentinel-2 L1C scene carries reflectance x 10000 and gets the mapping
    fitted from EuroSAT's multispectral chips.
    """

    scale: list[float]
    offset: list[float]
    clip_min: float | None = None
    clip_max: float | None = None
    source: str = ""

    def apply(self, array: np.ndarray) -> np.ndarray:
        out = array.astype(np.float32, copy=False)
        scale = np.asarray(self.scale, np.float32)[:, None, None]
        offset = np.asarray(self.offset, np.float32)[:, None, None]
        out = out * scale + offset
        if self.clip_min is not None or self.clip_max is not None:
            out = np.clip(out, self.clip_min, self.clip_max)
        return out


@dataclass
class ModelMeta:
    """Everything needed to use a trained model on new data."""

    architecture: str
    task: str
    classes: list[str]
    in_chans: int
    chip_size: int
    mean: list[float]
    std: list[float]
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    colors: list[list[int]] = field(default_factory=list)
    band_names: list[str] = field(default_factory=list)
    radiometry: dict[str, dict[str, Any]] = field(default_factory=dict)
    train_dtype: str = "uint8"
    groups: dict[str, list[str]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    geoclass_version: str = __version__
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not self.colors:
            self.colors = [list(c) for c in colors_for_classes(self.classes)]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def radiometry_for(self, dtype: str) -> Radiometry | None:
        """The raw-to-model mapping for a scene of ``dtype``; None means use values as they are."""
        entry = self.radiometry.get(str(dtype))
        return Radiometry(**entry) if entry else None

    def check_bands(self, count: int, where: str = "input") -> None:
        """Raise BandError unless ``count`` equals the model's band count."""
        if count != self.in_chans:
            names = ", ".join(self.band_names) or "as trained"
            raise BandError(f"{where}: the model expects {self.in_chans} bands ({names}), found {count}")

    def to_model_units(self, array: np.ndarray, dtype: str | None = None) -> np.ndarray:
        """Raw (bands, h, w) pixels, or a batch of them, -> float32 in the units the model was trained on."""
        self.check_bands(array.shape[-3])
        radiometry = self.radiometry_for(dtype or array.dtype.name)
        return radiometry.apply(array) if radiometry else array.astype(np.float32)

    def normalize(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Model units -> zero-mean, unit-variance input (per band); (bands, h, w) or a batch.

        ``out=values`` normalises a float32 array in place.
        """
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        out = np.subtract(values, mean, out=out, dtype=np.float32)
        return np.divide(out, std, out=out)

    def preprocess(self, array: np.ndarray, dtype: str | None = None) -> np.ndarray:
        """Raw (bands, h, w) pixels -> normalised float32 model input, exactly as in training.

        Raises:
            BandError: The band count differs from what the model was trained on.
        """
        return self.normalize(self.to_model_units(array, dtype))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def build_model(meta: ModelMeta) -> nn.Module:
    """Instantiate the (untrained) architecture a model file describes."""
    from geoclass.models.registry import create_model

    return create_model(meta.architecture, meta.num_classes, meta.in_chans, chip_size=meta.chip_size, **meta.arch_kwargs)


def save_model_file(path: str | Path, model: nn.Module, meta: ModelMeta) -> Path:
    """Write weights and metadata atomically (temp file in the target folder, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata={METADATA_KEY: meta.to_json()})
    return path


def read_model_meta(path: str | Path) -> ModelMeta:
    """Read only the metadata of a model file (cheap: the header)."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get(METADATA_KEY)
    except Exception as exc:  # safetensors raises its own error types for non-safetensors files
        raise ModelError(f"{path}: not a geoclass model file (expected .safetensors with geoclass metadata): {exc}") from exc
    if not text:
        raise ModelError(f"{path}: safetensors file without geoclass metadata; was it written by geoclass train?")
    try:
        return ModelMeta.from_json(text)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{path}: unreadable geoclass metadata: {exc}") from exc


def load_model_file(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelMeta]:
    """Load a model file: the built model in eval mode on ``device`` and its metadata."""
    from safetensors.torch import load_file

    path = _existing(path)
    meta = read_model_meta(path)
    model = build_model(meta)
    try:
        state = load_file(str(path), device="cpu")
        model.load_state_dict(state)
    except (RuntimeError, OSError) as exc:
        raise ModelError(f"{path}: weights do not fit architecture {meta.architecture}: {str(exc).splitlines()[0]}") from exc
    return model.to(device).eval(), meta


def default_model_path() -> Path:
    """The model shipped inside the package (trained on EuroSAT RGB)."""
    return Path(__file__).parent / "default" / "eurosat-rgb.safetensors"


def resolve_model_path(path: str | Path | None) -> Path:
    """``path``, the model file of a training run folder, or (None) the shipped default model.

    Raises:
        InputNotFoundError: A folder without ``model.safetensors``.
    """
    if path is None:
        return default_model_path()
    path = Path(path)
    if path.is_dir():
        inner = path / "model.safetensors"
        if not inner.is_file():
            raise InputNotFoundError(
                f"{path}: is a folder without model.safetensors "
                "(expected a model file or a training run folder)"
            )
        return inner
    return path


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: model file not found")
    return path


def save_half_copy(src: str | Path, dst: str | Path) -> Path:
    """Copy a model file with its float weights stored as fp16 (half the size).

    ``load_model_file`` loads them back into the fp32 model (the values are rounded to fp16 once;
    for a trained segmenter or classifier the change in its maps is a few pixels at most).
    """
    from safetensors.torch import load_file, save_file

    meta = read_model_meta(src)
    state = load_file(str(_existing(src)), device="cpu")
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(dst) as tmp:
        save_file(half, str(tmp), metadata={METADATA_KEY: meta.to_json()})
    return dst


def _main(argv: list[str]) -> int:
    """``python -m geoclass.models.model_file half SRC DST``: an fp16 copy of a model file."""
    if len(argv) != 3 or argv[0] != "half":
        print("usage: python -m geoclass.models.model_file half SRC.safetensors DST.safetensors")
        return 2
    try:
        save_half_copy(argv[1], argv[2])
    except ModelError as exc:
        print(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
