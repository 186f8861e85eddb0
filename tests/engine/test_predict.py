"""geoclass predict: tiled inference, blending, georeferencing, outputs, atomicity and resume."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning
from typer.testing import CliRunner

from geoclass.cli.app import app
from geoclass.engine.predict import PredictConfig, PredictResult, predict
from geoclass.errors import (
    BandError,
    ConfigError,
    Interrupted,
    OutputError,
    OutputExistsError,
    RasterOpenError,
)
from geoclass.io.class_map import read_class_metadata
from geoclass.io.raster_writer import confidence_path, partial_path
from geoclass.models.model_file import ModelMeta, load_model_file, save_model_file
from geoclass.models.registry import architecture_task, create_model
from geoclass.progress import ProgressEvent
from tests.conftest import SHARED_DATA, make_raster, needs_shared_data

CLASSES = ["water", "forest", "crop", "urban"]


def make_model(
    path: Path,
    arch: str = "fcn",
    *,
    in_chans: int = 3,
    chip: int = 64,
    classes: list[str] = CLASSES,
    seed: int = 0,
    **meta: Any,
) -> Path:
    """A tiny untrained model with weights sharp enough to give varied classes."""
    torch.manual_seed(seed)
    model = create_model(arch, len(classes), in_chans, chip_size=chip)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    save_model_file(
        path,
        model,
        ModelMeta(
            architecture=arch,
            task=architecture_task(arch),
            classes=list(classes),
            in_chans=in_chans,
            chip_size=chip,
            mean=[110.0] * in_chans,
            std=[50.0] * in_chans,
            **meta,
        ),
    )
    return path


def smooth_image(bands: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 image with structure at several scales (so windows see different classes)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((bands, height // 16 + 2, width // 16 + 2))
    img = np.kron(coarse, np.ones((16, 16)))[:, :height, :width] * 180
    img += rng.random((bands, height, width)) * 60
    return np.clip(img + 10, 1, 255).astype(np.uint8)


@pytest.fixture
def fcn(tmp_path: Path) -> Path:
    return make_model(tmp_path / "fcn.safetensors", "fcn")


@pytest.fixture
def cnn(tmp_path: Path) -> Path:
    return make_model(tmp_path / "cnn.safetensors", "cnn", chip=16)


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    img = smooth_image(3, 300, 280)
    img[:, :40, :50] = 0  # a nodata corner
    return make_raster(tmp_path / "scene.tif", img, nodata=0)


def run(scene: Path, model: Path, out: Path, **kw: Any) -> PredictResult:
    progress = kw.pop("progress", None)
    kw.setdefault("workers", 1)
    kw.setdefault("batch_size", 16)
    return predict(PredictConfig(scenes=scene, output=out, model=model, **kw), progress)


def read(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read()


def whole_image_probs(scene: Path, model_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass of a segmenter over the whole scene: (probs, valid)."""
    model, meta = load_model_file(model_path)
    with rasterio.open(scene) as ds:
        raw = ds.read()
        valid = ds.read_masks(1) > 0
    for b in range(raw.shape[0]):
        valid &= raw[b] != 0
    x = meta.preprocess(raw, "uint8")
    x[:, ~valid] = 0.0
    with torch.inference_mode():
        probs = torch.softmax(model(torch.from_numpy(x)[None]), dim=1)[0].numpy()
    return probs, valid


# --- blending and tiling ----------------------------------------------------------------------


@pytest.mark.parametrize(("window", "stride"), [(64, 48), (96, 40), (50, 44)])
def test_segmenter_tiled_equals_whole_image(
    tmp_path: Path, scene: Path, fcn: Path, window: int, stride: int
) -> None:
    out = tmp_path / "map.tif"
    run(scene, fcn, out, window=window, stride=stride, probabilities=tmp_path / "p.tif")
    ref, valid = whole_image_probs(scene, fcn)
    probs = read(tmp_path / "p.tif").astype(np.float32) / 250.0
    assert np.abs(probs[:, valid] - ref[:, valid]).max() <= 0.5 / 250 + 1e-3
    classes = read(out)[0]
    top2 = np.sort(ref, axis=0)[-2:]
    clear = valid & (top2[1] - top2[0] > 1e-3)
    assert (classes[clear] == ref.argmax(0)[clear]).all()
    assert (classes[~valid] == 255).all()
    assert len(np.unique(classes[valid])) > 1  # a meaningful test: several classes


def test_classifier_chip_scores_cover_their_chips(tmp_path: Path, cnn: Path) -> None:
    img = smooth_image(3, 16, 48, seed=3)
    src = make_raster(tmp_path / "s.tif", img)
    run(src, cnn, tmp_path / "m.tif", stride=16, probabilities=tmp_path / "p.tif", strategy="windows")
    model, meta = load_model_file(cnn)
    chips = np.stack([meta.preprocess(img[:, :, i : i + 16], "uint8") for i in (0, 16, 32)])
    with torch.inference_mode():
        ref = torch.softmax(model(torch.from_numpy(chips)), dim=1).numpy()
    classes, probs = read(tmp_path / "m.tif")[0], read(tmp_path / "p.tif") / 250.0
    for i in range(3):
        block = np.s_[:, i * 16 : (i + 1) * 16]
        assert (classes[block] == ref[i].argmax()).all()
        assert np.allclose(probs[(slice(None), *block)], ref[i][:, None, None], atol=0.003)


def test_classifier_overlap_averages_neighbouring_chips(
    tmp_path: Path, scene: Path, cnn: Path
) -> None:
    res = run(
        scene,
        cnn,
        tmp_path / "m.tif",
        probabilities=tmp_path / "p.tif",
        confidence=True,
        strategy="windows",
    )
    assert (res.window, res.stride) == (16, 8)  # default overlap 0.5
    probs = read(tmp_path / "p.tif").astype(int)
    classes = read(tmp_path / "m.tif")[0]
    valid = classes != 255
    assert (np.abs(probs[:, valid].sum(axis=0) - 250) <= 2).all()
    conf = read(confidence_path(tmp_path / "m.tif"))[0]
    assert np.allclose(conf[valid], probs[:, valid].max(axis=0) / 2.5, atol=1)
    assert (conf[~valid] == 255).all() and (probs[:, ~valid] == 255).all()


# --- georeferencing, metadata, nodata --------------------------------------------------------


def test_map_has_the_scene_grid_and_class_metadata(tmp_path: Path, scene: Path, fcn: Path) -> None:
    out = tmp_path / "map.tif"
    res = run(scene, fcn, out)
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs
        assert dst.transform == src.transform
        assert (dst.width, dst.height) == (src.width, src.height)
        assert dst.dtypes == ("uint8",) and dst.nodata == 255
        assert dst.block_shapes == [(256, 256)] and dst.compression.name == "deflate"
        cmap = dst.colormap(1)
    names, colors = read_class_metadata(out)
    assert names == CLASSES
    assert cmap[0][:3] == colors[0]
    assert res.valid_pixels + res.nodata_pixels == 300 * 280
    assert sum(res.class_pixels.values()) == res.valid_pixels
    assert res.nodata_pixels >= 40 * 50
    assert not partial_path(out).exists() and not partial_path(out, ".partial.json").exists()


def test_nodata_and_mask_propagate(tmp_path: Path, fcn: Path) -> None:
    img = smooth_image(3, 120, 130)
    mask = np.ones((120, 130), bool)
    mask[60:, 70:] = False
    src = make_raster(tmp_path / "masked.tif", img, mask=mask)
    classes = read(run(src, fcn, tmp_path / "m.tif", workers=0).output)[0]  # reads inline
    assert (classes[60:, 70:] == 255).all()
    assert (classes[mask] < len(CLASSES)).all()


def test_scene_without_crs_warns(tmp_path: Path, fcn: Path) -> None:
    src = make_raster(tmp_path / "plain.tif", smooth_image(3, 70, 90), crs=None)
    events: list[ProgressEvent] = []
    res = run(src, fcn, tmp_path / "m.tif", progress=events.append)
    warns = [e.message for e in events if e.kind == "message" and e.level == "warning"]
    assert any("has no CRS" in m and "plain.tif" in m for m in warns)
    assert res.crs is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(res.output) as ds:
            assert ds.crs is None and (ds.width, ds.height) == (90, 70)


def test_scene_smaller_than_a_window(tmp_path: Path, fcn: Path) -> None:
    src = make_raster(tmp_path / "tiny.tif", smooth_image(3, 20, 30))
    res = run(src, fcn, tmp_path / "m.tif")
    assert read(res.output).shape == (1, 20, 30) and res.valid_pixels == 600


# --- errors -----------------------------------------------------------------------------------


def test_wrong_band_count_names_the_file(tmp_path: Path, fcn: Path) -> None:
    src = make_raster(tmp_path / "four.tif", smooth_image(4, 40, 40))
    expected = r"four\.tif has 4 bands, the model expects 3: pass --bands"
    with pytest.raises(BandError, match=expected):
        run(src, fcn, tmp_path / "m.tif")
    res = run(src, fcn, tmp_path / "m.tif", bands=[3, 2, 1])
    assert res.output.exists()
    with pytest.raises(BandError, match="selects 2 bands"):
        run(src, fcn, tmp_path / "m2.tif", bands=[1, 2])


def test_all_nodata_scene_is_an_error(tmp_path: Path, fcn: Path) -> None:
    src = make_raster(tmp_path / "empty.tif", np.zeros((3, 50, 60), np.uint8), nodata=0)
    with pytest.raises(RasterOpenError, match=r"empty\.tif.*every pixel is nodata"):
        run(src, fcn, tmp_path / "m.tif")
    assert list(tmp_path.glob("*m.tif*")) == []


def test_existing_output_needs_overwrite(tmp_path: Path, scene: Path, fcn: Path) -> None:
    out = tmp_path / "map.tif"
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="map.tif.*--overwrite"):
        run(scene, fcn, out)
    assert out.read_bytes() == b"old"
    run(scene, fcn, out, overwrite=True)
    assert read(out).shape == (1, 300, 280)
    with pytest.raises(OutputExistsError, match="no interrupted run"):
        run(scene, fcn, out, resume=True)


def test_unwritable_output_folder(tmp_path: Path, scene: Path, fcn: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="file.txt"):
        run(scene, fcn, blocker / "map.tif")


def test_bad_options(tmp_path: Path, scene: Path, cnn: Path) -> None:
    with pytest.raises(ConfigError, match="stride"):
        run(scene, cnn, tmp_path / "m.tif", stride=17)
    with pytest.raises(ConfigError, match="chip size"):
        run(scene, cnn, tmp_path / "m.tif", window=32, strategy="windows")
    with pytest.raises(ConfigError, match="multiple of the output stride"):
        run(scene, cnn, tmp_path / "m.tif", window=50)
    with pytest.raises(ConfigError, match=".tif"):
        run(scene, cnn, tmp_path / "m.png")


# --- atomic output and resume -----------------------------------------------------------------


def stop_after(windows: int, exc: type[BaseException]) -> Callable[[ProgressEvent], None]:
    seen = 0

    def callback(event: ProgressEvent) -> None:
        nonlocal seen
        if event.kind == "advance":
            seen += int(event.step)
            if seen >= windows:
                raise exc()

    return callback


def test_crash_leaves_no_file(tmp_path: Path, scene: Path, fcn: Path) -> None:
    out = tmp_path / "out" / "map.tif"
    with pytest.raises(RuntimeError):
        run(
            scene,
            fcn,
            out,
            window=32,
            stride=32,
            probabilities=tmp_path / "out" / "p.tif",
            confidence=True,
            progress=stop_after(40, RuntimeError),
        )
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    "arch, strategy, window",
    [("fcn", "auto", None), ("cnn", "windows", None), ("cnn", "dense", 96)],
)
def test_interrupted_run_resumes_to_identical_bytes(
    tmp_path: Path, arch: str, strategy: str, window: int | None
) -> None:
    model = make_model(tmp_path / f"{arch}.safetensors", arch, chip=32)
    img = smooth_image(3, 600, 200, seed=5)
    img[:, 250:330, :] = 0  # nodata rows across a strip boundary
    src = make_raster(tmp_path / "tall.tif", img, nodata=0)
    opts: dict[str, Any] = {
        "batch_size": 32,
        "confidence": True,
        "strategy": strategy,
        "window": window,
    }

    clean = tmp_path / "clean" / "map.tif"
    run(src, model, clean, probabilities=tmp_path / "clean" / "p.tif", **opts)

    out = tmp_path / "resumed" / "map.tif"
    probs = tmp_path / "resumed" / "p.tif"
    n_windows = run(src, model, tmp_path / "count.tif", **opts).windows
    with pytest.raises(Interrupted, match="--resume"):
        run(
            src,
            model,
            out,
            probabilities=probs,
            progress=stop_after(int(n_windows * 0.7), KeyboardInterrupt),
            **opts,
        )
    assert not out.exists() and partial_path(out).exists()
    sidecar = json.loads(partial_path(out, ".partial.json").read_text())
    assert 0 < sidecar["rows_done"] < 600 and sidecar["rows_done"] % 256 == 0

    with pytest.raises(ConfigError, match="stride"):
        run(src, model, out, probabilities=probs, resume=True, stride=20, **opts)
    res = run(src, model, out, probabilities=probs, resume=True, **opts)
    assert res.resumed_from_row == sidecar["rows_done"]
    for a, b in [
        (clean, out),
        (clean.with_name("p.tif"), probs),
        (confidence_path(clean), confidence_path(out)),
    ]:
        assert a.read_bytes() == b.read_bytes(), b.name
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "map.confidence.tif",
        "map.tif",
        "p.tif",
    ]


def test_interrupt_before_any_strip_cleans_up(tmp_path: Path, scene: Path, fcn: Path) -> None:
    out = tmp_path / "o" / "map.tif"
    with pytest.raises(KeyboardInterrupt):
        run(
            scene,
            fcn,
            out,
            window=32,
            stride=32,
            batch_size=4,
            progress=stop_after(1, KeyboardInterrupt),
        )
    assert list(out.parent.iterdir()) == []


# --- options and extra outputs ----------------------------------------------------------------


def test_tta_cog_vector_preview(tmp_path: Path, scene: Path, fcn: Path) -> None:
    out = tmp_path / "map.tif"
    res = run(
        scene,
        fcn,
        out,
        tta=True,
        cog=True,
        confidence=True,
        vector=tmp_path / "map.gpkg",
        preview=tmp_path / "map.png",
        min_area=500.0,
    )
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.overviews(1) and ds.colormap(1)[0][3] == 255
        assert ds.transform == rasterio.open(scene).transform
    assert read_class_metadata(out)[0] == CLASSES
    with rasterio.open(confidence_path(out)) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert res.vector is not None and res.vector.exists() and res.vector_result is not None
    assert res.preview is not None and res.preview.read_bytes()[:4] == b"\x89PNG"


# --- CLI --------------------------------------------------------------------------------------


def test_cli_predict(tmp_path: Path, scene: Path, cnn: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli.tif"
    args = [
        "predict",
        str(scene),
        "-o",
        str(out),
        "-m",
        str(cnn),
        "--workers",
        "1",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "cli.tif: 280x300 px" in result.stdout
    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert again.stderr.strip().splitlines() == [
        f"error: {out}: already exists (pass --overwrite to replace it)"
    ]
    js = runner.invoke(app, [*args, "--overwrite", "--json", "--overlap", "0"])
    assert js.exit_code == 0, js.output
    doc = json.loads(js.stdout)
    assert doc["width"] == 280 and doc["stride"] == 16 and doc["classes"] == CLASSES
    assert doc["strategy"] == "windows"  # --overlap asks for chip windows
    js = runner.invoke(app, [*args, "--overwrite", "--json", "--window", "96"])
    assert js.exit_code == 0, js.output
    doc = json.loads(js.stdout)
    assert (doc["strategy"], doc["window"]) == ("dense", 96)
    bad = runner.invoke(app, [*args, "--overwrite", "--window", "50"])
    assert bad.exit_code == 2 and "--window 50" in bad.stderr and "multiple of" in bad.stderr
    bad = runner.invoke(
        app,
        ["predict", str(scene), "-o", str(tmp_path / "b.tif"), "-m", str(cnn), "--bands", "1,2"],
    )
    assert bad.exit_code == 1 and "the model expects 3" in bad.stderr


# --- real data --------------------------------------------------------------------------------


@needs_shared_data
@pytest.mark.realdata
def test_sentinel2_jp2_stack(tmp_path: Path) -> None:
    img = SHARED_DATA / "scenes" / "sentinel2-t33uuu" / "IMG_DATA"
    bands = [next(img.rglob(f"*_{b}.jp2")) for b in ("B04", "B03", "B02")]
    model = make_model(
        tmp_path / "s2.safetensors",
        "cnn",
        chip=32,
        radiometry={
            "uint16": {
                "scale": [255 / 3000] * 3,
                "offset": [0.0] * 3,
                "clip_min": 0.0,
                "clip_max": 255.0,
            }
        },
    )
    res = run(bands, model, tmp_path / "s2.tif", overlap=0.0, batch_size=64)
    with rasterio.open(bands[0]) as src, rasterio.open(res.output) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert (dst.width, dst.height) == (src.width, src.height) == (1536, 768)
    assert res.valid_pixels > 0.9 * 1536 * 768


def test_nodata_override_masks_undeclared_fill(tmp_path: Path) -> None:
    """Fill that the file does not declare (255 around an 8-bit scene) becomes map nodata with --nodata."""
    from rasterio.transform import from_origin

    scene = tmp_path / "filled.tif"
    data = np.random.default_rng(0).integers(20, 120, (3, 96, 160), dtype=np.uint8)
    data[:, :, :64] = 255
    profile = {"driver": "GTiff", "width": 160, "height": 96, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": from_origin(330000, 5822040, 10, 10)}
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(data)
    plain, masked = tmp_path / "plain.tif", tmp_path / "masked.tif"
    predict(PredictConfig(scenes=scene, output=plain, workers=0))
    predict(PredictConfig(scenes=scene, output=masked, nodata=255, workers=0))
    with rasterio.open(plain) as a, rasterio.open(masked) as b:
        assert (a.read(1)[:, :64] != 255).all()
        assert (b.read(1)[:, :64] == 255).all()
        assert (b.read(1)[:, 64:] != 255).all()
