"""Colour-coded masks: colour maps in three layouts, decoding, ignore, bad masks, image/mask folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from geoclass.cli.app import app
from geoclass.data.tiling import TileConfig, tile
from geoclass.errors import DatasetError, InputNotFoundError, LabelError
from geoclass.io.color_map import IGNORE, color_map_from, read_color_map
from tests.conftest import make_raster

COLORS = {"Water": (226, 169, 41), "Land": (132, 41, 246), "Road": (110, 193, 228)}
UNLABELLED = (155, 155, 155)


def _write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def _color_file(tmp_path: Path) -> Path:
    spec = {name: "#{:02X}{:02X}{:02X}".format(*c) for name, c in COLORS.items()}
    return _write_json(tmp_path / "colors.json", {**spec, "ignore": ["#9B9B9B", "#000000"]})


def _mask(ids: np.ndarray) -> np.ndarray:
    """(3, H, W) RGB mask of class ids (3 = unlabelled grey, 4 = black)."""
    table = np.array([*COLORS.values(), UNLABELLED, (0, 0, 0)], np.uint8)
    return np.moveaxis(table[ids], -1, 0)


def _pair(folder: Path, stem: str, h: int, w: int, seed: int) -> np.ndarray:
    """A plain (not georeferenced) image and its colour mask; returns the class ids."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((h, w), np.int64)
    ids[:, w // 3:] = 1
    ids[h // 2:, 2 * w // 3:] = 2
    ids[:4, :4] = 3
    ids[-2:, -2:] = 4
    image = (rng.random((3, h, w)) * 40 + np.array([20, 120, 200, 90, 90])[ids][None, :, :].repeat(3, 0)).astype(np.uint8)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    make_raster(folder / "images" / f"{stem}.png", image, crs=None, driver="PNG")
    make_raster(folder / "masks" / f"{stem}.png", _mask(ids), crs=None, driver="PNG")
    return ids


def test_the_three_colour_map_layouts(tmp_path: Path) -> None:
    cmap = read_color_map(_color_file(tmp_path))
    assert cmap.classes == list(COLORS) and cmap.colors == list(COLORS.values())
    classes_json = _write_json(tmp_path / "classes.json", {"classes": [
        {"title": "Water", "color": "#E2A929"}, {"title": "Land", "color": "#8429F6"},
        {"title": "Unlabeled", "color": "#9B9B9B"}]})
    from_tool = read_color_map(classes_json)
    assert from_tool.classes == ["Water", "Land"] and from_tool.lookup[UNLABELLED] == IGNORE
    qgis = tmp_path / "qgis.txt"
    qgis.write_text("# QGIS Generated Color Map Export File\nINTERPOLATION:EXACT\n"
                    "2,132,41,246,255,Land\n1,226,169,41,255,Water\n9,155,155,155,255,Unlabelled\n")
    from_qgis = read_color_map(qgis)
    assert from_qgis.classes == ["Water", "Land"]  # in value order
    assert from_qgis.lookup[UNLABELLED] == IGNORE


def test_decode_maps_colours_to_ids_and_ignored_to_255() -> None:
    cmap = color_map_from({"Water": "#E2A929", "Land": ["#8429F6", "#8429F7"], "ignore": "#000000"})
    rgb = np.array([[[226, 132, 132, 0]], [[169, 41, 41, 0]], [[41, 246, 247, 0]]], np.uint8)
    assert cmap.decode(rgb, "m.png").tolist() == [[0, 1, 1, IGNORE]]


def test_unknown_colours_are_listed_with_pixel_counts() -> None:
    cmap = color_map_from({"Water": "#50E3C2"})
    rgb = np.zeros((3, 4, 5), np.uint8)
    rgb[:, :, :1] = np.array([80, 227, 194])[:, None, None]
    rgb[0, 1:, 1:] = 226
    with pytest.raises(LabelError) as err:
        cmap.decode(rgb, "m.png")
    msg = str(err.value)
    assert msg.startswith("m.png: colours not in colour map: #E20000 (12 px), #000000 (4 px)")
    assert "the map has Water #50E3C2" in msg and "\n" not in msg


def test_bad_colour_maps_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="colour map file not found"):
        read_color_map(tmp_path / "none.json")
    with pytest.raises(LabelError, match="expected a colour as"):
        read_color_map(_write_json(tmp_path / "a.json", {"Water": "blue"}))
    with pytest.raises(LabelError, match="is given to both Water and Land"):
        read_color_map(_write_json(tmp_path / "b.json", {"Water": "#000001", "Land": "#000001"}))
    with pytest.raises(LabelError, match="names no class"):
        read_color_map(_write_json(tmp_path / "c.json", {"ignore": "#000001"}))


def test_tile_folders_of_pairs_decodes_masks_and_holds_out_whole_images(tmp_path: Path) -> None:
    truth = {}
    for t in (1, 2):
        for k in range(3):
            truth[(t, k)] = _pair(tmp_path / "data" / f"tile{t}", f"part_{k}", 70, 90, seed=t * 10 + k)
    res = tile(TileConfig(scenes=[tmp_path / "data" / "tile1", tmp_path / "data" / "tile2"],
                          output=tmp_path / "chips", task="segment", size=32,
                          label_colors=_color_file(tmp_path), val_fraction=0.34, min_labelled=0.0))
    assert res.classes == list(COLORS)
    info = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    assert info["colors"] == [list(c) for c in COLORS.values()]
    assert info["split"]["method"] == "whole-images" and info["crs"] is None
    with (tmp_path / "chips" / "chips.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    by_image: dict[str, set[str]] = {}
    for r in rows:
        by_image.setdefault(r["path"].split("/")[1], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_image.values())  # an image is all train or all val
    assert sum("val" in s for s in by_image.values()) == 2  # 0.34 of 6 images
    # A chip's mask holds the decoded ids, 255 for grey and black.
    r = next(r for r in rows if r["row"] == "0" and r["col"] == "0" and "tile1/images/part_0" not in r["path"]
             and r["path"].startswith("pairs/001-"))
    with rasterio.open(tmp_path / "chips" / r["mask"]) as m:
        ids = m.read(1)
    expected = truth[(1, 0)][:32, :32].copy()
    expected[expected >= 3] = IGNORE
    assert ids.tolist() == expected.tolist()
    assert sum(res.pixel_counts["train"].values()) + sum(res.pixel_counts["val"].values()) > 0


def test_bad_pairs_are_one_line_each(tmp_path: Path) -> None:
    colors = _color_file(tmp_path)
    _pair(tmp_path / "a", "x", 40, 40, seed=1)
    make_raster(tmp_path / "a" / "images" / "y.png", np.zeros((3, 40, 40), np.uint8), crs=None, driver="PNG")
    with pytest.raises(DatasetError, match=r"y.png: no mask with stem 'y'"):
        tile(TileConfig(scenes=[tmp_path / "a"], output=tmp_path / "o1", task="segment", size=16,
                        label_colors=colors))
    _pair(tmp_path / "b", "x", 40, 40, seed=1)
    make_raster(tmp_path / "b" / "masks" / "x.png", _mask(np.zeros((40, 44), np.int64)), crs=None,
                driver="PNG")
    with pytest.raises(LabelError, match=r"masks/x.png: mask is 44x40 px, its image .*images/x.png is 40x40 px"):
        tile(TileConfig(scenes=[tmp_path / "b"], output=tmp_path / "o2", task="segment", size=16,
                        label_colors=colors))
    _pair(tmp_path / "c", "x", 40, 40, seed=1)
    wrong = _write_json(tmp_path / "wrong.json", {"Water": "#50E3C2", "Land": "#F5A623"})
    with pytest.raises(LabelError, match=r"colours not in .*wrong.json: #8429F6 \("):
        tile(TileConfig(scenes=[tmp_path / "c"], output=tmp_path / "o3", task="segment", size=16,
                        label_colors=wrong))
    for out in ("o1", "o2", "o3"):
        assert not (tmp_path / out / "chips.csv").exists()


def test_cli_tile_with_label_colors(tmp_path: Path) -> None:
    _pair(tmp_path / "d", "x", 64, 64, seed=2)
    _pair(tmp_path / "d", "y", 64, 64, seed=3)
    result = CliRunner().invoke(app, ["tile", str(tmp_path / "d"), "--task", "segment", "--size", "32",
                                      "--label-colors", str(_color_file(tmp_path)),
                                      "-o", str(tmp_path / "chips")])
    assert result.exit_code == 0, result.output
    assert "% of train px" in result.output
    assert (tmp_path / "chips" / "chips.csv").is_file()
