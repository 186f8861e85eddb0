"""Mapped area per class (streamed pixel counts, projected and ellipsoidal areas) and stratified samples."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
from affine import Affine
from typer.testing import CliRunner

import geoclass.accuracy.mapped_area as mapped_area_module
import geoclass.accuracy.sample as sample_module
from geoclass.accuracy.mapped_area import mapped_area
from geoclass.accuracy.sample import SampleConfig, allocate, draw_sample
from geoclass.cli.app import app
from geoclass.errors import (
    ConfigError,
    GeoreferenceError,
    InputNotFoundError,
    OutputExistsError,
    RasterOpenError,
)
from geoclass.io.class_map import write_class_metadata
from geoclass.progress import ProgressEvent
from tests.conftest import make_raster

WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563


def ellipsoid_area(lat0: float, lat1: float, dlon: float) -> float:
    """Area of a WGS84 quadrangle by numerical integration of M(φ) N(φ) cos φ (independent check)."""
    e2 = WGS84_F * (2 - WGS84_F)
    phi = np.linspace(math.radians(lat0), math.radians(lat1), 200_001)
    s2 = np.sin(phi) ** 2
    m = WGS84_A * (1 - e2) / (1 - e2 * s2) ** 1.5
    n = WGS84_A / np.sqrt(1 - e2 * s2)
    return float(np.trapezoid(m * n * np.cos(phi), phi)) * math.radians(dlon)


def class_map(path: Path, array: np.ndarray, names: list[str] | None = None, **kwargs) -> Path:
    """A uint8 class map (nodata 255) with geoclass class names."""
    make_raster(path, array.astype(np.uint8), nodata=255, **kwargs)
    if names is not None:
        with rasterio.open(path, "r+") as ds:
            write_class_metadata(ds, names, [(i, i, i) for i in range(len(names))])
    return path


def read_points(path: Path) -> list[dict]:
    with fiona.open(path) as src:
        return [
            {"xy": tuple(f.geometry["coordinates"]), **dict(f.properties)} for f in src
        ]


def temp_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- mapped area: counts and areas ----------------------------------------------------------------


def test_projected_map_counts_and_exact_areas_without_nodata(tmp_path: Path) -> None:
    arr = np.array([[0, 0, 1, 1], [2, 2, 2, 255], [0, 7, 7, 255]], np.uint8)
    mask = np.ones(arr.shape, bool)
    mask[2, 0] = False  # masked: not counted even though it holds 0
    path = make_raster(tmp_path / "map.tif", arr, nodata=255, mask=mask)
    result = mapped_area(path)
    assert result.values == [0, 1, 2, 7]
    assert result.pixels == [2, 2, 3, 2]
    assert result.area_m2 == [200.0, 200.0, 300.0, 200.0]  # 10 m pixels
    assert result.crs == "EPSG:32633"
    assert result.nodata == 255
    assert result.names == {}


def test_us_feet_grid_areas_are_converted_to_square_metres(tmp_path: Path) -> None:
    path = make_raster(tmp_path / "ft.tif", np.ones((2, 3), np.uint8), crs="EPSG:2227",
                       transform=Affine(10.0, 0, 6_000_000, 0, -10.0, 2_000_000))
    result = mapped_area(path)
    foot = 1200 / 3937  # US survey foot
    assert result.area_m2[0] == pytest.approx(6 * 100 * foot**2, rel=1e-12)


def test_geographic_one_degree_cell_at_the_equator(tmp_path: Path) -> None:
    path = make_raster(tmp_path / "geo.tif", np.ones((1, 1), np.uint8), crs="EPSG:4326",
                       transform=Affine(1.0, 0, 10.0, 0, -1.0, 1.0))
    area = mapped_area(path).area_m2[0]
    assert area == pytest.approx(12_308e6, rel=1e-3)  # the textbook figure
    assert area == pytest.approx(ellipsoid_area(0, 1, 1), rel=1e-9)


def test_geographic_areas_depend_on_the_row(tmp_path: Path) -> None:
    # 0.5 degree pixels from 61N to 59N: class 1 in the top row, class 2 in the others
    arr = np.array([[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]], np.uint8)
    path = make_raster(tmp_path / "geo.tif", arr, crs="EPSG:4326",
                       transform=Affine(0.5, 0, 20.0, 0, -0.5, 61.0))
    result = mapped_area(path)
    rows = [ellipsoid_area(61 - 0.5 * (r + 1), 61 - 0.5 * r, 0.5) for r in range(4)]
    assert result.area_m2[0] == pytest.approx(3 * rows[0] + rows[1], rel=1e-8)
    assert result.area_m2[1] == pytest.approx(2 * rows[1] + 3 * rows[2] + 3 * rows[3], rel=1e-8)
    assert rows[0] < rows[3]  # pixels shrink towards the pole


def test_whole_earth_adds_up_to_the_ellipsoid(tmp_path: Path) -> None:
    path = make_raster(tmp_path / "earth.tif", np.zeros((180, 360), np.uint8), crs="EPSG:4326",
                       transform=Affine(1.0, 0, -180.0, 0, -1.0, 90.0))
    assert mapped_area(path).area_m2[0] == pytest.approx(510_065_621.724e6, rel=1e-9)


def test_rotated_geographic_grid_is_refused(tmp_path: Path) -> None:
    path = make_raster(tmp_path / "rot.tif", np.ones((2, 2), np.uint8), crs="EPSG:4326",
                       transform=Affine(0.1, 0.05, 10.0, 0.05, -0.1, 50.0))
    with pytest.raises(GeoreferenceError, match="rotated or sheared") as info:
        mapped_area(path)
    assert "\n" not in str(info.value)


def test_map_without_crs(tmp_path: Path) -> None:
    path = make_raster(tmp_path / "nocrs.tif", np.array([[1, 2], [2, 2]], np.uint8), crs=None)
    with pytest.raises(GeoreferenceError, match="no CRS"):
        mapped_area(path)
    result = mapped_area(path, require_crs=False)
    assert result.pixels == [1, 3]
    assert all(math.isnan(a) for a in result.area_m2)
    assert result.crs is None


def test_negative_and_wide_ranging_values(tmp_path: Path) -> None:
    arr = np.array([[-3, -3, 0], [100_000_000, 5, -3]], np.int32)
    result = mapped_area(make_raster(tmp_path / "i32.tif", arr))
    assert result.values == [-3, 0, 5, 100_000_000]
    assert result.pixels == [3, 1, 1, 1]


def test_float_map_of_whole_numbers_is_a_class_map(tmp_path: Path) -> None:
    arr = np.array([[1.0, 2.0], [np.nan, 2.0]], np.float32)
    result = mapped_area(make_raster(tmp_path / "f.tif", arr, nodata=float("nan")))
    assert result.values == [1, 2]
    assert result.pixels == [1, 2]


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.array([[0.25, 1.0]], np.float32), "0.25 in a float32 band; expected a class map"),
        (np.ones((3, 2, 2), np.uint8), "3 bands; expected a class map"),
        (np.arange(1200, dtype=np.uint16).reshape(30, 40), "more than 1000 distinct values"),
    ],
    ids=["fractional", "rgb", "continuous"],
)
def test_non_class_rasters_are_refused_in_one_line(tmp_path: Path, array: np.ndarray, match: str) -> None:
    path = make_raster(tmp_path / "x.tif", array)
    with pytest.raises(RasterOpenError, match=match) as info:
        mapped_area(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_map(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        mapped_area(tmp_path / "none.tif")


# --- mapped area: names ---------------------------------------------------------------------------


def test_geoclass_class_names(tmp_path: Path) -> None:
    path = class_map(tmp_path / "map.tif", np.array([[0, 2]]), names=["water", "forest", "crop"])
    assert mapped_area(path).names == {0: "water", 1: "forest", 2: "crop"}


def test_gdal_category_names_from_the_aux_xml(tmp_path: Path) -> None:
    path = make_raster(tmp_path / "other.tif", np.array([[1, 3]], np.uint8))
    # as GDAL writes GDALSetRasterCategoryNames for a GeoTIFF
    Path(f"{path}.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><CategoryNames>'
        "<Category></Category><Category>Forest</Category><Category>Grass</Category>"
        "<Category>Urban</Category></CategoryNames></PAMRasterBand></PAMDataset>"
    )
    assert mapped_area(path).names == {1: "Forest", 2: "Grass", 3: "Urban"}


def test_raster_attribute_table_names_from_the_aux_xml(tmp_path: Path) -> None:
    path = make_raster(tmp_path / "rat.tif", np.array([[10, 20]], np.uint8))
    Path(f"{path}.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><GDALRasterAttributeTable tableType="thematic">'
        "<FieldDefn index=\"0\"><Name>Value</Name><Type>0</Type><Usage>5</Usage></FieldDefn>"
        "<FieldDefn index=\"1\"><Name>Class_Name</Name><Type>2</Type><Usage>2</Usage></FieldDefn>"
        '<Row index="0"><F>10</F><F>Wetland</F></Row><Row index="1"><F>20</F><F>Shrub</F></Row>'
        "</GDALRasterAttributeTable></PAMRasterBand></PAMDataset>"
    )
    assert mapped_area(path).names == {10: "Wetland", 20: "Shrub"}


# --- streaming ------------------------------------------------------------------------------------


def test_a_map_of_many_windows_counts_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 6, size=(150, 170)).astype(np.uint8)
    arr[rng.random(arr.shape) < 0.1] = 255
    path = class_map(tmp_path / "big.tif", arr, tiled=True, blockxsize=32, blockysize=32)
    events: list[ProgressEvent] = []
    monkeypatch.setattr(mapped_area_module, "_WINDOW_PIXELS", 64 * 64)  # 4 blocks per window
    result = mapped_area(path, events.append)
    values, counts = np.unique(arr[arr != 255], return_counts=True)
    assert result.values == values.tolist()
    assert result.pixels == counts.tolist()
    steps = [e for e in events if e.kind == "advance" and e.task == "count classes"]
    start = next(e for e in events if e.kind == "start")
    assert len(steps) == start.total == 5 * 2  # 5 bands of one block row, windows of 4 blocks


# --- allocation ----------------------------------------------------------------------------------


def test_allocation_keeps_the_minimum_for_rare_classes() -> None:
    sizes, minimum = allocate([0.7, 0.2, 0.09, 0.01], [7000, 2000, 900, 100], 300, 50)
    # 50 each for the two rare classes, the rest in proportion 0.7 : 0.2, with class 2 at its floor
    assert (sizes, minimum) == ([150, 50, 50, 50], 50)


def test_allocation_is_proportional_above_the_minimum() -> None:
    sizes, _ = allocate([0.5, 0.3, 0.2], [5000, 3000, 2000], 1000, 50)
    assert sizes == [500, 300, 200]


def test_allocation_never_exceeds_a_class_and_sums_to_n() -> None:
    sizes, _ = allocate([0.7, 0.2, 0.09, 0.01], [7000, 2000, 900, 10], 300, 50)
    assert sizes == [187, 53, 50, 10]


def test_allocation_lowers_the_minimum_when_n_is_too_small() -> None:
    assert allocate([0.7, 0.2, 0.09, 0.01], [7000, 2000, 900, 100], 100, 50) == ([25, 25, 25, 25], 25)
    assert allocate([0.97, 0.03], [970, 30], 7, 50) == ([4, 3], 3)


def test_allocation_takes_everything_when_n_exceeds_the_map() -> None:
    assert allocate([0.5, 0.5], [10, 20], 500, 50)[0] == [10, 20]


# --- samples --------------------------------------------------------------------------------------


@pytest.fixture
def strata_map(tmp_path: Path) -> Path:
    """100x100 map: class 0 6000 px, class 1 3000, class 2 900, class 3 70, class 4 30; nodata rows."""
    arr = np.zeros(10_000, np.uint8)
    arr[:3000] = 1
    arr[3000:3900] = 2
    arr[3900:3970] = 3
    arr[3970:4000] = 4
    arr = np.random.default_rng(7).permutation(arr).reshape(100, 100)
    arr = np.vstack([arr, np.full((5, 100), 255, np.uint8)])
    names = ["forest", "crop", "water", "urban", "bare"]
    return class_map(tmp_path / "map.tif", arr, names=names, tiled=True, blockxsize=32, blockysize=32)


def draw(map_path: Path, out: Path, **kwargs):
    return draw_sample(SampleConfig(map_path=map_path, output=out, **kwargs))


def per_class(points: list[dict]) -> dict[int, int]:
    return dict(sorted(Counter(p["map_class"] for p in points).items()))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # water, urban at the minimum, bare (30 px) whole; 327 left in proportion 0.6 : 0.3
        ({"allocation": "proportional"}, {0: 218, 1: 109, 2: 50, 3: 50, 4: 30}),
        # 457 * shares = 274.2, 137.1, 41.13, 3.2, 1.37; the point left over goes to bare (0.37)
        ({"allocation": "proportional", "min_per_class": 0}, {0: 274, 1: 137, 2: 41, 3: 3, 4: 2}),
        # urban and bare whole, 357 split equally
        ({"allocation": "equal"}, {0: 119, 1: 119, 2: 119, 3: 70, 4: 30}),
        # Neyman: W_h sqrt(U_h (1 - U_h)); forest at U=0.99 weighs 0.6*0.0995 against crop's 0.3*0.5
        (
            {"allocation": "neyman", "min_per_class": 0,
             "expected_accuracy_by_class": {"forest": 0.99, "crop": 0.5}},
            {0: 111, 1: 279, 2: 60, 3: 5, 4: 2},
        ),
    ],
    ids=["proportional-min50", "proportional", "equal", "neyman"],
)
def test_sizes_per_class_for_each_allocation(
    strata_map: Path, tmp_path: Path, kwargs: dict, expected: dict[int, int]
) -> None:
    out = tmp_path / "sample.gpkg"
    result = draw(strata_map, out, n=457, **kwargs)
    assert {s.value: s.n for s in result.strata} == expected
    assert per_class(read_points(out)) == expected
    assert result.n == sum(expected.values()) == 457
    assert [s.pixels for s in result.strata] == [6000, 3000, 900, 70, 30]
    assert [round(s.weight, 4) for s in result.strata] == [0.6, 0.3, 0.09, 0.007, 0.003]


def test_neyman_with_one_accuracy_is_proportional(strata_map: Path, tmp_path: Path) -> None:
    a = draw(strata_map, tmp_path / "a.gpkg", n=457, allocation="neyman", expected_accuracy=0.7)
    b = draw(strata_map, tmp_path / "b.gpkg", n=457, allocation="proportional")
    assert [s.n for s in a.strata] == [s.n for s in b.strata]
    assert [s.expected_accuracy for s in a.strata] == [0.7] * 5


def test_a_class_smaller_than_the_minimum_is_taken_whole(strata_map: Path, tmp_path: Path) -> None:
    out = tmp_path / "sample.gpkg"
    draw(strata_map, out, n=300, min_per_class=40)
    points = read_points(out)
    with rasterio.open(strata_map) as ds:
        arr = ds.read(1)
        inverse = ~ds.transform
    bare = {(int(c), int(r)) for c, r in (inverse * p["xy"] for p in points if p["map_class"] == 4)}
    rows, cols = np.nonzero(arr == 4)
    assert bare == set(zip(cols.tolist(), rows.tolist()))  # all 30 pixels of class 4
    assert per_class(points)[3] == 40


def test_the_user_is_told_when_the_minimum_is_lowered(strata_map: Path, tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    result = draw_sample(SampleConfig(map_path=strata_map, output=tmp_path / "s.gpkg", n=20), events.append)
    assert [s.n for s in result.strata] == [4, 4, 4, 4, 4]
    assert result.min_per_class == 4
    warnings = [e.message for e in events if e.kind == "message" and e.level == "warning"]
    assert warnings == ["20 points cannot give each of the 5 classes 50; each class gets at least 4"]
    events.clear()
    draw_sample(SampleConfig(map_path=strata_map, output=tmp_path / "t.gpkg", n=300), events.append)
    notes = [e.message for e in events if e.kind == "message"]
    assert notes == ["every pixel of these classes is in the sample: bare"]


def test_points_are_pixel_centres_of_their_class(strata_map: Path, tmp_path: Path) -> None:
    out = tmp_path / "sample.gpkg"
    result = draw(strata_map, out, n=200)
    points = read_points(out)
    with rasterio.open(strata_map) as ds:
        arr = ds.read(1)
        inverse = ~ds.transform
    seen = set()
    for p in points:
        col, row = inverse * p["xy"]
        assert col % 1 == pytest.approx(0.5) and row % 1 == pytest.approx(0.5)
        assert arr[int(row), int(col)] == p["map_class"]
        assert p["map_class_name"] == ["forest", "crop", "water", "urban", "bare"][p["map_class"]]
        assert p["reference"] == ""
        seen.add((int(col), int(row)))
    assert len(seen) == len(points) == 200  # no pixel twice
    assert sorted(p["id"] for p in points) == list(range(1, 201))
    with fiona.open(out) as src:
        assert src.crs.to_epsg() == 32633
    assert result.fields == ["id", "map_class", "map_class_name", "reference"]


def test_same_seed_same_sample_other_seed_other_sample(strata_map: Path, tmp_path: Path) -> None:
    draw(strata_map, tmp_path / "a.gpkg", n=100, seed=3)
    draw(strata_map, tmp_path / "b.gpkg", n=100, seed=3)
    draw(strata_map, tmp_path / "c.gpkg", n=100, seed=4)
    a, b, c = (read_points(tmp_path / f"{k}.gpkg") for k in "abc")
    assert a == b
    assert {p["xy"] for p in a} != {p["xy"] for p in c}
    assert per_class(a) == per_class(c)


def test_streaming_in_bands_gives_the_same_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    arr = rng.choice(4, size=(120, 90), p=[0.7, 0.2, 0.08, 0.02]).astype(np.uint8)
    path = class_map(tmp_path / "strips.tif", arr, blockysize=4)  # striped: full-width blocks
    whole = draw(path, tmp_path / "whole.gpkg", n=150, seed=9)
    monkeypatch.setattr(mapped_area_module, "_WINDOW_PIXELS", 90 * 8)  # 15 bands of 8 rows
    events: list[ProgressEvent] = []
    banded = draw_sample(SampleConfig(map_path=path, output=tmp_path / "banded.gpkg", n=150, seed=9),
                         events.append)
    assert read_points(tmp_path / "whole.gpkg") == read_points(tmp_path / "banded.gpkg")
    assert [s.n for s in whole.strata] == [s.n for s in banded.strata]
    assert sum(1 for e in events if e.kind == "advance" and e.task == "draw sample") == 15


def test_tiled_map_in_many_windows(strata_map: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mapped_area_module, "_WINDOW_PIXELS", 32 * 32)  # one 32x32 block per window
    out = tmp_path / "sample.gpkg"
    draw(strata_map, out, n=457)
    points = read_points(out)
    assert per_class(points) == {0: 218, 1: 109, 2: 50, 3: 50, 4: 30}
    with rasterio.open(strata_map) as ds:
        arr = ds.read(1)
        inverse = ~ds.transform
    for p in points:
        col, row = inverse * p["xy"]
        assert arr[int(row), int(col)] == p["map_class"]


@pytest.mark.parametrize(("suffix", "name_field"), [(".geojson", "map_class_name"), (".shp", "class_name")])
def test_other_vector_formats(strata_map: Path, tmp_path: Path, suffix: str, name_field: str) -> None:
    out = tmp_path / f"sample{suffix}"
    result = draw(strata_map, out, n=60)
    points = read_points(out)
    assert len(points) == 60
    assert all(p[name_field] for p in points)
    assert name_field in result.fields
    assert temp_leftovers(tmp_path) == []


def test_geographic_map_sample(tmp_path: Path) -> None:
    arr = np.array([[1, 1, 2], [2, 2, 2]], np.uint8)
    path = make_raster(tmp_path / "geo.tif", arr, crs="EPSG:4326",
                       transform=Affine(0.5, 0, 20.0, 0, -0.5, 61.0))
    out = tmp_path / "s.gpkg"
    result = draw(path, out, n=6)
    assert sorted(p["xy"] for p in read_points(out)) == sorted(
        (20.25 + 0.5 * c, 60.75 - 0.5 * r) for r in range(2) for c in range(3)
    )
    assert "map_class_name" not in result.fields  # the map names no classes
    assert result.strata[0].area_m2 == pytest.approx(2 * ellipsoid_area(60.5, 61, 0.5), rel=1e-8)


# --- outputs --------------------------------------------------------------------------------------


def test_an_existing_output_is_kept_without_overwrite(strata_map: Path, tmp_path: Path) -> None:
    out = tmp_path / "sample.gpkg"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        draw(strata_map, out, n=10)
    assert out.read_bytes() == b"keep me"
    draw(strata_map, out, n=10, overwrite=True)
    assert len(read_points(out)) == 10


def test_the_sample_never_replaces_the_map(strata_map: Path, tmp_path: Path) -> None:
    before = strata_map.read_bytes()
    link = tmp_path / "points.gpkg"
    link.symlink_to(strata_map)  # writing "points.gpkg" would write the map
    with pytest.raises(ConfigError, match="would replace") as info:
        draw(strata_map, link, n=10, overwrite=True)
    assert "\n" not in str(info.value)
    assert strata_map.read_bytes() == before


def test_an_interrupted_sample_leaves_no_file(
    strata_map: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sample.gpkg"
    draw(strata_map, out, n=10, seed=1)
    before = out.read_bytes()
    monkeypatch.setattr(mapped_area_module, "_WINDOW_PIXELS", 32 * 32)
    calls = {"n": 0}
    real = sample_module.read_classes

    def failing(scene, window):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(scene, window)

    monkeypatch.setattr(sample_module, "read_classes", failing)
    with pytest.raises(KeyboardInterrupt):
        draw(strata_map, out, n=10, seed=2, overwrite=True)
    assert out.read_bytes() == before
    assert temp_leftovers(tmp_path) == []


def test_a_map_with_only_nodata(tmp_path: Path) -> None:
    path = class_map(tmp_path / "empty.tif", np.full((4, 4), 255))
    with pytest.raises(RasterOpenError, match="no class pixels"):
        draw(path, tmp_path / "s.gpkg", n=10)
    assert not (tmp_path / "s.gpkg").exists()


def test_bad_options(strata_map: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.gpkg"
    with pytest.raises(ConfigError, match="unknown allocation"):
        draw(strata_map, out, n=10, allocation="random")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no such class"):
        draw(strata_map, out, n=10, allocation="neyman", expected_accuracy_by_class={"ice": 0.9})
    with pytest.raises(ConfigError, match="between 0 and 1"):
        draw(strata_map, out, n=10, allocation="neyman", expected_accuracy=1.0)
    with pytest.raises(ConfigError, match="unknown vector format"):
        draw(strata_map, tmp_path / "s.csv", n=10)
    assert not out.exists()


# --- command line ---------------------------------------------------------------------------------


def test_cli_sample_table_and_json(strata_map: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "s.gpkg"
    result = runner.invoke(app, ["sample", str(strata_map), "-n", "300", "-o", str(out)],
                           env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "proportional allocation" in result.stdout
    assert "forest" in result.stdout and "300 points from 5 classes" in result.stdout
    result = runner.invoke(app, ["sample", str(strata_map), "-n", "300", "-o", str(out),
                                 "--overwrite", "--json", "--allocation", "neyman",
                                 "--expected-accuracy", "0.8", "--expected-accuracy", "water=0.6"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n"] == 300
    assert [s["expected_accuracy"] for s in data["strata"]] == [0.8, 0.8, 0.6, 0.8, 0.8]


def test_cli_errors_are_one_line(strata_map: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = str(tmp_path / "s.gpkg")
    usage = runner.invoke(app, ["sample", str(strata_map), "-n", "10", "-o", out,
                                "--expected-accuracy", "0.9"])
    assert usage.exit_code == 2
    rgb = make_raster(tmp_path / "rgb.tif", np.ones((3, 4, 4), np.uint8))
    bad = runner.invoke(app, ["sample", str(rgb), "-n", "10", "-o", out])
    assert bad.exit_code == 1
    assert bad.stderr.strip().splitlines() == [
        f"error: {rgb}: has 3 bands; expected a class map (one band of class values)"
    ]
