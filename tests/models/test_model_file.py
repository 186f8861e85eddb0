"""The self-describing model file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoclass.errors import BandError, InputNotFoundError, ModelError
from geoclass.models.model_file import ModelMeta, load_model_file, read_model_meta, save_model_file
from geoclass.models.registry import create_model


def _meta(**changes: object) -> ModelMeta:
    base = dict(architecture="cnn", task="classify", classes=["Forest", "SeaLake", "Residential"], in_chans=3,
                chip_size=32, mean=[100.0, 110.0, 120.0], std=[10.0, 20.0, 30.0], band_names=["red", "green", "blue"],
                radiometry={"uint16": {"scale": [0.1, 0.1, 0.1], "offset": [0.0, 1.0, 2.0], "clip_min": 0.0,
                                       "clip_max": 255.0}})
    base.update(changes)
    return ModelMeta(**base)  # type: ignore[arg-type]


def test_round_trip_keeps_weights_and_metadata(tmp_path) -> None:
    meta = _meta()
    model = create_model("cnn", 3, 3, chip_size=32)
    path = save_model_file(tmp_path / "m.safetensors", model, meta)
    loaded, loaded_meta = load_model_file(path)
    assert loaded_meta == meta
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), model.eval()(x))
    assert read_model_meta(path).classes == ["Forest", "SeaLake", "Residential"]
    # Conventional colours for names that say what they are.
    assert meta.colors[0] == [20, 110, 40] and meta.colors[1] == [0, 92, 230]


def test_preprocess_applies_radiometry_for_the_scene_dtype() -> None:
    meta = _meta()
    raw16 = np.full((3, 2, 2), 1000, np.uint16)
    out = meta.preprocess(raw16)
    np.testing.assert_allclose(out[:, 0, 0], [(100 - 100) / 10, (101 - 110) / 20, (102 - 120) / 30])
    raw8 = np.full((3, 2, 2), 100, np.uint8)
    np.testing.assert_allclose(meta.preprocess(raw8)[:, 0, 0], [0.0, -0.5, -20 / 30])
    saturated = meta.preprocess(np.full((3, 1, 1), 60000, np.uint16))
    np.testing.assert_allclose(saturated[:, 0, 0], [(255 - 100) / 10, (255 - 110) / 20, (255 - 120) / 30])
    with pytest.raises(BandError, match="expects 3 bands"):
        meta.preprocess(np.zeros((4, 2, 2), np.uint8))


def test_bad_model_files_are_named(tmp_path) -> None:
    with pytest.raises(InputNotFoundError, match="missing.safetensors"):
        load_model_file(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="junk.safetensors"):
        load_model_file(junk)
