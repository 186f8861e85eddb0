"""The per-pixel model: band names, features at window edges, the fast eval path."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from geoclass.models.pixel import PixelMLP, _box_mean, available_indices, common_band_name, feature_names

S2_NAMES = ["blue", "green", "red", "nir", "swir1"]


@pytest.mark.parametrize(
    ("name", "common"),
    [
        ("T33UUU_20170216T102101_B04.jp2", "red"),
        ("T33UUU_20170216T102101_B8A.jp2", "nir08"),
        ("B08", "nir"),
        ("NIR", "nir"),
        ("swir16", "swir1"),
        ("2018-10-13, Sentinel-2B L1C, B11.tiff", "swir1"),
        ("LC08_B4.TIF", None),  # Landsat numbers are ambiguous: not guessed
        ("band 1", None),
    ],
)
def test_band_names_are_recognised_where_unambiguous(name: str, common: str | None) -> None:
    assert common_band_name(name) == common


def test_indices_follow_the_bands_present() -> None:
    assert available_indices(["blue", "green", "red"]) == []
    assert available_indices(S2_NAMES) == ["ndvi", "ndwi", "mndwi", "ndbi"]
    assert feature_names(["red", "nir"], 2, ["ndvi"], 1) == [
        "red", "nir", "ndvi", "red_mean3", "nir_mean3", "red_std3", "nir_std3"]


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_box_mean_is_the_mean_of_the_pixels_inside(radius: int) -> None:
    x = torch.randn(2, 3, 19, 23)
    expected = F.avg_pool2d(x, 2 * radius + 1, 1, radius, count_include_pad=False)
    assert torch.allclose(_box_mean(x, radius), expected, atol=1e-5)


def _model(texture: int) -> PixelMLP:
    torch.manual_seed(0)
    model = PixelMLP(3, 5, S2_NAMES, ["ndvi", "ndwi", "mndwi", "ndbi"], texture, (16, 16))
    model.band_mean.copy_(torch.tensor([900.0, 800.0, 700.0, 2500.0, 1500.0]))
    model.band_std.copy_(torch.tensor([200.0, 180.0, 250.0, 600.0, 400.0]))
    with torch.no_grad():
        model.feature_mean.normal_()
        model.feature_std.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("texture", [0, 1, 2])
def test_eval_strips_equal_the_whole_window_computation(texture: int) -> None:
    model = _model(texture)
    x = torch.randn(2, 5, 150, 70)  # 150 rows: three strips, the last one short
    with torch.no_grad():
        reference = model.classify_features(model.features(x))
        fast = model(x)
    assert fast.shape == reference.shape == (2, 3, 150, 70)
    assert torch.allclose(fast, reference, atol=1e-4)


@pytest.mark.parametrize("texture", [1, 2])
def test_a_tile_with_the_radius_as_context_equals_the_whole_image(texture: int) -> None:
    model = _model(texture)
    x = torch.randn(1, 5, 90, 80)
    with torch.no_grad():
        whole = model(x)
        # The tile [30:60, 20:50] read with ``texture`` pixels of context on every side.
        r = texture
        tile = model(x[:, :, 30 - r : 60 + r, 20 - r : 50 + r])[:, :, r:-r, r:-r]
    assert torch.allclose(tile, whole[:, :, 30:60, 20:50], atol=1e-5)


def test_indices_of_a_nodata_fill_are_zero_not_nan() -> None:
    model = _model(0)
    raw = torch.zeros(1, 5, 4, 4)  # a zero fill: every normalised difference is 0 / 0
    x = (raw - model.band_mean[:, None, None]) / model.band_std[:, None, None]
    feats = model.features(x)
    assert torch.isfinite(feats).all() and (feats[:, 5:9] == 0).all()


def test_indices_need_their_bands() -> None:
    with pytest.raises(ValueError, match="ndvi needs bands nir and red"):
        PixelMLP(2, 3, ["blue", "green", "red"], ["ndvi"])
