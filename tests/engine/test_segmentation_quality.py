"""Segmenters: the U-Net, class weights over pixels, the Dice term, TTA inverses, fp16 copies, and
scoring whole images against colour masks (each pixel once)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from geoclass.cli.app import app
from geoclass.data.samples import SampleSet
from geoclass.engine.device import select_precision
from geoclass.engine.evaluate_masks import MaskEvalConfig, evaluate_masks
from geoclass.engine.predict.strategies import StrategyOptions, WindowStrategy
from geoclass.engine.train.config import TrainConfig
from geoclass.engine.train.data import class_weights
from geoclass.engine.train.losses import DiceCrossEntropy
from geoclass.errors import LabelError
from geoclass.models.model_file import ModelMeta, load_model_file, save_half_copy, save_model_file
from geoclass.models.registry import create_model
from geoclass.models.segmentation import SmallFCN
from tests.data.test_color_masks import COLORS, _color_file, _pair

IGNORE = 255


@pytest.mark.parametrize(("h", "w", "stem"), [(64, 64, 2), (45, 70, 2), (33, 50, 1), (45, 70, 4)])
def test_unet_keeps_any_input_size(h: int, w: int, stem: int) -> None:
    model = create_model("unet", 5, 4, chip_size=64, width=8, stem_stride=stem, blocks=2 if stem == 4 else 1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 4, h, w))
    assert out.shape == (2, 5, h, w)


def _meta(classes: list[str], chip: int = 32, arch: str = "fcn", **kwargs: object) -> ModelMeta:
    return ModelMeta(architecture=arch, task="segment", classes=classes, in_chans=3, chip_size=chip,
                     mean=[100.0] * 3, std=[50.0] * 3, arch_kwargs=dict(kwargs))


def test_segmenter_class_weights_come_from_pixel_counts() -> None:
    meta = _meta(["a", "b", "c"])
    info = {"pixel_counts": {"train": {"a": 9000, "b": 1000, "c": 0}}}
    weights = class_weights(TrainConfig(data="", model="fcn", out_dir=""), SampleSet(Path("."), [], ["a", "b", "c"],
                                                                                       "segment", info),
                            meta, torch.device("cpu"))
    assert weights is not None
    w = weights.tolist()
    assert w[2] == 0.0 and w[1] > w[0]
    assert w[1] / w[0] == pytest.approx(3.0)  # square root of the 9x frequency ratio


def test_dice_term_ignores_unlabelled_pixels_and_rewards_overlap() -> None:
    target = torch.tensor([[[0, 0, 1, IGNORE]]])
    good = torch.tensor([[[[9.0, 9.0, -9.0, 0.0]], [[-9.0, -9.0, 9.0, 0.0]]]])
    bad = -good
    loss = DiceCrossEntropy(None, 0.0, dice=1.0)
    assert float(loss(good, target)) < 0.01 < float(loss(bad, target))
    flipped_ignored = good.clone()
    flipped_ignored[..., 3] = torch.tensor([[50.0], [-50.0]])  # changes only the ignored pixel
    assert float(loss(flipped_ignored, target)) == pytest.approx(float(loss(good, target)))


def test_tta_turns_each_view_back_exact_for_a_pointwise_model() -> None:
    """A 1x1 convolution commutes with flips and rotations: TTA must give exactly its map."""
    torch.manual_seed(0)
    model = SmallFCN(4, 3, depth=0).eval()
    meta = _meta(["a", "b", "c", "d"], chip=24, depth=0)
    cpu = torch.device("cpu")
    options = StrategyOptions(cpu, select_precision(cpu, "off"), False, None)
    x = [np.random.default_rng(1).normal(size=(24, 24, 3)).astype(np.float32)]
    plain = WindowStrategy(model, meta, options)(x)
    tta = WindowStrategy(model, meta, StrategyOptions(cpu, options.precision, True, None))(x)
    np.testing.assert_allclose(tta, plain, atol=1e-6)


def test_half_copy_is_smaller_and_loads_into_fp32(tmp_path: Path) -> None:
    model = create_model("unet", 3, 3, chip_size=64, width=8)
    meta = _meta(["a", "b", "c"], chip=64, arch="unet", width=8)
    full = save_model_file(tmp_path / "m.safetensors", model, meta)
    half = save_half_copy(full, tmp_path / "h.safetensors")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, loaded_meta = load_model_file(half)
    assert loaded_meta.classes == ["a", "b", "c"]
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=0.05)


def _mask_model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("unet", len(COLORS), 3, chip_size=32, width=8)
    meta = _meta(list(COLORS), chip=32, arch="unet", width=8)
    return save_model_file(tmp_path / "unet.safetensors", model, meta)


def test_whole_images_are_scored_once_per_labelled_pixel(tmp_path: Path) -> None:
    ids = [_pair(tmp_path / "val", f"p{k}", 50 + 7 * k, 61, seed=k) for k in range(2)]
    labelled = sum(int((i < 3).sum()) for i in ids)  # grey (3) and black (4) are ignored
    result = evaluate_masks(MaskEvalConfig(folders=[str(tmp_path / "val")], label_colors=str(_color_file(tmp_path)),
                                           model=str(_mask_model(tmp_path)), device="cpu",
                                           report=str(tmp_path / "r.json"), plots=str(tmp_path / "plots")))
    assert result["pixels_scored"] == labelled  # every labelled pixel exactly once
    matrix = np.array(result["confusion_matrix"])
    assert matrix.sum(1).tolist() == [sum(int((i == k).sum()) for i in ids) for k in range(3)]
    assert 0.0 <= result["mean_iou"] <= 1.0 and len(result["per_image"]) == 2
    assert json.loads((tmp_path / "r.json").read_text())["pixels_scored"] == labelled
    assert (tmp_path / "plots" / "confusion_matrix.png").stat().st_size > 0


def test_chip_dataset_eval_counts_each_pixel_once(tmp_path: Path) -> None:
    """Edge chips of a grid are shifted inward and overlap their neighbours: eval (and training's
    validation) scores every labelled pixel of the scenes once, not the overlaps twice."""
    from geoclass.data.samples import load_samples
    from geoclass.data.tiling import TileConfig, tile
    from geoclass.engine.evaluate import EvalConfig, evaluate

    ids = [_pair(tmp_path / "data", f"p{k}", 50 + 7 * k, 61, seed=k) for k in range(2)]
    tile(TileConfig(scenes=[tmp_path / "data"], output=tmp_path / "chips", task="segment", size=32,
                    label_colors=_color_file(tmp_path), val_fraction=0.0, min_labelled=0.0))
    samples = load_samples(tmp_path / "chips").samples
    assert sum(32 * 32 for _ in samples) > sum(i.size for i in ids)  # the chips do overlap
    assert {s.counted_from for s in samples} == {(0, 0), (0, 3), (14, 0), (14, 3), (7, 0), (7, 3)}
    result = evaluate(EvalConfig(data=str(tmp_path / "chips"), model=str(_mask_model(tmp_path)), workers=0))
    matrix = np.array(result["confusion_matrix"])
    assert matrix.sum(1).tolist() == [sum(int((i == k).sum()) for i in ids) for k in range(3)]


def test_model_classes_missing_from_the_colour_map_are_one_line(tmp_path: Path) -> None:
    _pair(tmp_path / "val", "p", 40, 40, seed=0)
    wrong = tmp_path / "c.json"
    wrong.write_text(json.dumps({"Sea": "#E2A929", "Land": "#8429F6", "Road": "#6EC1E4"}))
    with pytest.raises(LabelError, match="names no colour for the model's classes Water"):
        evaluate_masks(MaskEvalConfig(folders=[str(tmp_path / "val")], label_colors=str(wrong),
                                      model=str(_mask_model(tmp_path)), device="cpu"))


def test_cli_eval_with_label_colors_and_list_models(tmp_path: Path) -> None:
    _pair(tmp_path / "val", "p", 40, 48, seed=0)
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "val"), "--label-colors", str(_color_file(tmp_path)),
                                      "-m", str(_mask_model(tmp_path)), "--device", "cpu", "--tta", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tta"] is True and report["images"] == 1
    listed = CliRunner().invoke(app, ["train", "--list-models"])
    assert listed.exit_code == 0
    line = next(line for line in listed.stdout.splitlines() if line.startswith("unet "))
    assert "segment" in line and " M " in line


@pytest.mark.parametrize("strength", ["light", "strong"])
def test_augmentation_and_random_crops_move_image_and_mask_together(strength: str) -> None:
    """The image's first band spells out the mask: after flips, rotations, warps and crops the two
    must still agree (exactly without warps; warps resample the image linearly, the mask nearest)."""
    from geoclass.data.chips import random_crops
    from geoclass.data.transforms import Augmenter

    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 4, (6, 6, 6))
    masks = np.kron(blocks, np.ones((1, 16, 16))).astype(np.uint8)  # (6, 96, 96), 16 px blocks
    images = np.repeat(masks[:, None].astype(np.float32) * 50.0, 3, axis=1)
    augment = Augmenter(strength, 255.0, radiometric=False)
    augment.seed(7)
    cropped, cropped_masks = random_crops(images, masks, 64, augment.rng)
    assert cropped.shape == (6, 3, 64, 64) and cropped_masks.shape == (6, 64, 64)
    assert (np.rint(cropped[:, 0] / 50.0) == cropped_masks).all()
    out, out_masks = augment(cropped, cropped_masks)
    assert out_masks is not None
    agree = np.rint(out[:, 0] / 50.0) == out_masks
    if strength == "light":
        assert agree.all()
    else:
        assert agree.mean() > 0.9  # only pixels next to a block edge may differ
    with pytest.raises(Exception, match="--crop 128 is larger than the chips"):
        random_crops(images, masks, 128, augment.rng)


def test_zoomed_crops_keep_image_and_mask_aligned() -> None:
    """--crop-scale: a crop covering twice the training size is shrunk by two (area mean for the
    image, nearest for the mask) and still agrees with its mask exactly on blocks of even size; a
    zoom-in of two enlarges 16 px blocks to 32 px; the drawn spans never exceed the chip."""
    from geoclass.data.chips import random_crops

    rng = np.random.default_rng(0)
    masks = np.kron(rng.integers(0, 4, (5, 8, 8)), np.ones((1, 16, 16))).astype(np.uint8)  # (5, 128, 128)
    images = np.repeat(masks[:, None].astype(np.float32) * 50.0, 3, axis=1)
    out, out_masks = random_crops(images, masks, 64, rng, (2.0, 2.0))  # span 128: the whole chip
    assert out.shape == (5, 3, 64, 64)
    assert np.array_equal(out_masks, masks[:, ::2, ::2])
    assert np.array_equal(np.rint(out[:, 0] / 50.0), out_masks)
    out, out_masks = random_crops(images, masks, 64, rng, (0.5, 0.5))  # span 32 from anywhere
    edges = np.count_nonzero(np.diff(out_masks.astype(int), axis=-1), axis=-1)
    assert edges.max() <= 2  # a 32 px window crosses at most two 16 px block edges, now 32 px apart
    assert (np.rint(out[:, 0] / 50.0) == out_masks).mean() > 0.95
    out, out_masks = random_crops(images, masks, 64, rng, (0.5, 8.0))  # spans capped at 128
    assert out.shape == (5, 3, 64, 64) and set(np.unique(out_masks)) <= set(range(4))


def test_segmentation_cutmix_pastes_one_box_into_images_and_masks() -> None:
    from geoclass.engine.train.schedule import cutmix

    np.random.seed(3)
    torch.manual_seed(3)
    masks = torch.arange(6).repeat_interleave(40 * 40).reshape(6, 40, 40)  # chip k is all class k
    images = masks[:, None].float().repeat(1, 3, 1, 1)
    mixed_images, mixed_masks, share = cutmix(images, masks)
    assert share == 1.0 and mixed_masks.shape == masks.shape
    assert torch.equal(mixed_images[:, 0].long(), mixed_masks)  # the same box moved in both
    assert (mixed_masks != masks).any()


def test_colour_masks_to_a_trained_unet_to_a_map(tmp_path: Path) -> None:
    """The recipe in miniature: tile pairs, train with crops + Dice + pixel weights, eval, predict."""
    import rasterio

    from geoclass.data.tiling import TileConfig, tile
    from geoclass.engine.predict import PredictConfig, predict
    from geoclass.engine.train import train

    for k in range(3):
        _pair(tmp_path / "data", f"p{k}", 64, 64, seed=k)
    colors = _color_file(tmp_path)
    tile(TileConfig(scenes=[tmp_path / "data"], output=tmp_path / "chips", task="segment", size=48,
                    stride=16, label_colors=colors, val_fraction=0.34, min_labelled=0.0))
    result = train(TrainConfig(data=str(tmp_path / "chips"), model="unet", out_dir=str(tmp_path / "run"),
                               epochs=2, batch_size=4, workers=0, lr=5e-3, warmup_epochs=0.0, crop=32,
                               dice=0.5, arch_kwargs={"width": 8}))
    assert "val_miou" in result.best_metrics
    report = evaluate_masks(MaskEvalConfig(folders=[str(tmp_path / "data")], label_colors=str(colors),
                                           model=str(result.model_path), device="cpu"))
    assert report["images"] == 3 and report["pixels_scored"] > 0
    out = tmp_path / "map.tif"
    predict(PredictConfig(scenes=str(tmp_path / "data" / "images" / "p0.png"), output=out,
                          model=str(result.model_path)))
    with rasterio.open(out) as m:
        assert m.crs is None and (m.width, m.height) == (64, 64)
        assert m.colormap(1)[0][:3] == COLORS["Water"]  # the masks' own colours


DUBAI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "segmentation" / "dubai-aerial"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dubai-segmentation"


@pytest.mark.skipif(not (DUBAI / "tile7").is_dir(), reason="needs ../shared/data/segmentation/dubai-aerial")
def test_shipped_dubai_model_reproduces_its_recorded_tile7_numbers(tmp_path: Path) -> None:
    """One image of tile 7 through the committed model gives the per-image mean IoU recorded in
    examples/dubai-segmentation/eval-tile7.json by the recipe."""
    recorded = json.loads((EXAMPLE / "eval-tile7.json").read_text())
    entry = next(e for e in recorded["per_image"] if e["image"].endswith("image_part_001.jpg"))
    (tmp_path / "one" / "images").mkdir(parents=True)
    (tmp_path / "one" / "masks").mkdir()
    (tmp_path / "one" / "images" / "image_part_001.jpg").symlink_to(DUBAI / "tile7" / "images" / "image_part_001.jpg")
    (tmp_path / "one" / "masks" / "image_part_001.png").symlink_to(DUBAI / "tile7" / "masks" / "image_part_001.png")
    result = evaluate_masks(MaskEvalConfig(folders=[str(tmp_path / "one")], label_colors=str(EXAMPLE / "colors.json"),
                                           model=str(EXAMPLE / "model.safetensors"), device="cpu"))
    assert result["pixels_scored"] == entry["pixels"]
    assert result["mean_iou"] == pytest.approx(entry["mean_iou"], abs=0.005)


@pytest.mark.parametrize("bad", ["2,1", "0,1", "1", "a,b"])
def test_crop_scale_out_of_range_is_one_line(tmp_path: Path, bad: str) -> None:
    result = CliRunner().invoke(app, ["train", str(tmp_path), "--model", "unet", "-o", str(tmp_path / "r"),
                                      "--crop-scale", bad])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "crop-scale" in result.output
