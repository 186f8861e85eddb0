"""Map accuracy and class areas (issue 14): the stratified estimators of Olofsson et al. (2014),
reference data read against a map, the report, and ``geoclass eval MAP --reference``.

The worked example of the paper (section 5, Tables 8-9) is built from its numbers: strata of
200,000 / 150,000 / 3,200,000 / 6,450,000 pixels of 30 m x 30 m (map classes 1 Deforestation,
2 Forest gain, 3 Stable forest, 4 Stable non-forest) and the error matrix of 640 sample points.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fiona
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.warp import transform as warp_transform
from typer.testing import CliRunner

from geoclass.accuracy.assess import MapAccuracyConfig, assess_map
from geoclass.accuracy.estimators import stratified_estimates
from geoclass.accuracy.reference import MapClasses, match_labels
from geoclass.cli.app import app
from geoclass.errors import ConfigError, LabelError, RasterOpenError
from geoclass.io.class_map import write_class_metadata
from tests.conftest import UTM_CRS, make_raster

PAPER_NAMES = ["Deforestation", "Forest gain", "Stable forest", "Stable non-forest"]
PAPER_MATRIX = [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]]
PAPER_PIXELS = [200_000, 150_000, 3_200_000, 6_450_000]
PIXEL_HA = 0.09  # 30 m x 30 m

# The published figures (Olofsson et al. 2014, section 5): area in ha +- 95% CI half-width.
PAPER_AREA_HA = [(21_158, 6_158), (11_686, 3_756), (285_770, 15_510), (581_386, 16_282)]


# --- helpers ----------------------------------------------------------------------------------


def write_vector(path: Path, features: Sequence[tuple[Any, dict[str, Any]]], crs: str | None = UTM_CRS,
                 geometry: str = "Point", driver: str = "GPKG") -> Path:
    """Write (shapely geometry, properties) pairs; geometries in ``crs``."""
    props: dict[str, str] = {}
    for _, p in features:
        for k, v in p.items():
            props.setdefault(k, "int" if isinstance(v, int) else "float" if isinstance(v, float) else "str")
    with fiona.open(path, "w", driver=driver, schema={"geometry": geometry, "properties": props},
                    **({"crs": crs} if crs else {})) as dst:
        for geom, p in features:
            dst.write(fiona.Feature(geometry=fiona.Geometry.from_dict(shapely.geometry.mapping(geom)),
                                    properties={k: p.get(k) for k in props}))
    return path


def write_class_map(path: Path, array: np.ndarray, names: Sequence[str] | None = None, **kwargs: Any) -> Path:
    """A class map (uint8, nodata 255 unless given) with geoclass class names."""
    kwargs.setdefault("nodata", 255)
    make_raster(path, array, **kwargs)
    if names is not None:
        with rasterio.open(path, "r+") as ds:
            write_class_metadata(ds, names, [(i * 40 % 256, 100, 200) for i in range(len(names))])
    return path


def centre(transform: Affine, row: int, col: int) -> shapely.Point:
    x, y = transform * (col + 0.5, row + 0.5)
    return shapely.Point(x, y)


# Paper map: 10,000 pixels of 1000 m x 900 m, each standing for 1000 of the paper's 30 m pixels,
# so the strata have the paper's areas (in ha) and proportions.
PAPER_TRANSFORM = Affine(1000.0, 0.0, 300_000.0, 0.0, -900.0, 5_800_000.0)


def paper_map(tmp_path: Path) -> Path:
    flat = np.repeat(np.arange(4, dtype=np.uint8), [p // 1000 for p in PAPER_PIXELS])
    return write_class_map(tmp_path / "paper_map.tif", flat.reshape(100, 100), PAPER_NAMES,
                           transform=PAPER_TRANSFORM)


def paper_points(tmp_path: Path, name: str = "paper_points.gpkg", field: str = "reference",
                 crs: str = UTM_CRS) -> Path:
    """640 points, one per pixel, whose (map class, reference label) pairs give the paper's matrix."""
    start = np.cumsum([0] + [p // 1000 for p in PAPER_PIXELS])
    features = []
    for i, row in enumerate(PAPER_MATRIX):
        pixel = int(start[i])
        for j, n in enumerate(row):
            for _ in range(n):
                point = centre(PAPER_TRANSFORM, pixel // 100, pixel % 100)
                if crs != UTM_CRS:
                    xs, ys = warp_transform(UTM_CRS, crs, [point.x], [point.y])
                    point = shapely.Point(xs[0], ys[0])
                features.append((point, {field: PAPER_NAMES[j]}))
                pixel += 1
    return write_vector(tmp_path / name, features, crs=crs)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, args: list[str]) -> Any:
    return runner.invoke(app, args, prog_name="geoclass")


def error_line(result: Any) -> str:
    """The single ``error:`` line of a failed run (and nothing else on stderr)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert lines[-1] == errors[0], result.stderr
    return errors[0]


# --- the paper's worked example ---------------------------------------------------------------


def test_paper_example_estimators_give_the_published_figures() -> None:
    areas_ha = np.array(PAPER_PIXELS) * PIXEL_HA
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = stratified_estimates(PAPER_MATRIX, areas_ha, PAPER_NAMES)
    assert est.weights == pytest.approx([0.02, 0.015, 0.32, 0.645])
    # Areas in ha with 95% CI half-widths, as published (rounded to the hectare).
    for (area, ci), got in zip(PAPER_AREA_HA, est.area, strict=True):
        assert round(got.estimate) == area
        assert round(got.ci95) == ci
    # Deforestation: user's 0.88, producer's 0.75 +- 0.21; overall 0.95 +- 0.02.
    assert est.users_accuracy[0].estimate == pytest.approx(0.88)
    assert round(est.producers_accuracy[0].estimate, 2) == 0.75
    assert round(est.producers_accuracy[0].ci95, 2) == 0.21
    assert round(est.overall_accuracy.estimate, 2) == 0.95
    assert round(est.overall_accuracy.ci95, 2) == 0.02
    # The rest of the paper's accuracy table, to its two decimals.
    assert [round(e.estimate, 2) for e in est.users_accuracy] == [0.88, 0.73, 0.93, 0.96]
    assert [round(e.ci95, 2) for e in est.users_accuracy] == [0.07, 0.10, 0.04, 0.02]
    assert [round(e.estimate, 2) for e in est.producers_accuracy] == [0.75, 0.85, 0.93, 0.96]
    assert [round(e.ci95, 2) for e in est.producers_accuracy] == [0.21, 0.25, 0.03, 0.02]
    # The error matrix in area proportions (the paper's Table 9, four decimals).
    assert np.round(est.proportions, 4).tolist() == [
        [0.0176, 0.0, 0.0013, 0.0011],
        [0.0, 0.0110, 0.0016, 0.0024],
        [0.0019, 0.0, 0.2967, 0.0213],
        [0.0040, 0.0020, 0.0179, 0.6212],
    ]
    assert [round(e.estimate, 4) for e in est.area_proportion] == [0.0235, 0.0130, 0.3175, 0.6460]
    # Deforestation's area proportion has SE 0.0035 (eq. 10); its area is A * p.1 (eq. 11).
    assert round(est.area_proportion[0].se, 4) == 0.0035
    assert est.area[0].estimate == pytest.approx(areas_ha.sum() * est.area_proportion[0].estimate)
    assert est.notes == [] and est.warnings == []


def test_paper_example_from_the_command_line(tmp_path: Path, runner: CliRunner) -> None:
    map_path, points = paper_map(tmp_path), paper_points(tmp_path)
    report, plots = tmp_path / "out" / "r.json", tmp_path / "plots"
    result = invoke(runner, ["eval", str(map_path), "--reference", str(points), "--label-field", "reference",
                             "--report", str(report), "--plots", str(plots), "--json"])
    assert result.exit_code == 0, result.stderr
    assert "warning" not in result.stderr  # labels matched by name, every stratum sampled
    printed = json.loads(result.stdout)
    written = json.loads(report.read_text())
    assert written["classes"] == printed["classes"]
    assert printed["sample_size"] == 640
    assert printed["probability_sample"] is True
    assert printed["error_matrix"]["counts"] == PAPER_MATRIX
    assert printed["error_matrix"]["classes"] == PAPER_NAMES
    for name, (area, ci) in zip(PAPER_NAMES, PAPER_AREA_HA, strict=True):
        row = printed["classes"][name]
        assert round(row["area_ha"]["estimate"]) == area
        assert round(row["area_ha"]["ci95"]) == ci
        assert row["area_m2"]["estimate"] == pytest.approx(row["area_ha"]["estimate"] * 10_000)
    deforestation = printed["classes"]["Deforestation"]
    assert deforestation["mapped_area_ha"] == pytest.approx(18_000)
    assert deforestation["mapped_area_m2"] == pytest.approx(180_000_000)
    assert deforestation["users_accuracy"]["estimate"] == pytest.approx(0.88)
    assert round(deforestation["producers_accuracy"]["estimate"], 2) == 0.75
    assert round(deforestation["producers_accuracy"]["ci95"], 2) == 0.21
    assert round(printed["overall_accuracy"]["estimate"], 2) == 0.95
    assert round(printed["overall_accuracy"]["ci95"], 2) == 0.02
    assert set(printed["overall_accuracy"]) == {"estimate", "se", "ci95"}
    assert np.round(printed["error_matrix"]["area_proportions"], 4)[0].tolist() == [0.0176, 0.0, 0.0013, 0.0011]
    for png in printed["plots"]:
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in plots.iterdir()) == ["class_areas.png", "error_matrix.png"]
    assert sorted(p.name for p in report.parent.iterdir()) == ["r.json"]  # no temporary left

    table = invoke(runner, ["eval", str(map_path), "--reference", str(points), "--label-field", "reference"])
    assert table.exit_code == 0, table.stderr
    assert "21,158 ± 6,158" in table.stdout
    assert "0.880 ± 0.074" in table.stdout
    assert "overall accuracy 0.947 ± 0.018" in table.stdout


def test_points_in_another_crs_are_reprojected(tmp_path: Path) -> None:
    map_path = paper_map(tmp_path)
    points = paper_points(tmp_path, "wgs84.geojson", crs="EPSG:4326")
    out = assess_map(MapAccuracyConfig(str(map_path), str(points), label_field="reference"))
    assert out["error_matrix"]["counts"] == PAPER_MATRIX


# --- estimators: strata with 0 or 1 sample points -----------------------------------------------


def test_stratum_without_samples_is_left_out_with_a_note() -> None:
    counts = [[8, 2, 0], [1, 9, 0], [0, 0, 0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = stratified_estimates(counts, [60.0, 30.0, 10.0], ["a", "b", "c"])
    assert est.unsampled == [2]
    assert est.domain_area == 90.0
    assert est.weights.tolist() == pytest.approx([60 / 90, 30 / 90, 0.0])
    assert est.users_accuracy[2].estimate is None
    assert est.area[2].estimate is None and est.producers_accuracy[2].estimate is None
    assert est.area[0].estimate + est.area[1].estimate == pytest.approx(90.0)
    assert any("c" in n and "no sample point" in n for n in est.warnings)
    # The sampled strata are estimated as on their own: OA = sum W_i U_i.
    assert est.overall_accuracy.estimate == pytest.approx(60 / 90 * 0.8 + 30 / 90 * 0.9)


def test_stratum_with_one_sample_has_no_variance_and_no_warning() -> None:
    counts = [[8, 2], [0, 1]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = stratified_estimates(counts, [50.0, 50.0])
    assert est.single == [1]
    assert est.users_accuracy[1].estimate == 1.0 and est.users_accuracy[1].se is None
    assert est.users_accuracy[0].se == pytest.approx(np.sqrt(0.8 * 0.2 / 9))
    assert est.overall_accuracy.estimate == pytest.approx(0.5 * 0.8 + 0.5 * 1.0)
    assert est.overall_accuracy.se is None and est.overall_accuracy.ci95 is None
    assert all(e.se is None for e in est.area)
    assert any("single sample point" in n for n in est.warnings)


def test_two_class_hand_computed() -> None:
    # W = (0.6, 0.4); p11 = 0.48, p21 = 0.04; p.1 = 0.52; S(p.1)^2 = 0.36*0.8*0.2/9 + 0.16*0.1*0.9/9
    est = stratified_estimates([[8, 2], [1, 9]], [60.0, 40.0])
    assert est.overall_accuracy.estimate == pytest.approx(0.84)
    assert est.area_proportion[0].estimate == pytest.approx(0.52)
    assert est.area_proportion[0].se == pytest.approx(np.sqrt(0.008))
    assert est.area[0].ci95 == pytest.approx(1.96 * 100 * np.sqrt(0.008))
    assert est.producers_accuracy[0].estimate == pytest.approx(0.48 / 0.52)


def test_shapes_must_fit() -> None:
    with pytest.raises(ValueError, match="square"):
        stratified_estimates([[1, 2, 3]], [1.0])
    with pytest.raises(ValueError, match="stratum areas"):
        stratified_estimates([[1, 0], [0, 1]], [1.0])


# --- class matching ---------------------------------------------------------------------------


def test_labels_match_by_name_value_or_class_map() -> None:
    classes = MapClasses([0, 1, 2], {0: "Forest", 1: "Water", 2: "Crop"})
    assert match_labels({"forest": 3, "Water": 1, 2: 4, "2": 1}, classes) == {
        "forest": 0, "Water": 1, 2: 2, "2": 2}
    mapped = match_labels({10: 5, 20: 2, 30: 1}, classes, {"10": "Forest", "20": 2, "30": None})
    assert mapped == {10: 0, 20: 2, 30: None}
    with pytest.raises(LabelError) as err:
        match_labels({"urban": 12, "Forest": 3, "cloud": 1}, classes, source="ref.gpkg")
    message = str(err.value)
    assert "'urban' (12 samples), 'cloud' (1 samples)" in message
    assert "Forest (0), Water (1), Crop (2)" in message and "\n" not in message
    with pytest.raises(LabelError, match="not keys of m.json"):
        match_labels({10: 5, 40: 1}, classes, {"10": "Forest"}, class_map_name="m.json")
    with pytest.raises(ConfigError, match="'Urban' .*is not a class of the map"):
        match_labels({10: 5}, classes, {"10": "Urban"})


def test_numeric_labels_through_a_class_map_file(tmp_path: Path, runner: CliRunner) -> None:
    arr = np.zeros((20, 20), np.uint8)
    arr[:, 10:] = 1
    map_path = write_class_map(tmp_path / "m.tif", arr, ["Forest", "Water"])
    t = rasterio.open(map_path).transform
    feats = [(centre(t, r, 2), {"cid": 7}) for r in range(5)] + [(centre(t, r, 15), {"cid": 9}) for r in range(4)]
    feats += [(centre(t, 0, 15), {"cid": 7}), (centre(t, 19, 19), {"cid": 99})]
    points = write_vector(tmp_path / "p.shp", feats, driver="ESRI Shapefile")
    class_map = tmp_path / "legend.json"
    class_map.write_text(json.dumps({"7": "Forest", "9": 1, "99": None}))
    result = invoke(runner, ["eval", str(map_path), "--reference", str(points), "--class-map", str(class_map),
                             "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["error_matrix"]["counts"] == [[5, 0], [1, 4]]
    assert out["dropped"]["ignored_labels"] == 1
    assert out["class_matches"] == {"7": 0, "9": 1, "99": None}


# --- bad inputs: one clear line each ----------------------------------------------------------


def test_reference_that_does_not_overlap_the_map(tmp_path: Path, runner: CliRunner) -> None:
    map_path = paper_map(tmp_path)
    far = write_vector(tmp_path / "far.gpkg", [(shapely.Point(900_000, 100_000), {"reference": "Forest gain"})])
    result = invoke(runner, ["eval", str(map_path), "--reference", str(far)])
    assert result.exit_code == 1
    line = error_line(result)
    assert "far.gpkg" in line and "does not overlap the map" in line and "EPSG:32633" in line


def test_unknown_reference_labels_are_listed_with_counts(tmp_path: Path, runner: CliRunner) -> None:
    map_path = paper_map(tmp_path)
    t = PAPER_TRANSFORM
    feats = [(centre(t, 0, c), {"reference": "Deforestation"}) for c in range(3)]
    feats += [(centre(t, 50, c), {"reference": "Cloud"}) for c in range(4)]
    feats += [(centre(t, 60, 0), {"reference": "Urban"})]
    points = write_vector(tmp_path / "p.gpkg", feats)
    result = invoke(runner, ["eval", str(map_path), "--reference", str(points)])
    assert result.exit_code == 1
    line = error_line(result)
    assert "'Cloud' (4 points), 'Urban' (1 points)" in line
    assert "Deforestation (0)" in line and "--class-map" in line


@pytest.mark.parametrize("kind", ["float", "three_bands"])
def test_a_raster_that_is_not_a_class_map(tmp_path: Path, runner: CliRunner, kind: str) -> None:
    rng = np.random.default_rng(0)
    if kind == "float":
        path = make_raster(tmp_path / "ndvi.tif", rng.random((30, 30)).astype(np.float32))
    else:
        path = make_raster(tmp_path / "rgb.tif", rng.integers(0, 255, (3, 30, 30), dtype=np.uint8))
    points = write_vector(tmp_path / "p.gpkg", [(shapely.Point(300_050, 5_799_950), {"reference": "1"})])
    result = invoke(runner, ["eval", str(path), "--reference", str(points)])
    assert result.exit_code == 1
    line = error_line(result)
    assert path.name in line and "class map" in line
    with pytest.raises(RasterOpenError):
        assess_map(MapAccuracyConfig(str(path), str(points)))


def test_reference_without_the_field(tmp_path: Path, runner: CliRunner) -> None:
    map_path = paper_map(tmp_path)
    points = write_vector(tmp_path / "p.gpkg", [(centre(PAPER_TRANSFORM, 0, 0), {"cid": 1, "pid": 3})])
    result = invoke(runner, ["eval", str(map_path), "--reference", str(points), "--label-field", "class"])
    assert result.exit_code == 1
    line = error_line(result)
    assert "p.gpkg" in line and "'class'" in line and "cid, pid" in line


def test_lines_are_refused(tmp_path: Path) -> None:
    map_path = paper_map(tmp_path)
    lines = write_vector(tmp_path / "l.gpkg", [(shapely.LineString([(300_000, 5_790_000), (310_000, 5_780_000)]),
                                               {"reference": "Forest gain"})], geometry="LineString")
    with pytest.raises(LabelError, match="LineString; reference data must be points"):
        assess_map(MapAccuracyConfig(str(map_path), str(lines)))


def test_report_never_replaces_the_map(tmp_path: Path, runner: CliRunner) -> None:
    map_path, points = paper_map(tmp_path), paper_points(tmp_path)
    before = map_path.read_bytes()
    result = invoke(runner, ["eval", str(map_path), "--reference", str(points), "--report", str(map_path)])
    assert result.exit_code == 2
    assert "would replace" in error_line(result)
    assert map_path.read_bytes() == before


def test_chip_options_are_refused_with_reference(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, ["eval", "map.tif", "--reference", "ref.gpkg", "--model", "m.safetensors"])
    assert result.exit_code == 2
    result = invoke(runner, ["eval", "chips", "--label-field", "cid"])
    assert result.exit_code == 2


# --- points dropped, polygons, reference rasters, geographic maps -------------------------------


def test_points_outside_the_map_or_on_nodata_are_dropped_with_a_count(tmp_path: Path) -> None:
    arr = np.zeros((10, 10), np.uint8)
    arr[:, 5:] = 1
    arr[0, 0] = 255  # nodata
    map_path = write_class_map(tmp_path / "m.tif", arr, ["a", "b"])
    t = rasterio.open(map_path).transform
    feats = [(centre(t, r, 1), {"ref": "a"}) for r in range(1, 6)] + [(centre(t, r, 7), {"ref": "b"}) for r in range(5)]
    feats += [(centre(t, 0, 0), {"ref": "a"}), (shapely.Point(t.c - 50, t.f + 50), {"ref": "a"}),
              (centre(t, 30, 3), {"ref": "b"})]
    points = write_vector(tmp_path / "p.gpkg", feats)
    notes: list[str] = []
    out = assess_map(MapAccuracyConfig(str(map_path), str(points)),
                     progress=lambda e: notes.append(e.message) if e.kind == "message" else None)
    assert out["sample_size"] == 10
    assert out["dropped"] == {"outside_map": 2, "on_nodata": 1, "ignored_labels": 0}
    assert any("2 of 13 reference points lie outside the map" in n for n in notes)
    assert any("1 reference point(s) fall on the map's nodata" in n for n in notes)


def test_polygons_are_not_a_probability_sample(tmp_path: Path, runner: CliRunner) -> None:
    arr = np.zeros((40, 40), np.uint8)
    arr[:, 20:] = 1
    map_path = write_class_map(tmp_path / "m.tif", arr, ["Forest", "Water"])
    t = rasterio.open(map_path).transform

    def box(c0: float, r0: float, c1: float, r1: float) -> shapely.Polygon:
        (x0, y0), (x1, y1) = t * (c0, r0), t * (c1, r1)
        return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    # 10x10 pixels of Forest labelled Forest; 10 columns x 5 rows straddling the boundary labelled
    # Water (5x5 on Forest, 5x5 on Water); a sliver holding no pixel centre.
    feats = [(box(2, 2, 12, 12), {"lc": "Forest"}), (box(15, 30, 25, 35), {"lc": "Water"}),
             (box(30.1, 1.1, 30.4, 1.4), {"lc": "Water"})]
    polys = write_vector(tmp_path / "poly.gpkg", feats, geometry="Polygon")
    out = assess_map(MapAccuracyConfig(str(map_path), str(polys)))
    assert out["probability_sample"] is False and out["area_estimates"] is False
    assert out["reference_kind"] == "polygons"
    assert out["error_matrix"]["counts"] == [[100, 25], [0, 25]]
    assert out["error_matrix"]["area_proportions"] is None
    assert out["classes"]["Forest"]["users_accuracy"] == {"estimate": 0.8, "se": None, "ci95": None}
    assert out["classes"]["Water"]["producers_accuracy"]["estimate"] == pytest.approx(0.5)
    assert out["overall_accuracy"]["estimate"] == pytest.approx(125 / 150)
    assert out["classes"]["Forest"]["area_m2"]["estimate"] is None
    assert any("not a probability sample" in n for n in out["notes"])
    assert any("1 reference polygon(s) hold no map pixel centre" in n for n in out["notes"])

    result = invoke(runner, ["eval", str(map_path), "--reference", str(polys), "--polygon-areas", "--json"])
    assert result.exit_code == 0, result.stderr
    asked = json.loads(result.stdout)
    assert asked["area_estimates"] is True and asked["probability_sample"] is False
    # Forest stratum: 100/125 Forest; Water stratum: all Water. 800 mapped pixels of 100 m2 each.
    assert asked["classes"]["Forest"]["area_m2"]["estimate"] == pytest.approx(800 * 100 * 0.8)
    assert "too narrow" in result.stderr


def test_large_polygon_is_read_in_tiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import geoclass.accuracy.reference as reference

    monkeypatch.setattr(reference, "TILE", 16)
    arr = np.zeros((50, 70), np.uint8)
    arr[25:, :] = 1
    map_path = write_class_map(tmp_path / "m.tif", arr, ["a", "b"])
    t = rasterio.open(map_path).transform
    (x0, y0), (x1, y1) = t * (0, 0), t * (70, 50)
    polys = write_vector(tmp_path / "all.gpkg", [(shapely.box(x0, y1, x1, y0), {"c": "a"})], geometry="Polygon")
    out = assess_map(MapAccuracyConfig(str(map_path), str(polys)))
    assert out["error_matrix"]["counts"] == [[25 * 70, 0], [25 * 70, 0]]


def test_reference_raster_on_another_grid(tmp_path: Path, runner: CliRunner) -> None:
    arr = np.zeros((20, 20), np.uint8)
    arr[:, 10:] = 1
    map_path = write_class_map(tmp_path / "m.tif", arr, ["Forest", "Water"])
    t = rasterio.open(map_path).transform
    # Reference at 5 m (half the map's pixel), values 10/20, shifted by 2 map columns, nodata 0.
    ref = np.full((40, 40), 10, np.uint8)
    ref[:, 24:] = 20
    ref[:4, :] = 0
    ref_path = make_raster(tmp_path / "ref.tif", ref, nodata=0,
                           transform=Affine(5.0, 0.0, t.c + 20.0, 0.0, -5.0, t.f))
    class_map = tmp_path / "cm.json"
    class_map.write_text('{"10": "Forest", "20": "Water"}')
    result = invoke(runner, ["eval", str(map_path), "--reference", str(ref_path), "--class-map", str(class_map),
                             "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["reference_kind"] == "raster" and out["probability_sample"] is False
    # Reference covers map columns 2-19 and rows 2-19; Water from map column 14.
    assert out["error_matrix"]["counts"] == [[8 * 18, 0], [4 * 18, 6 * 18]]


def test_reference_raster_without_overlap(tmp_path: Path) -> None:
    map_path = write_class_map(tmp_path / "m.tif", np.zeros((10, 10), np.uint8), ["a"])
    ref_path = make_raster(tmp_path / "ref.tif", np.zeros((10, 10), np.uint8),
                           transform=Affine(10.0, 0.0, 900_000.0, 0.0, -10.0, 100_000.0))
    with pytest.raises(LabelError, match="does not overlap the map"):
        assess_map(MapAccuracyConfig(str(map_path), str(ref_path)))


def test_geographic_map_with_points_in_utm(tmp_path: Path) -> None:
    arr = np.zeros((100, 100), np.uint8)
    arr[:, 50:] = 1
    arr[90:, :] = 2
    transform = Affine(0.001, 0.0, 14.0, 0.0, -0.001, 52.0)  # about 69 m x 111 m pixels
    map_path = write_class_map(tmp_path / "geo.tif", arr, ["a", "b", "c"], crs="EPSG:4326", transform=transform)
    feats = []
    for r in range(0, 90, 3):
        for c in (10, 20, 30, 60, 70, 80):
            lon, lat = transform * (c + 0.5, r + 0.5)
            xs, ys = warp_transform("EPSG:4326", UTM_CRS, [lon], [lat])
            label = "a" if c < 50 else ("b" if c != 80 else "a")  # column 80 mislabelled
            feats.append((shapely.Point(xs[0], ys[0]), {"lc": label}))
    for c in range(0, 100, 5):
        lon, lat = transform * (c + 0.5, 95.5)
        xs, ys = warp_transform("EPSG:4326", UTM_CRS, [lon], [lat])
        feats.append((shapely.Point(xs[0], ys[0]), {"lc": "c"}))
    points = write_vector(tmp_path / "utm.gpkg", feats)
    out = assess_map(MapAccuracyConfig(str(map_path), str(points)))
    assert out["error_matrix"]["counts"] == [[90, 0, 0], [30, 60, 0], [0, 0, 20]]
    total = out["mapped_area_m2"]
    # The 0.1 x 0.1 degree quadrangle at 51.9-52 N on WGS 84: about 6.88 km x 11.13 km.
    assert total == pytest.approx(76.6e6, rel=0.01)
    a, b = out["classes"]["a"], out["classes"]["b"]
    # b is 2/3 b, 1/3 a; everything sums to the mapped area.
    assert a["area_m2"]["estimate"] == pytest.approx(a["mapped_area_m2"] + b["mapped_area_m2"] / 3)
    assert sum(c["area_m2"]["estimate"] for c in out["classes"].values()) == pytest.approx(total)
    assert b["area_m2"]["ci95"] > 0


def test_mapped_class_without_sample_points_is_reported_and_left_out(tmp_path: Path) -> None:
    arr = np.zeros((10, 10), np.uint8)
    arr[:, 6:] = 1
    arr[8:, :] = 2  # class c: mapped, never sampled
    map_path = write_class_map(tmp_path / "m.tif", arr, ["a", "b", "c"])
    t = rasterio.open(map_path).transform
    feats = [(centre(t, r, 1), {"lc": "a"}) for r in range(4)] + [(centre(t, r, 8), {"lc": "b"}) for r in range(3)]
    feats += [(centre(t, 4, 8), {"lc": "c"})]  # a c label in stratum b
    points = write_vector(tmp_path / "p.gpkg", feats)
    warned: list[str] = []
    out = assess_map(MapAccuracyConfig(str(map_path), str(points)),
                     progress=lambda e: warned.append(e.message) if e.level == "warning" else None)
    assert out["classes_without_samples"] == ["c"]
    assert any("no sample point" in w and "c" in w for w in warned)
    c = out["classes"]["c"]
    assert c["mapped_area_m2"] == pytest.approx(20 * 100)
    assert c["users_accuracy"]["estimate"] is None and c["area_m2"]["estimate"] is None
    assert out["estimation_area_m2"] == pytest.approx(80 * 100)
    # a and b share the sampled 80 pixels: b's stratum is 3/4 b, 1/4 c.
    assert out["classes"]["b"]["area_m2"]["estimate"] == pytest.approx(32 * 100 * 0.75)


def test_a_filled_in_sample_file_needs_no_label_field(tmp_path: Path) -> None:
    arr = np.zeros((10, 10), np.uint8)
    arr[:, 5:] = 1
    map_path = write_class_map(tmp_path / "m.tif", arr, ["a", "b"])
    t = rasterio.open(map_path).transform
    # As 'geoclass sample' writes it: id, map_class, map_class_name, reference (filled in by hand).
    feats = [(centre(t, r, 1), {"id": r, "map_class": 0, "map_class_name": "a", "reference": "a"}) for r in range(4)]
    feats += [(centre(t, r, 7), {"id": 10 + r, "map_class": 1, "map_class_name": "b", "reference": "b"})
              for r in range(3)]
    feats += [(centre(t, 5, 7), {"id": 20, "map_class": 1, "map_class_name": "b", "reference": ""}),  # not labelled
              (centre(t, 6, 7), {"id": 21, "map_class": 0, "map_class_name": "a", "reference": "b"})]  # other map
    points = write_vector(tmp_path / "sample.gpkg", feats)
    warned: list[str] = []
    out = assess_map(MapAccuracyConfig(str(map_path), str(points)),
                     progress=lambda e: warned.append(e.message) if e.level == "warning" else None)
    assert out["label_field"] == "reference"
    assert out["error_matrix"]["counts"] == [[4, 0], [0, 4]]
    assert any("1 feature(s)" in n and "no value in 'reference'" in n for n in out["notes"])
    assert any("1 of 8 reference points have a 'map_class' that is not the map's class" in w for w in warned)


def test_reference_class_the_map_never_maps(tmp_path: Path) -> None:
    arr = np.zeros((10, 10), np.uint8)
    arr[:, 5:] = 1
    map_path = write_class_map(tmp_path / "m.tif", arr, ["a", "b", "wetland"])  # wetland named, never mapped
    t = rasterio.open(map_path).transform
    feats = [(centre(t, r, 1), {"lc": "a"}) for r in range(4)] + [(centre(t, r, 7), {"lc": "b"}) for r in range(3)]
    feats += [(centre(t, 4, 1), {"lc": "wetland"})]
    out = assess_map(MapAccuracyConfig(str(map_path), str(write_vector(tmp_path / "p.gpkg", feats))))
    wetland = out["classes"]["wetland"]
    assert wetland["mapped_area_m2"] == 0 and wetland["users_accuracy"]["estimate"] is None
    assert wetland["producers_accuracy"]["estimate"] == 0.0  # all of it is omitted by the map
    assert wetland["area_m2"]["estimate"] == pytest.approx(50 * 100 / 5)  # 1 of a's 5 points
    assert out["classes_without_samples"] == []


def test_numeric_labels_matched_by_value_to_a_named_map_warn(tmp_path: Path) -> None:
    arr = np.zeros((10, 10), np.uint8)
    arr[:, 5:] = 1
    map_path = write_class_map(tmp_path / "m.tif", arr, ["Forest", "Water"])
    t = rasterio.open(map_path).transform
    feats = [(centre(t, r, 1), {"cid": 0}) for r in range(3)] + [(centre(t, r, 7), {"cid": 1}) for r in range(3)]
    warned: list[str] = []
    out = assess_map(MapAccuracyConfig(str(map_path), str(write_vector(tmp_path / "p.gpkg", feats))),
                     progress=lambda e: warned.append(e.message) if e.level == "warning" else None)
    assert out["error_matrix"]["counts"] == [[3, 0], [0, 3]]
    assert any("matched to the map's classes by value (0 -> Forest, 1 -> Water)" in w for w in warned)
