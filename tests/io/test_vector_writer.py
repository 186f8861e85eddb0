"""Streaming polygonization of class maps: seams, holes, nodata, formats, filters, errors."""

from __future__ import annotations

from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
from shapely.geometry import shape

from geoclass.errors import ConfigError, OutputError, OutputExistsError
from geoclass.io.class_map import read_class_metadata, write_class_metadata
from geoclass.io.vector_writer import polygonize_class_map
from geoclass.progress import ProgressEvent
from tests.conftest import make_raster

CLASSES = ["water", "crop", "tree", "built"]
COLORS = [(0, 0, 255), (255, 255, 0), (0, 128, 0), (200, 0, 0)]
PIXEL_AREA = 100.0  # the conftest UTM grid is 10 m


def class_map(path: Path, array: np.ndarray, crs: str = "EPSG:32633") -> Path:
    make_raster(path, array.astype(np.uint8), crs=crs, nodata=255)
    with rasterio.open(path, "r+") as ds:
        write_class_metadata(ds, CLASSES, COLORS)
    return path


def features(path: Path) -> list[dict]:
    with fiona.open(path) as src:
        return [{"geometry": shape(f.geometry), **dict(f.properties)} for f in src]


def by_class(feats: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for f in feats:
        out.setdefault(f["class_id"], []).append(f)
    return out


@pytest.fixture
def random_map(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(3)
    # Blocky noise: many shapes that cross band seams, some corner-only contacts, nodata patches.
    arr = rng.integers(0, 4, size=(12, 14)).repeat(3, axis=0).repeat(3, axis=1)[:35, :40]
    arr = np.where(rng.random(arr.shape) < 0.08, rng.integers(0, 4, arr.shape), arr)
    arr[5:9, 30:38] = 255
    return class_map(tmp_path / "random.tif", arr), arr


def test_class_metadata_round_trip(random_map: tuple[Path, np.ndarray]) -> None:
    path, _ = random_map
    assert read_class_metadata(path) == (CLASSES, COLORS)
    with rasterio.open(path) as ds:
        assert ds.descriptions[0] == "class"
        assert ds.colormap(1)[255][3] == 0


def test_polygons_valid_and_areas_equal_pixel_areas(
    random_map: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, arr = random_map
    result = polygonize_class_map(path, tmp_path / "out.gpkg", band_rows=4)
    feats = features(result.path)
    assert len(feats) == result.polygons > 0
    assert all(f["geometry"].is_valid and f["geometry"].geom_type == "Polygon" for f in feats)
    groups = by_class(feats)
    assert set(groups) == {0, 1, 2, 3}  # nodata (255) makes no polygon
    for cls, fs in groups.items():
        expected = float((arr == cls).sum()) * PIXEL_AREA
        assert sum(f["geometry"].area for f in fs) == pytest.approx(expected)
        assert sum(f["area"] for f in fs) == pytest.approx(expected)
        assert result.area_by_class[cls] == pytest.approx(expected)
        assert {f["class_name"] for f in fs} == {CLASSES[cls]}
    # No two polygons of one class may share an edge (that would be a missed dissolve).
    for fs in groups.values():
        for i, a in enumerate(fs):
            for b in fs[i + 1 :]:
                assert a["geometry"].intersection(b["geometry"]).length == pytest.approx(0.0)


def test_streaming_matches_whole_map(random_map: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, arr = random_map
    whole = polygonize_class_map(path, tmp_path / "whole.gpkg", band_rows=arr.shape[0])
    for rows in (1, 2, 5):
        banded = polygonize_class_map(path, tmp_path / f"b{rows}.gpkg", band_rows=rows)
        assert banded.polygons_by_class == whole.polygons_by_class
        a = sorted(round(f["area"], 6) for f in features(whole.path))
        b = sorted(round(f["area"], 6) for f in features(banded.path))
        assert a == b


def test_shape_spanning_bands_is_one_polygon_with_its_hole(tmp_path: Path) -> None:
    arr = np.zeros((30, 20), np.uint8)
    arr[2:27, 3:17] = 1  # crosses the seams at rows 4, 8, ..., 24
    arr[9:18, 7:12] = 2  # a hole of another class, itself across two seams
    arr[12:14, 9:10] = 255  # a nodata hole inside the hole
    result = polygonize_class_map(
        class_map(tmp_path / "m.tif", arr), tmp_path / "m.geojson", band_rows=4
    )
    groups = by_class(features(result.path))
    (ring,) = groups[1]
    poly = ring["geometry"]
    assert len(poly.interiors) == 1
    assert poly.area == pytest.approx(float((arr == 1).sum()) * PIXEL_AREA)
    (hole,) = groups[2]
    assert len(hole["geometry"].interiors) == 1
    (background,) = groups[0]
    assert len(background["geometry"].interiors) == 1


def test_u_and_cap_shapes_dissolve_across_seams(tmp_path: Path) -> None:
    arr = np.zeros((12, 20), np.uint8)
    arr[0:8, 1:3] = 1  # U: two arms in the band above, joined below
    arr[0:8, 6:8] = 1
    arr[6:8, 1:8] = 1
    arr[4:12, 11:13] = 2  # cap: joined above, two legs below
    arr[4:12, 16:18] = 2
    arr[4:6, 11:18] = 2
    result = polygonize_class_map(
        class_map(tmp_path / "u.tif", arr), tmp_path / "u.gpkg", band_rows=5
    )
    assert result.polygons_by_class[1] == 1
    assert result.polygons_by_class[2] == 1


def test_corner_contact_across_seam_stays_two_polygons(tmp_path: Path) -> None:
    arr = np.zeros((4, 4), np.uint8)
    arr[1, 1] = 1
    arr[2, 2] = 1  # diagonal neighbour just below the seam at row 2
    result = polygonize_class_map(
        class_map(tmp_path / "c.tif", arr), tmp_path / "c.gpkg", band_rows=2
    )
    assert result.polygons_by_class[1] == 2
    assert all(f["geometry"].is_valid for f in features(result.path))


@pytest.mark.parametrize("name", ["out.gpkg", "out.geojson", "out.json", "out.shp"])
def test_formats_keep_crs_and_attributes(
    random_map: tuple[Path, np.ndarray], tmp_path: Path, name: str
) -> None:
    path, _ = random_map
    out = tmp_path / "vec" / name
    out.parent.mkdir()
    result = polygonize_class_map(path, out, band_rows=7)
    with fiona.open(out) as src:
        assert src.crs.to_epsg() == 32633
        assert len(src) == result.polygons
        first = next(iter(src))
        assert set(first.properties) == {"class_id", "class_name", "area"}
        if not name.endswith(".shp"):
            assert src.name == "out"
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []
    assert result.crs == "EPSG:32633"


def test_min_area_drops_and_counts_small_polygons(tmp_path: Path) -> None:
    arr = np.zeros((10, 10), np.uint8)
    arr[1, 1] = 1  # 1 pixel
    arr[4:8, 4:8] = 1  # 16 pixels
    path = class_map(tmp_path / "s.tif", arr)
    result = polygonize_class_map(path, tmp_path / "s.gpkg", min_area=5 * PIXEL_AREA, band_rows=3)
    assert result.dropped == 1
    assert result.polygons_by_class == {0: 1, 1: 1}
    assert result.area_by_class[1] == pytest.approx(16 * PIXEL_AREA)


def test_simplify_keeps_valid_polygons_with_fewer_vertices(
    random_map: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, _ = random_map
    exact = features(polygonize_class_map(path, tmp_path / "e.gpkg").path)
    simple = features(polygonize_class_map(path, tmp_path / "s.gpkg", simplify=15.0).path)
    assert len(simple) == len(exact)
    assert all(f["geometry"].is_valid for f in simple)
    n_exact = sum(len(f["geometry"].exterior.coords) for f in exact)
    n_simple = sum(len(f["geometry"].exterior.coords) for f in simple)
    assert n_simple < n_exact


def test_geographic_crs_warns_about_square_degrees(tmp_path: Path) -> None:
    arr = np.zeros((6, 6), np.uint8)
    arr[2:4, 2:4] = 1
    events: list[ProgressEvent] = []
    result = polygonize_class_map(
        class_map(tmp_path / "g.tif", arr, crs="EPSG:4326"),
        tmp_path / "g.gpkg",
        progress=events.append,
    )
    assert result.geographic and result.area_units == "degree²"
    assert any(e.level == "warning" and "square degrees" in e.message for e in events)
    kinds = [e.kind for e in events if e.task == "polygonize"]
    assert kinds[0] == "start" and kinds[-1] == "end"
    with fiona.open(result.path) as src:
        assert src.crs.to_epsg() == 4326


def test_output_errors(random_map: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, _ = random_map
    with pytest.raises(ConfigError, match=r"\.gpkg, \.geojson, \.json, \.shp"):
        polygonize_class_map(path, tmp_path / "out.kml")
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(OutputError, match="cannot create the folder"):
        polygonize_class_map(path, tmp_path / "a_file" / "out.gpkg")
    assert polygonize_class_map(path, tmp_path / "new" / "out.gpkg").path.exists()  # folders are made
    out = tmp_path / "out.shp"
    polygonize_class_map(path, out)
    with pytest.raises(OutputExistsError, match="overwrite"):
        polygonize_class_map(path, out)
    (tmp_path / "out.qix").write_bytes(b"stale index")
    result = polygonize_class_map(path, out, overwrite=True, min_area=1e9)
    assert result.polygons == 0
    with fiona.open(out) as src:
        assert len(src) == 0
    assert not (tmp_path / "out.qix").exists()
