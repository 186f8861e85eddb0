"""Dense scoring: a chip classifier run fully convolutionally is the chip model where it must be."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geoclass.errors import ConfigError
from geoclass.models.dense import DenseScorer, dense_scorer, dense_support
from geoclass.models.model_file import ModelMeta
from geoclass.models.registry import architecture_task, create_model

SUPPORTED = ["cnn", "cnn-wide", "compact", "resnet18", "resnet50"]


def _model(
    name: str, in_chans: int = 3, chip: int = 64, classes: int = 6
) -> tuple[nn.Module, ModelMeta]:
    """Random weights, random batch-norm statistics (so they matter), eval mode."""
    torch.manual_seed(0)
    model = create_model(name, classes, in_chans, chip_size=chip).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    meta = ModelMeta(
        architecture=name,
        task=architecture_task(name),
        classes=[f"c{i}" for i in range(classes)],
        in_chans=in_chans,
        chip_size=chip,
        mean=[0.0] * in_chans,
        std=[1.0] * in_chans,
    )
    return model, meta


def _scorer(name: str, **kwargs: int) -> DenseScorer:
    model, meta = _model(name)
    scorer = dense_scorer(model, meta, **kwargs)
    assert scorer is not None
    return scorer


@pytest.mark.parametrize("name", SUPPORTED)
def test_one_chip_window_equals_the_chip_model(name: str) -> None:
    in_chans = 13 if name == "compact" else 3
    model, meta = _model(name, in_chans)
    assert dense_support(model, meta) is None
    scorer = dense_scorer(model, meta)
    assert scorer is not None
    x = torch.randn(3, in_chans, 64, 64)
    with torch.inference_mode():
        expected = torch.softmax(model(x), dim=1)
        got = scorer(x)
    assert got.shape == (3, 6, 1, 1)
    assert (got[:, :, 0, 0] - expected).abs().max().item() < 1e-5


def test_every_chip_position_of_a_chip_sized_crop() -> None:
    """A cell whose chip lies a halo away from the window edges has the same score in any window."""
    scorer = _scorer("compact")
    x = torch.randn(1, 3, 64 + 2 * scorer.halo + 32, 64 + 2 * scorer.halo)
    with torch.inference_mode():
        whole = scorer(x)
        for i, j in (
            (scorer.halo // 16, scorer.halo // 16),
            (scorer.halo // 16 + 2, scorer.halo // 16),
        ):
            r0, c0 = i * 16 - scorer.halo, j * 16 - scorer.halo
            crop = scorer(x[..., r0 : r0 + 64 + 2 * scorer.halo, c0 : c0 + 64 + 2 * scorer.halo])
            assert (
                crop[:, :, scorer.halo // 16, scorer.halo // 16] - whole[:, :, i, j]
            ).abs().max() < 1e-5


def test_coarser_output_stride_is_a_subgrid() -> None:
    fine, coarse = _scorer("compact"), _scorer("compact", output_stride=32)
    assert (fine.stride, fine.output_stride, coarse.output_stride) == (16, 16, 32)
    x = torch.randn(1, 3, 160, 224)
    with torch.inference_mode():
        a, b = fine(x), coarse(x)
    assert b.shape[-2:] == (coarse.cells(160), coarse.cells(224)) == (4, 6)
    assert (a[..., ::2, ::2] - b).abs().max() < 1e-5


def _tiled(scorer: DenseScorer, x: torch.Tensor, tile: int, halo: int) -> torch.Tensor:
    """Cells of ``x`` tile by tile: ``tile`` cells per axis, each window grown by ``halo``."""
    h, w = x.shape[-2:]
    rows, cols = scorer.cells(h), scorer.cells(w)
    step, chip = scorer.output_stride, scorer.chip_size
    out = torch.full((x.shape[0], scorer.head[-1].out_channels, rows, cols), float("nan"))
    for r0 in range(0, rows, tile):
        for c0 in range(0, cols, tile):
            r1, c1 = min(r0 + tile, rows), min(c0 + tile, cols)
            top, left = max(0, r0 * step - halo), max(0, c0 * step - halo)
            bottom, right = (
                min(h, (r1 - 1) * step + chip + halo),
                min(w, (c1 - 1) * step + chip + halo),
            )
            part = scorer(x[..., top:bottom, left:right])
            dr, dc = (r0 * step - top) // step, (c0 * step - left) // step
            out[..., r0:r1, c0:c1] = part[..., dr : dr + r1 - r0, dc : dc + c1 - c0]
    return out


@pytest.mark.parametrize(
    ("name", "size", "tiles"),
    [
        ("cnn", (150, 131), (1, 3)),
        ("cnn-wide", (170, 203), (1, 3)),
        ("compact", (200, 180), (2, 3)),
        ("resnet18", (340, 300), (4,)),
    ],
)
def test_tiled_equals_whole(name: str, size: tuple[int, int], tiles: tuple[int, ...]) -> None:
    scorer = _scorer(name)
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        whole = scorer(x)
        for tile in tiles:
            tiled = _tiled(scorer, x, tile, scorer.halo)
            assert not tiled.isnan().any()
            assert (tiled - whole).abs().max().item() < 1e-5


def test_tiles_without_the_halo_show_seams() -> None:
    """The tiling test can fail: without the halo, cells near the window edges change."""
    scorer = _scorer("compact")
    x = torch.randn(1, 3, 200, 180)
    with torch.inference_mode():
        assert (_tiled(scorer, x, 3, 0) - scorer(x)).abs().max().item() > 1e-3


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("efficientnet_b3", "SqueezeExcite"),
        ("hybrid", "attention"),
        ("fcn", "segment"),
        ("timm:vit_tiny_patch16_224", "attention"),
    ],
)
def test_unsupported_models_say_why(name: str, why: str) -> None:
    model, meta = _model(name)
    reason = dense_support(model, meta)
    assert reason is not None and why in reason and "\n" not in reason
    assert dense_scorer(model, meta) is None


def test_chip_size_off_the_feature_stride_is_unsupported() -> None:
    model, meta = _model("cnn", chip=60)
    assert "not a multiple of the feature stride" in (dense_support(model, meta) or "")


@pytest.mark.parametrize("stride", [0, 8, 24, 48, 128])
def test_output_stride_rules(stride: int) -> None:
    model, meta = _model("compact")
    with pytest.raises(ConfigError, match="multiple of the model's feature stride") as info:
        dense_scorer(model, meta, output_stride=stride)
    assert "\n" not in str(info.value)


def test_window_smaller_than_a_chip_is_refused() -> None:
    with pytest.raises(ConfigError, match="smaller than one chip"):
        _scorer("compact")(torch.randn(1, 3, 63, 200))
