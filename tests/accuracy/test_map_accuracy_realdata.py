"""A real map (the shipped model on the sample Sentinel-2 crop) against the scene's reference polygons."""

from __future__ import annotations

import json
from pathlib import Path

import fiona
import pytest
from typer.testing import CliRunner

from geoclass.cli.app import app
from tests.conftest import SHARED_DATA, needs_shared_data

SAMPLE_SCENE = Path(__file__).resolve().parents[2] / "examples" / "t33uuu_rgb.tif"
REFERENCE = SHARED_DATA / "scenes" / "sentinel2-t33uuu" / "s2l1c_ref.gpkg"


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["-q", *args], prog_name="geoclass", env={"COLUMNS": "200", "NO_COLOR": "1"})
    return result.exit_code, result.stdout, result.stderr


@needs_shared_data
@pytest.mark.realdata
def test_real_map_against_reference_polygons_and_a_sample(tmp_path: Path) -> None:
    out = tmp_path / "map.tif"
    assert _run("predict", str(SAMPLE_SCENE), "-o", str(out))[0] == 0
    legend = tmp_path / "legend.json"  # the reference's cid: 1 water, 2 forest
    legend.write_text(json.dumps({"1": "River", "2": "Forest"}))
    code, _, err = _run("eval", str(out), "--reference", str(REFERENCE), "--label-field", "cid", "--class-map",
                        str(legend), "--report", str(tmp_path / "r.json"))
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["probability_sample"] is False and report["sample_size"] > 1000
    assert 0 <= report["overall_accuracy"]["estimate"] <= 1
    assert set(report["classes"]) >= {"River", "Forest"}
    assert report["mapped_area_ha"] == pytest.approx(1536 * 768 * 100 / 1e4)  # 10 m pixels, no nodata
    # the sampling side of the workflow on the same map
    code, _, err = _run("sample", str(out), "-n", "200", "-o", str(tmp_path / "s.gpkg"), "--seed", "3")
    assert code == 0, err
    with fiona.open(tmp_path / "s.gpkg") as points:
        assert len(points) == 200 and all(p["properties"]["reference"] == "" for p in points)
