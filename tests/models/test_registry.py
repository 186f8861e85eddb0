"""The model registry and pretrained-weight handling."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from geoclass.errors import InputNotFoundError, ModelError
from geoclass.models.registry import architecture_task, create_model, list_models


@pytest.mark.parametrize("name", ["cnn", "cnn-wide", "compact", "hybrid", "resnet18"])
@pytest.mark.parametrize("in_chans", [3, 13])
def test_classifiers_give_one_score_per_class(name: str, in_chans: int) -> None:
    model = create_model(name, num_classes=7, in_chans=in_chans, chip_size=64).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, in_chans, 64, 64))
    assert out.shape == (2, 7)
    assert architecture_task(name) == "classify"


def test_hybrid_runs_on_other_chip_sizes() -> None:
    model = create_model("hybrid", num_classes=4, in_chans=3, chip_size=64).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 4)


def test_segmenters_keep_the_input_size() -> None:
    for name, size in (("fcn", 37), ("fpn", 64)):
        model = create_model(name, num_classes=5, in_chans=4, chip_size=size).eval()
        with torch.inference_mode():
            assert model(torch.randn(1, 4, size, size)).shape == (1, 5, size, size)
        assert architecture_task(name) == "segment"


def test_any_timm_model_by_prefix() -> None:
    model = create_model("timm:mobilenetv3_small_050", num_classes=3, in_chans=5)
    assert model(torch.randn(1, 5, 64, 64)).shape == (1, 3)


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(ModelError, match="did you mean hybrid"):
        create_model("hybird", num_classes=3)
    with pytest.raises(ModelError, match="unknown timm model"):
        create_model("timm:not_a_model_xyz", num_classes=3)
    assert "compact" in list_models()


def test_pretrained_without_network_fails_fast_and_points_to_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on a machine without network: the hub does not answer.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("geoclass.models.timm_models.hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelError, match="--weights"):
        create_model("resnet18", num_classes=3, pretrained=True)


def test_local_weights_are_adapted_to_bands_and_classes(tmp_path) -> None:
    source = create_model("resnet18", num_classes=1000, in_chans=3)
    weights = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    model = create_model("resnet18", num_classes=4, in_chans=6, weights=str(weights))
    assert model(torch.randn(1, 6, 64, 64)).shape == (1, 4)
    # Weights past the stem are the loaded ones, not a fresh initialisation.
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


def test_missing_weights_file_is_named(tmp_path) -> None:
    with pytest.raises(InputNotFoundError, match="nope.safetensors"):
        create_model("resnet18", num_classes=4, weights=str(tmp_path / "nope.safetensors"))
    with pytest.raises(ModelError, match="no published pretrained weights"):
        create_model("compact", num_classes=4, pretrained=True)


def test_local_weights_load_into_own_architectures(tmp_path) -> None:
    source = create_model("compact", 10, 3)
    path = tmp_path / "compact.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))

    same = create_model("compact", 10, 3, weights=str(path))
    for name, tensor in source.state_dict().items():
        assert torch.equal(same.state_dict()[name], tensor), name

    # Another class count: the body is loaded, the head keeps its own initialisation.
    other = create_model("compact", 2, 3, weights=str(path))
    loaded = [n for n, t in other.state_dict().items()
              if n in source.state_dict() and t.shape == source.state_dict()[n].shape
              and torch.equal(t, source.state_dict()[n])]
    assert len(loaded) >= len(source.state_dict()) - 4

    # Another band count: the first convolution is adapted, not dropped.
    multi = create_model("compact", 10, 13, weights=str(path))
    first = next(n for n, t in multi.state_dict().items() if t.ndim == 4)
    assert multi.state_dict()[first].shape[1] == 13
    assert not torch.equal(multi.state_dict()[first], create_model("compact", 10, 13).state_dict()[first])

    with pytest.raises(ModelError, match="weights of another architecture"):
        create_model("hybrid", 10, 3, weights=str(path))
    with pytest.raises(InputNotFoundError, match="not found"):
        create_model("compact", 10, 3, weights=str(tmp_path / "missing.safetensors"))


def test_unet_lite0_loads_efficientnet_weights_saved_under_other_names(tmp_path) -> None:
    """The efficientnet_pytorch package layout (``_conv_stem``, ``_blocks.N._depthwise_conv`` ...,
    then a classifier head) holds the same tensors in timm's order: they load by position, for any
    band count; a file whose shapes differ anywhere is not loaded by position."""
    import timm

    full = timm.create_model("efficientnet_lite0", pretrained=False)
    foreign = {f"_tensor{i}": v.clone() for i, v in enumerate(full.state_dict().values())}  # names of no model
    path = tmp_path / "efficientnet-lite0.pth"
    torch.save(foreign, path)
    model = create_model("unet-lite0", num_classes=5, in_chans=3, weights=str(path)).eval()
    assert torch.equal(model.encoder.blocks[3][0].conv_pw.weight, full.blocks[3][0].conv_pw.weight)
    assert torch.equal(model.encoder.bn1.running_var, full.bn1.running_var)
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 45, 70)).shape == (1, 5, 45, 70)
        assert model(torch.randn(1, 3, 12, 16)).shape == (1, 5, 12, 16)  # smaller than the pad
    four = create_model("unet-lite0", num_classes=2, in_chans=4, weights=str(path))
    assert four.encoder.conv_stem.weight.shape[1] == 4
    assert torch.equal(four.encoder.blocks[6][0].conv_pwl.weight, full.blocks[6][0].conv_pwl.weight)
    assert architecture_task("unet-lite0") == "segment"

    shuffled = dict(foreign)
    keys = list(shuffled)
    shuffled[keys[10]], shuffled[keys[20]] = shuffled[keys[20]], shuffled[keys[10]]
    torch.save(dict(zip(keys, shuffled.values())), path)
    with pytest.raises(ModelError, match="weights of another architecture"):
        create_model("unet-lite0", num_classes=5, in_chans=3, weights=str(path))
