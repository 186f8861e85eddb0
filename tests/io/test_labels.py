"""Labels onto a scene's grid: class files, class resolution, vector and raster labels."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fiona
import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.warp import transform_geom
from rasterio.windows import Window

from geoclass.errors import ConfigError, InputNotFoundError, LabelError
from geoclass.io.labels import (
    UNLABELLED,
    RasterLabels,
    VectorLabels,
    open_labels,
    read_class_file,
    resolve_classes,
)
from geoclass.io.reader import open_scene
from geoclass.progress import ProgressEvent
from tests.conftest import UTM_CRS, UTM_TRANSFORM, make_raster

X0, Y0, RES = UTM_TRANSFORM.c, UTM_TRANSFORM.f, UTM_TRANSFORM.a


def px_box(col0: float, row0: float, col1: float, row1: float) -> shapely.Polygon:
    """A rectangle in scene pixel coordinates, as a UTM polygon."""
    return shapely.box(X0 + col0 * RES, Y0 - row1 * RES, X0 + col1 * RES, Y0 - row0 * RES)


def write_vector(
    path: Path,
    features: Sequence[tuple[Any, dict[str, Any]]],
    crs: str | None = UTM_CRS,
    driver: str = "GPKG",
    geometry: str = "Polygon",
) -> Path:
    """Write (shapely geometry, properties) pairs with fiona; geometries in ``crs``."""
    props: dict[str, str] = {}
    for _, p in features:
        for k, v in p.items():
            props.setdefault(k, "int" if isinstance(v, int) else "float" if isinstance(v, float) else "str")
    schema = {"geometry": geometry, "properties": props}
    kwargs: dict[str, Any] = {"crs": crs} if crs else {}
    with fiona.open(path, "w", driver=driver, schema=schema, **kwargs) as dst:
        for geom, p in features:
            dst.write(fiona.Feature(geometry=fiona.Geometry.from_dict(shapely.geometry.mapping(geom)),
                                    properties={k: p.get(k) for k in props}))
    return path


@pytest.fixture
def scene64(tmp_path: Path):
    path = make_raster(tmp_path / "scene.tif", np.ones((2, 64, 64), np.uint8))
    with open_scene(path) as scene:
        yield scene


def full(labels: Any, scene: Any) -> np.ndarray:
    out = labels.read(Window(0, 0, scene.width, scene.height))
    return np.full((scene.height, scene.width), UNLABELLED, np.uint8) if out is None else out


# --- class files and resolution ---------------------------------------------------------------


def test_class_file_forms(tmp_path: Path) -> None:
    lines = tmp_path / "c.txt"
    lines.write_text("# my classes\nwater\n\ncrop\n")
    assert read_class_file(lines) == ["water", "crop"]
    js = tmp_path / "c.json"
    js.write_text(json.dumps(["a", "b"]))
    assert read_class_file(js) == ["a", "b"]
    obj = tmp_path / "o.json"
    obj.write_text(json.dumps({"water": 3, "crop": 1}))
    assert read_class_file(obj) == {"water": 3, "crop": 1}


@pytest.mark.parametrize("text", ["", "a\na\n", "{not json", "[1.5, {}]"])
def test_bad_class_files(tmp_path: Path, text: str) -> None:
    f = tmp_path / "c.txt"
    f.write_text(text)
    with pytest.raises(ConfigError):
        read_class_file(f)


def test_missing_class_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        read_class_file(tmp_path / "nope.txt")


def test_classes_default_sorted_and_numeric_as_strings() -> None:
    r = resolve_classes(["b", "a", None, "", "b"])
    assert r.classes == ["a", "b"] and r.lookup == {"a": 0, "b": 1}
    r = resolve_classes([10, 2, 2.0, 7])
    assert r.classes == ["2", "7", "10"]  # numeric order, integral floats without ".0"
    assert r.lookup[2.0] == 0 and r.lookup[10] == 2


def test_classes_given_as_list() -> None:
    r = resolve_classes(["crop", "water", "cloud"], ["water", "crop"])
    assert r.classes == ["water", "crop"] and r.lookup == {"crop": 1, "water": 0}
    assert r.unknown == ["cloud"]
    # Numeric values that are not names are class ids.
    r = resolve_classes([0, 1, 5], ["water", "crop"])
    assert r.lookup == {0: 0, 1: 1} and r.unknown == [5]
    # ... unless every value is a name.
    r = resolve_classes([10, 20], ["20", "10"])
    assert r.lookup == {10: 1, 20: 0}


def test_classes_given_as_mapping() -> None:
    r = resolve_classes([3, 1, 2], {"water": 3, "crop": 1})
    assert r.classes == ["crop", "water"] and r.lookup == {1: 0, 3: 1} and r.unknown == [2]
    r = resolve_classes(["W", "C"], {"Water": "W", "Crop": "C"})
    assert r.classes == ["Crop", "Water"] and r.lookup == {"C": 0, "W": 1}


def test_too_many_classes() -> None:
    with pytest.raises(LabelError, match="at most 255"):
        resolve_classes(range(300))


# --- vector labels ----------------------------------------------------------------------------


def test_vector_labels_match_a_full_rasterisation(tmp_path: Path, scene64) -> None:
    feats = [(px_box(0, 0, 20, 30), {"cls": "water"}), (px_box(10, 10, 50, 40), {"cls": "crop"}),
             (px_box(55, 55, 64, 64), {"cls": "water"})]
    path = write_vector(tmp_path / "l.gpkg", feats)
    labels = VectorLabels(path, scene64, "cls")
    assert labels.classes == ["crop", "water"]
    expected = rasterize([(g, labels.classes.index(p["cls"])) for g, p in feats], out_shape=(64, 64),
                         transform=UTM_TRANSFORM, fill=UNLABELLED, dtype="uint8")
    np.testing.assert_array_equal(full(labels, scene64), expected)
    for win in (Window(8, 8, 16, 16), Window(48, 0, 16, 16), Window(40, 44, 24, 20)):
        got = labels.read(win)
        sub = expected[win.row_off: win.row_off + win.height, win.col_off: win.col_off + win.width]
        if (sub == UNLABELLED).all():
            assert got is None or (got == UNLABELLED).all()
        else:
            np.testing.assert_array_equal(got, sub)


def test_window_without_features_is_none(tmp_path: Path, scene64) -> None:
    path = write_vector(tmp_path / "l.geojson", [(px_box(0, 0, 8, 8), {"c": "a"})], driver="GeoJSON")
    labels = open_labels(path, scene64)  # a single field is picked without asking
    assert labels.read(Window(32, 32, 16, 16)) is None
    assert (labels.read(Window(0, 0, 16, 16))[:8, :8] == 0).all()


def test_vector_labels_in_another_crs_are_reprojected(tmp_path: Path, scene64) -> None:
    feats = [(px_box(4, 4, 36, 28), {"c": "a"}), (px_box(30, 30, 60, 62), {"c": "b"})]
    utm = VectorLabels(write_vector(tmp_path / "utm.gpkg", feats), scene64, "c")
    geo_feats = [(shapely.geometry.shape(transform_geom(UTM_CRS, "EPSG:4326", shapely.geometry.mapping(g))), p)
                 for g, p in feats]
    events: list[ProgressEvent] = []
    geo = VectorLabels(write_vector(tmp_path / "geo.gpkg", geo_feats, crs="EPSG:4326"), scene64, "c",
                       progress=events.append)
    assert any("reprojected from EPSG:4326" in e.message for e in events)
    a, b = full(utm, scene64), full(geo, scene64)
    # Straight edges stay straight to well under a pixel at this scale: allow a few edge pixels.
    assert (a != b).sum() <= 4


def test_vector_label_errors(tmp_path: Path, scene64) -> None:
    path = write_vector(tmp_path / "l.gpkg", [(px_box(0, 0, 8, 8), {"name": "a", "code": 1})])
    with pytest.raises(LabelError, match="fields are: name, code"):
        open_labels(path, scene64, field="klass")
    with pytest.raises(LabelError, match="--label-field"):
        open_labels(path, scene64)
    empty = write_vector(tmp_path / "e.gpkg", [(px_box(0, 0, 8, 8), {"name": ""}),
                                               (px_box(8, 8, 16, 16), {"name": None})])
    with pytest.raises(LabelError, match="no usable values"):
        open_labels(empty, scene64, field="name")
    far = write_vector(tmp_path / "far.gpkg", [(px_box(1000, 1000, 1010, 1010), {"name": "a"})])
    with pytest.raises(LabelError, match=r"do not overlap the scene \(bounds \(300000, 5799360"):
        open_labels(far, scene64, field="name")
    with pytest.raises(LabelError, match="none of the values"):
        open_labels(path, scene64, field="name", classes=["x", "y"])
    with pytest.raises(InputNotFoundError):
        open_labels(tmp_path / "missing.gpkg", scene64)


def test_vector_points_burn_their_pixel(tmp_path: Path, scene64) -> None:
    pt = shapely.Point(X0 + 10.5 * RES, Y0 - 20.5 * RES)
    path = write_vector(tmp_path / "p.gpkg", [(pt, {"c": "a"})], geometry="Point")
    labels = open_labels(path, scene64)
    arr = full(labels, scene64)
    assert arr[20, 10] == 0 and (arr != UNLABELLED).sum() == 1


def test_classes_ignored_values_warn(tmp_path: Path, scene64) -> None:
    path = write_vector(tmp_path / "l.gpkg", [(px_box(0, 0, 8, 8), {"c": "a"}), (px_box(8, 8, 16, 16), {"c": "b"})])
    events: list[ProgressEvent] = []
    labels = open_labels(path, scene64, classes=["b", "z"], progress=events.append)
    assert labels.classes == ["b", "z"]
    arr = full(labels, scene64)
    assert (arr[:8, :8] == UNLABELLED).all() and (arr[8:16, 8:16] == 0).all()
    assert any(e.level == "warning" and "'a'" in e.message for e in events)


# --- raster labels ----------------------------------------------------------------------------


def test_raster_labels_same_grid(tmp_path: Path, scene64) -> None:
    arr = np.zeros((64, 64), np.uint8)
    arr[:, 32:] = 7
    arr[:8] = 9  # nodata
    path = make_raster(tmp_path / "lab.tif", arr, nodata=9)
    labels = open_labels(path, scene64)
    assert isinstance(labels, RasterLabels) and labels.same_grid
    assert labels.classes == ["0", "7"]
    got = full(labels, scene64)
    assert (got[:8] == UNLABELLED).all()
    assert (got[8:, :32] == 0).all() and (got[8:, 32:] == 1).all()


def test_raster_labels_on_another_grid(tmp_path: Path, scene64) -> None:
    # 5 m pixels on a grid that starts 50 m outside the scene: warped by nearest neighbour.
    fine = np.full((200, 200), 2, np.uint8)
    fine[:, 70:] = 4  # x >= X0 - 50 + 70 * 5 = X0 + 300: scene column 30 onwards
    t = Affine(5.0, 0.0, X0 - 50.0, 0.0, -5.0, Y0 + 50.0)
    path = make_raster(tmp_path / "fine.tif", fine, transform=t)
    labels = open_labels(path, scene64, classes={"grass": 2, "forest": 4})
    assert not labels.same_grid and labels.classes == ["grass", "forest"]
    got = full(labels, scene64)
    assert (got[:, :30] == 0).all() and (got[:, 30:] == 1).all()


def test_raster_labels_partly_outside_are_unlabelled(tmp_path: Path, scene64) -> None:
    small = np.ones((32, 32), np.uint8)
    t = Affine(RES, 0.0, X0 + 16 * RES, 0.0, -RES, Y0 - 16 * RES)
    path = make_raster(tmp_path / "small.tif", small, transform=t)  # no nodata: alpha decides
    labels = open_labels(path, scene64)
    got = full(labels, scene64)
    assert (got[16:48, 16:48] == 0).all()
    assert (got[:16] == UNLABELLED).all() and (got[:, 48:] == UNLABELLED).all()


def test_raster_labels_in_another_crs(tmp_path: Path, scene64) -> None:
    from rasterio.warp import calculate_default_transform, reproject

    arr = np.zeros((64, 64), np.uint8)
    arr[:, 32:] = 1
    dst_t, w, h = calculate_default_transform(UTM_CRS, "EPSG:4326", 64, 64, *scene64.bounds)
    geo = np.zeros((h, w), np.uint8)
    reproject(arr, geo, src_transform=UTM_TRANSFORM, src_crs=UTM_CRS, dst_transform=dst_t,
              dst_crs="EPSG:4326", resampling=0)
    path = make_raster(tmp_path / "geo.tif", geo, crs="EPSG:4326", transform=dst_t)
    events: list[ProgressEvent] = []
    labels = open_labels(path, scene64, progress=events.append)
    got = full(labels, scene64)
    assert any("warped from EPSG:4326" in e.message for e in events)
    # Two warps by nearest neighbour: the class edge may move by a pixel.
    assert (got[2:-2, 2:30] == 0).all() and (got[2:-2, 34:-2] == 1).all()


def test_raster_label_errors(tmp_path: Path, scene64) -> None:
    far = Affine(RES, 0.0, X0 + 1e5, 0.0, -RES, Y0)
    path = make_raster(tmp_path / "far.tif", np.ones((8, 8), np.uint8), transform=far)
    with pytest.raises(LabelError, match="do not overlap the scene"):
        open_labels(path, scene64)
    floats = make_raster(tmp_path / "f.tif", np.full((64, 64), 0.5, np.float32))
    with pytest.raises(LabelError, match="non-integer"):
        open_labels(floats, scene64)
    allnd = make_raster(tmp_path / "nd.tif", np.zeros((64, 64), np.uint8), nodata=0)
    with pytest.raises(LabelError, match="no value other than nodata"):
        open_labels(allnd, scene64)


def test_raster_labels_by_id_with_a_name_list(tmp_path: Path, scene64) -> None:
    arr = np.zeros((64, 64), np.uint8)
    arr[32:] = 1
    arr[:, :4] = 3  # not a class: unlabelled
    path = make_raster(tmp_path / "ids.tif", arr)
    labels = open_labels(path, scene64, classes=["water", "crop"])
    got = full(labels, scene64)
    assert labels.classes == ["water", "crop"]
    assert (got[:32, 4:] == 0).all() and (got[32:, 4:] == 1).all() and (got[:, :4] == UNLABELLED).all()


def test_labels_cannot_be_placed_on_a_scene_without_crs(tmp_path: Path) -> None:
    scene_path = make_raster(tmp_path / "plain.tif", np.ones((1, 16, 16), np.uint8), crs=None)
    path = write_vector(tmp_path / "l.gpkg", [(px_box(0, 0, 8, 8), {"c": "a"})])
    with open_scene(scene_path) as scene, pytest.raises(LabelError, match="scene has no CRS"):
        open_labels(path, scene)


def test_crs_objects_compare() -> None:
    # Guard for the reprojection decision: same CRS given two ways is not reprojected.
    assert CRS.from_epsg(32633) == CRS.from_user_input(UTM_CRS)


def test_class_scan_covers_only_the_scene(tmp_path: Path, scene64) -> None:
    big = np.full((192, 192), 5, np.uint8)  # 3x the scene, centred on it
    big[64:128, 64:128] = 1
    big[:10, :10] = 9  # a value that only occurs far outside the scene
    t = Affine(RES, 0.0, X0 - 64 * RES, 0.0, -RES, Y0 + 64 * RES)
    labels = open_labels(make_raster(tmp_path / "big.tif", big, transform=t), scene64)
    assert labels.classes == ["1", "5"]  # 5 sits in the 1-pixel margin the scan reads
    assert (full(labels, scene64) == 0).all()


def test_mixed_points_and_polygons(tmp_path: Path, scene64) -> None:
    feats = [(px_box(0, 0, 16, 16), {"c": "poly"}),
             (shapely.Point(X0 + 40.5 * RES, Y0 - 40.5 * RES), {"c": "pt"})]
    labels = open_labels(write_vector(tmp_path / "mixed.gpkg", feats, geometry="Unknown"), scene64)
    arr = full(labels, scene64)
    poly, pt = labels.classes.index("poly"), labels.classes.index("pt")
    assert (arr[:16, :16] == poly).all() and (arr == poly).sum() == 256  # polygons: centres only
    assert arr[40, 40] == pt and (arr == pt).sum() == 1


def test_invalid_geometries_are_repaired(tmp_path: Path, scene64) -> None:
    bowtie = shapely.Polygon([(X0, Y0), (X0 + 320, Y0 - 320), (X0 + 320, Y0), (X0, Y0 - 320)])
    events: list[ProgressEvent] = []
    labels = open_labels(write_vector(tmp_path / "bow.gpkg", [(bowtie, {"c": "a"})]), scene64,
                         progress=events.append)
    assert any("repaired" in e.message for e in events)
    assert (full(labels, scene64) == 0).sum() > 300


def test_coordinates_outside_the_declared_crs(tmp_path: Path, scene64) -> None:
    # UTM coordinates in a file that says WGS84 (a GeoJSON without a crs member).
    path = tmp_path / "wrong.geojson"
    feat = {"type": "Feature", "properties": {"c": "a"}, "geometry": shapely.geometry.mapping(px_box(0, 0, 8, 8))}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feat]}))
    with pytest.raises(LabelError, match="cannot be reprojected from EPSG:4326"):
        open_labels(path, scene64)
