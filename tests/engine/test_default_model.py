"""The model shipped in the package and the README quickstart on the sample scene in examples/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from typer.testing import CliRunner

from geoclass.cli.app import app
from geoclass.models.model_file import default_model_path, read_model_meta

SAMPLE_SCENE = Path(__file__).resolve().parents[2] / "examples" / "t33uuu_rgb.tif"
EUROSAT_CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake"]


def test_default_model_ships_and_describes_itself() -> None:
    path = default_model_path()
    assert path.is_file()
    assert path.stat().st_size <= 10 * 1024 * 1024
    meta = read_model_meta(path)
    assert meta.classes == EUROSAT_CLASSES
    assert meta.in_chans == 3 and meta.chip_size == 64
    assert set(meta.radiometry) == {"uint16"}  # Sentinel-2 L1C reflectance -> EuroSAT 8-bit
    assert meta.metrics["val_accuracy"] >= 0.95


def test_readme_quickstart_maps_the_sample_scene(tmp_path: Path) -> None:
    out, preview = tmp_path / "map.tif", tmp_path / "map.png"
    result = CliRunner().invoke(app, ["-q", "predict", str(SAMPLE_SCENE), "-o", str(out), "--preview", str(preview)],
                                prog_name="geoclass")
    assert result.exit_code == 0, result.output
    assert preview.stat().st_size > 0
    with rasterio.open(SAMPLE_SCENE) as scene, rasterio.open(out) as classes:
        assert (classes.crs, classes.transform, classes.shape) == (scene.crs, scene.transform, scene.shape)
        names = json.loads(classes.tags()["GEOCLASS_CLASSES"])
        mapped = classes.read(1)
    water = np.isin(mapped, [names.index("River"), names.index("SeaLake")])
    # The lake chain in the middle of the scene (checked by eye on the preview) is water (the box
    # is about three quarters lake; a wooded peninsula reaches into it from the north shore) ...
    assert water[384:448, 832:960].mean() >= 0.7
    # ... and the dark winter conifer forest in the top-left corner is not.
    assert (mapped[0:64, 0:64] == names.index("Forest")).mean() >= 0.5
