"""``tile --sample labels``: chips centred on sparse labels, masks 255 where unlabelled."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely.geometry as sg

from geoclass.data.tiling import TileConfig, tile
from geoclass.errors import ConfigError
from tests.conftest import UTM_TRANSFORM, make_raster
from tests.io.test_labels import write_vector

X0, Y0 = UTM_TRANSFORM.c, UTM_TRANSFORM.f


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "chips.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return make_raster(tmp_path / "scene.tif", np.full((3, 100, 120), 50, np.uint16))


def test_a_chip_centred_on_every_point_with_one_labelled_pixel(tmp_path: Path, scene: Path) -> None:
    # Pixel centres (row, col); the last point sits at the scene's corner: its chip is shifted in.
    where = [(20, 30), (50, 60), (80, 100), (99, 119)]
    points = [(sg.Point(X0 + 10 * c + 5, Y0 - 10 * r - 5), {"cls": "ab"[i % 2]}) for i, (r, c) in enumerate(where)]
    labels = write_vector(tmp_path / "p.gpkg", points, geometry="Point")
    out = tmp_path / "chips"
    result = tile(TileConfig(scenes=scene, output=out, labels=labels, label_field="cls", task="segment",
                             size=16, sample="labels", min_labelled=0.0, val_fraction=0.0))
    assert result.windows == 4 and result.chips == 4
    offsets = sorted((int(r["row"]), int(r["col"])) for r in _rows(out))
    assert offsets == [(12, 22), (42, 52), (72, 92), (84, 104)]
    for row in _rows(out):
        with rasterio.open(out / row["mask"]) as ds:
            mask = ds.read(1)
        assert (mask != 255).sum() == 1  # the point's pixel only


def test_polygons_give_several_chips_inside_each(tmp_path: Path, scene: Path) -> None:
    polygons = [(sg.box(X0 + 100, Y0 - 900, X0 + 500, Y0 - 100), {"cls": "a"}),
                (sg.box(X0 + 700, Y0 - 900, X0 + 1100, Y0 - 500), {"cls": "b"})]
    labels = write_vector(tmp_path / "p.gpkg", polygons)
    out = tmp_path / "chips"
    result = tile(TileConfig(scenes=scene, output=out, labels=labels, label_field="cls", task="segment",
                             size=16, sample="labels", per_feature=5, min_labelled=0.0, seed=1))
    assert 6 <= result.windows <= 10 and result.chips == result.windows
    for row in _rows(out):
        r, c = int(row["row"]) + 8, int(row["col"]) + 8  # chip centres lie inside their polygon
        assert (10 <= c < 50 and 10 <= r < 90) or (70 <= c < 110 and 50 <= r < 90)
    again = tile(TileConfig(scenes=scene, output=tmp_path / "again", labels=labels, label_field="cls",
                            task="segment", size=16, sample="labels", per_feature=5, min_labelled=0.0, seed=1))
    assert again.windows == result.windows  # seeded


def test_sampling_needs_vector_labels(tmp_path: Path, scene: Path) -> None:
    raster = make_raster(tmp_path / "classes.tif", np.ones((100, 120), np.uint8))
    with pytest.raises(ConfigError, match="class raster: tile it on the grid"):
        tile(TileConfig(scenes=scene, output=tmp_path / "o", labels=raster, task="segment", size=16,
                        sample="labels"))
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="needs --labels"):
        tile(TileConfig(scenes=scene, output=tmp_path / "o", size=16, sample="labels"))
