"""geoclass predict --batch: a list of scenes, one map each, a VRT over the maps."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from typer.testing import CliRunner

from geoclass.cli.app import app
from geoclass.engine.predict import (
    BatchResult,
    PredictConfig,
    PredictResult,
    SkippedMap,
    predict,
    predict_batch,
    read_batch_list,
)
from geoclass.errors import (
    BandError,
    ConfigError,
    InputNotFoundError,
    Interrupted,
    OutputExistsError,
)
from geoclass.progress import ProgressEvent
from tests.conftest import UTM_TRANSFORM, make_raster
from tests.engine.test_predict import make_model, smooth_image

H, W = 48, 64
OPTS: dict[str, Any] = {"workers": 1, "batch_size": 16, "device": "cpu"}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_model(tmp_path / "cnn.safetensors", "cnn", chip=16)


def east(columns: int) -> Affine:
    """The test grid moved ``columns`` pixels east."""
    return UTM_TRANSFORM * Affine.translation(columns, 0)


def scene(path: Path, seed: int, *, bands: int = 3, height: int = H, **kw: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_raster(path, smooth_image(bands, height, W, seed=seed), **kw)


def write_list(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def batch(items: Any, out: Path, model: Path, progress: Any = None, **kw: Any) -> BatchResult:
    config = PredictConfig(scenes=[], output=out, model=model, **{**OPTS, **kw})
    return predict_batch(items, out, config, progress)


def single(scenes: Any, out: Path, model: Path) -> PredictResult:
    return predict(PredictConfig(scenes=scenes, output=out, model=model, **OPTS))


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def notes(events: list[ProgressEvent]) -> list[str]:
    return [e.message for e in events if e.kind == "message"]


# --- the batch --------------------------------------------------------------------------------


def test_two_scenes_give_the_maps_of_single_runs_and_a_vrt(tmp_path: Path, model: Path) -> None:
    a = scene(tmp_path / "in" / "west.tif", 1)
    b = scene(tmp_path / "in" / "east.tif", 2, transform=east(W))
    listing = write_list(tmp_path / "in" / "scenes.txt", "west.tif", "east.tif")
    events: list[ProgressEvent] = []
    out = tmp_path / "out" / "maps"  # created

    res = batch(listing, out, model, events.append)

    assert [r.output for r in res.results] == [out / "west.tif", out / "east.tif"]
    assert all(isinstance(r, PredictResult) for r in res.results)
    assert res.vrt == out / "mosaic.vrt" and res.vrt_reason is None and res.seconds > 0
    for src, name in ((a, "west"), (b, "east")):
        ref = single(src, tmp_path / "ref" / f"{name}.tif", model)
        assert read(ref.output).tobytes() == read(out / f"{name}.tif").tobytes()
    with rasterio.open(res.vrt) as ds:
        assert (ds.width, ds.height) == (2 * W, H)
        assert ds.bounds == (300000.0, 5800000.0 - 10 * H, 300000.0 + 20 * W, 5800000.0)
        assert ds.read(1).tobytes() == np.hstack([read(out / "west.tif"), read(out / "east.tif")]).tobytes()
    said = notes(events)
    assert any(m.startswith("scene 1/2: ") and "west.tif" in m for m in said)
    assert any(m.startswith("scene 2/2: ") and "east.tif" in m for m in said)
    assert sum(e.kind == "start" and e.task == "predict" for e in events) == 2  # predict's own


def test_a_line_of_band_files_is_stacked(tmp_path: Path, model: Path) -> None:
    img = smooth_image(3, H, W, seed=4)
    bands = [make_raster(tmp_path / name, img[i]) for i, name in enumerate(["red band.tif", "g.tif", "b.tif"])]
    listing = write_list(tmp_path / "list.txt", '"red band.tif"   g.tif\tb.tif')

    res = batch(listing, tmp_path / "out", model)

    assert res.maps == [tmp_path / "out" / "red band.tif"]
    ref = single([str(p) for p in bands], tmp_path / "ref.tif", model)
    assert read(ref.output).tobytes() == read(res.maps[0]).tobytes()
    from_python = batch([bands], tmp_path / "out2", model)  # the scenes as a list, no file
    assert read(from_python.maps[0]).tobytes() == read(ref.output).tobytes()


def test_list_skips_comments_and_blank_lines_and_reads_paths_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "lists"
    scene(folder / "a.tif", 1)
    scene(folder / "sub" / "b1.tif", 2, bands=1)
    scene(folder / "sub" / "b2.tif", 3, bands=1)
    listing = write_list(
        folder / "scenes.txt",
        "# summer 2023",
        "",
        "a.tif",
        "   # an indented comment",
        "   ",
        "sub/b1.tif sub/b2.tif",
        "/vsicurl/https://example.com/data/c.tif",
    )
    monkeypatch.chdir(tmp_path)  # relative to the list's folder, not to the working one

    assert read_batch_list(Path("lists") / "scenes.txt") == [
        [str(Path("lists") / "a.tif")],
        [str(Path("lists") / "sub" / "b1.tif"), str(Path("lists") / "sub" / "b2.tif")],
        ["/vsicurl/https://example.com/data/c.tif"],  # GDAL paths are kept as given
    ]
    assert read_batch_list(listing)[0] == [str(folder / "a.tif")]


def test_missing_scene_names_the_list_and_its_line(tmp_path: Path, model: Path) -> None:
    scene(tmp_path / "a.tif", 1)
    listing = write_list(tmp_path / "l.txt", "# header", "a.tif", "gone.tif")
    with pytest.raises(InputNotFoundError) as err:
        batch(listing, tmp_path / "out", model)
    assert str(err.value) == f"{listing}: line 3: {tmp_path / 'gone.tif'} not found"
    assert not (tmp_path / "out" / "a.tif").exists()


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        (None, InputNotFoundError, "batch list not found"),
        ("# only a comment\n\n", ConfigError, "lists no scene"),
        ('"a.tif\n', ConfigError, "line 1: No closing quotation"),
        (b"II*\x00\xff\xfe\x00", ConfigError, "not a text file"),
    ],
)
def test_unusable_list_is_one_line(tmp_path: Path, text: Any, error: type, match: str) -> None:
    listing = tmp_path / "l.txt"
    if isinstance(text, bytes):
        listing.write_bytes(text)
    elif text is not None:
        listing.write_text(text)
    with pytest.raises(error, match=match) as err:
        read_batch_list(listing)
    assert "\n" not in str(err.value) and str(listing) in str(err.value)


def test_two_scenes_with_the_same_map_name(tmp_path: Path) -> None:
    scene(tmp_path / "2022" / "T33UUU.tif", 1)
    scene(tmp_path / "2023" / "T33UUU.tif", 2)
    listing = write_list(tmp_path / "l.txt", "2022/T33UUU.tif", "# 2023:", "2023/T33UUU.tif")
    with pytest.raises(ConfigError, match=r"l\.txt: lines 1 and 3 would both write T33UUU\.tif"):
        read_batch_list(listing)


def test_existing_map_stops_the_batch_before_any_map(tmp_path: Path, model: Path) -> None:
    scene(tmp_path / "a.tif", 1)
    scene(tmp_path / "b.tif", 2)
    listing = write_list(tmp_path / "l.txt", "a.tif", "b.tif")
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.tif").write_bytes(b"an earlier map")
    with pytest.raises(OutputExistsError, match=r"b\.tif: already exists .*--overwrite.*--resume"):
        batch(listing, out, model)
    assert sorted(p.name for p in out.iterdir()) == ["b.tif"]  # a.tif was not begun
    res = batch(listing, out, model, overwrite=True)
    assert res.vrt is not None and read(out / "b.tif").shape == (H, W)


def test_scene_that_does_not_fit_the_model_stops_the_batch_before_any_map(
    tmp_path: Path, model: Path
) -> None:
    scene(tmp_path / "a.tif", 1)
    scene(tmp_path / "four.tif", 2, bands=4)
    listing = write_list(tmp_path / "l.txt", "a.tif", "four.tif")
    with pytest.raises(BandError, match=r"l\.txt: line 2: .*four\.tif has 4 bands, the model expects 3"):
        batch(listing, tmp_path / "out", model)
    assert not (tmp_path / "out").exists()  # made only once every scene has passed


def test_resume_skips_finished_maps_and_continues_an_interrupted_one(
    tmp_path: Path, model: Path
) -> None:
    scene(tmp_path / "a.tif", 1)
    scene(tmp_path / "tall.tif", 2, height=600, transform=east(W))  # several 256-row strips
    listing = write_list(tmp_path / "l.txt", "a.tif", "tall.tif")
    opts = {"strategy": "windows"}  # hundreds of windows: the Ctrl-C comes after a strip
    clean = batch(listing, tmp_path / "clean", model, **opts)
    tall_windows = clean.results[1].windows  # type: ignore[union-attr]
    assert tall_windows > 100

    out = tmp_path / "out"
    with pytest.raises(Interrupted, match="stopped at row 256 of 600; .*--resume"):
        batch(listing, out, model, stop_in_second_scene(int(tall_windows * 0.7)), **opts)
    assert (out / "a.tif").exists() and not (out / "tall.tif").exists()
    first_map = (out / "a.tif").stat().st_mtime_ns

    events: list[ProgressEvent] = []
    res = batch(listing, out, model, events.append, resume=True, **opts)

    skipped, resumed = res.results
    assert isinstance(skipped, SkippedMap) and skipped.output == out / "a.tif"
    assert (out / "a.tif").stat().st_mtime_ns == first_map
    assert any("a.tif is already finished; skipped" in m for m in notes(events))
    assert isinstance(resumed, PredictResult) and resumed.resumed_from_row > 0
    for name in ("a.tif", "tall.tif"):
        assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()
    assert res.vrt is not None

    again = batch(listing, out, model, resume=True, **opts)
    assert all(isinstance(r, SkippedMap) for r in again.results) and again.vrt == res.vrt


def test_ctrl_c_between_maps_says_how_to_resume(tmp_path: Path, model: Path) -> None:
    scene(tmp_path / "a.tif", 1)
    scene(tmp_path / "b.tif", 2)
    listing = write_list(tmp_path / "l.txt", "a.tif", "b.tif")
    with pytest.raises(Interrupted, match=r"b\.tif: stopped with 1 of 2 maps finished; .*--resume"):
        batch(listing, tmp_path / "out", model, stop_in_second_scene(0))  # before its first row
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.tif"]


def stop_in_second_scene(windows: int) -> Callable[[ProgressEvent], None]:
    """Ctrl-C after ``windows`` windows of the batch's second scene (0: as its windows start)."""
    seen, second = 0, False

    def callback(event: ProgressEvent) -> None:
        nonlocal seen, second
        second = second or event.message.startswith("scene 2/")
        if second and event.kind in ("start", "advance"):
            seen += int(event.step) if event.kind == "advance" else 0
            if seen >= windows:
                raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize("confidence", [False, True])
def test_maps_on_different_grids_give_no_vrt_and_say_why(
    tmp_path: Path, model: Path, confidence: bool
) -> None:
    scene(tmp_path / "utm.tif", 1)
    scene(tmp_path / "geo.tif", 2, crs="EPSG:4326")
    listing = write_list(tmp_path / "l.txt", "utm.tif", "geo.tif")
    events: list[ProgressEvent] = []
    out = tmp_path / "out"

    res = batch(listing, out, model, events.append, confidence=confidence)

    assert [p.name for p in res.maps] == ["utm.tif", "geo.tif"] and all(p.exists() for p in res.maps)
    assert res.vrt is None and not (out / "mosaic.vrt").exists()
    assert res.vrt_reason is not None
    assert "not on one grid" in res.vrt_reason and "EPSG:4326" in res.vrt_reason
    if confidence:  # the maps, not their confidence files, picked by confidence
        assert "! -name '*.confidence.tif'" in res.vrt_reason and "--method max-confidence" in res.vrt_reason
    else:
        assert f"geoclass mosaic {out}/*.tif -o mosaic.tif" in res.vrt_reason
    assert any(m.startswith(f"{out / 'mosaic.vrt'}: not written") for m in notes(events))


def test_previews_go_to_a_folder_and_single_file_outputs_are_refused(
    tmp_path: Path, model: Path
) -> None:
    scene(tmp_path / "a.tif", 1)
    listing = write_list(tmp_path / "l.txt", "a.tif")
    out = tmp_path / "out"
    res = batch(listing, out, model, preview=out, confidence=True)
    assert res.results[0].preview == out / "a.png" and (out / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "a.confidence.tif").exists()

    (out / "a.png").unlink()  # a resumed batch renders a missing preview of a finished map
    res = batch(listing, out, model, preview=out, confidence=True, resume=True)
    assert isinstance(res.results[0], SkippedMap) and (out / "a.png").exists()

    with pytest.raises(ConfigError, match="preview names a folder"):
        batch(listing, tmp_path / "o2", model, preview=tmp_path / "a.png")
    for option in ({"probabilities": tmp_path / "p.tif"}, {"vector": tmp_path / "v.gpkg"}):
        with pytest.raises(ConfigError, match="does not apply to a batch"):
            batch(listing, tmp_path / "o3", model, **option)
    with pytest.raises(ConfigError, match="give a folder name"):
        batch(listing, tmp_path / "maps.tif", model)


# --- CLI --------------------------------------------------------------------------------------


def test_cli_batch(tmp_path: Path, model: Path) -> None:
    scene(tmp_path / "a.tif", 1)
    scene(tmp_path / "b.tif", 2, transform=east(W))
    listing = write_list(tmp_path / "l.txt", "a.tif", "b.tif")
    out = tmp_path / "maps"
    args = ["predict", "--batch", str(listing), "-o", str(out), "-m", str(model), "-j", "1", "--device", "cpu"]
    runner = CliRunner()

    result = runner.invoke(app, args)

    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(out / "a.tif"), str(out / "b.tif"), str(out / "mosaic.vrt")]
    assert f"{W}x{H} px" in lines[0] and "VRT over the 2 maps" in lines[2]

    js = runner.invoke(app, [*args, "--resume", "--json"])
    assert js.exit_code == 0, js.output
    doc = json.loads(js.stdout)
    assert [r["output"] for r in doc["results"]] == [str(out / "a.tif"), str(out / "b.tif")]
    assert doc["vrt"] == str(out / "mosaic.vrt") and doc["vrt_reason"] is None

    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert again.stderr.strip().splitlines() == [
        f"error: {out / 'a.tif'}: already exists (pass --overwrite to replace it, or --resume to keep "
        "the finished maps and do the rest)"
    ]
    bad = runner.invoke(app, [*args, "--overwrite", "--probabilities", str(tmp_path / "p.tif")])
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("scene_args", [["a.tif"], []])
def test_cli_needs_scene_or_batch_but_not_both(tmp_path: Path, scene_args: list[str]) -> None:
    batch_args = ["--batch", str(write_list(tmp_path / "l.txt", "a.tif"))] if scene_args else []
    result = CliRunner().invoke(app, ["predict", *scene_args, "-o", str(tmp_path / "out"), *batch_args])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    said = [line for line in result.stderr.splitlines() if "--batch" in line]
    assert len(said) == 1
    assert ("not both" if scene_args else "give a SCENE or --batch LIST.txt") in said[0]
    assert not (tmp_path / "out").exists()
