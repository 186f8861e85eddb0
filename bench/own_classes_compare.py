"""Per-pixel models trained on a scene's own labels vs the shipped EuroSAT model, on a held-out area.

The README's "Map your own classes" table. On Sentinel-2 tile T33UUU (../shared/data), the
OpenStreetMap land-use polygons beside it are grouped into water / forest / built / agri. The
per-pixel models train on the polygons of the west half only (``--val-bounds`` holds out the east
half); every map is then scored on the labelled pixels of the east half: balanced accuracy (mean
per-class recall), overall accuracy and per-class recall. The EuroSAT map is made with the
shipped model (auto strategy) on the B04/B03/B02 stack, its ten classes grouped the same way.

    python bench/own_classes_compare.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from geoclass import open_scene  # noqa: E402
from geoclass.accuracy.mapped_area import class_names  # noqa: E402
from geoclass.engine.predict import PredictConfig, predict  # noqa: E402
from geoclass.engine.train.pixels import PixelTrainConfig, train_pixels  # noqa: E402
from geoclass.io.labels import UNLABELLED, open_labels  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scenes" / "sentinel2-t33uuu"
OSM = DATA / "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"
GROUPS = {"water": ["water", "wetland"], "forest": ["forest", "scrub"], "built": ["residential"],
          "agri": ["farm", "meadow", "grass"]}
EUROSAT_GROUPS = {"water": ["River", "SeaLake"], "forest": ["Forest"],
                  "built": ["Residential", "Industrial", "Highway"],
                  "agri": ["AnnualCrop", "Pasture", "PermanentCrop", "HerbaceousVegetation"]}


def _score(map_path: Path, truth: np.ndarray, held_out: np.ndarray, groups: dict[str, list[str]]) -> dict:
    with rasterio.open(map_path) as ds:
        pred = ds.read(1)
    ids = {name: value for value, name in class_names(map_path).items()}
    to_group = np.full(256, 255, np.uint8)
    for g, members in enumerate(groups.values()):
        for name in members:
            if name in ids:
                to_group[ids[name]] = g
    grouped = to_group[pred]
    sel = held_out & (truth != UNLABELLED)
    t, p = truth[sel], grouped[sel]
    recall = {name: float((p[t == g] == g).mean()) for g, name in enumerate(groups) if (t == g).any()}
    return {"balanced": float(np.mean(list(recall.values()))), "overall": float((p == t).mean()),
            "recall": recall, "pixels": int(sel.sum())}


def main() -> None:
    if not OSM.exists():
        sys.exit(f"real data not found at {DATA}")
    bands = sorted((DATA / "IMG_DATA").glob("*.jp2"))
    rgb = [next(b for b in bands if b.name.endswith(f"_{n}.jp2")) for n in ("B04", "B03", "B02")]
    with rasterio.open(rgb[0]) as ds:
        left, bottom, right, top = ds.bounds
    east = ((left + right) / 2, bottom, right, top)
    rows = []
    with tempfile.TemporaryDirectory(prefix="geoclass-own-classes-") as tmp_dir:
        tmp = Path(tmp_dir)
        (tmp / "groups.json").write_text(json.dumps(GROUPS))
        with open_scene([str(b) for b in rgb]) as scene:
            labels = open_labels(OSM, scene, field="fclass", classes=str(tmp / "groups.json"))
            truth = labels.read(Window(0, 0, scene.width, scene.height))
            assert truth is not None
            xs = scene.transform.c + (np.arange(scene.width) + 0.5) * scene.transform.a
            held_out = np.broadcast_to(xs >= east[0], truth.shape)
        runs = [(model, name, stack) for name, stack in (("13 bands", bands), ("RGB", rgb))
                for model in ("pixel-mlp", "pixel-gbt")]
        for model, name, stack in runs:
            t0 = time.perf_counter()
            run = tmp / f"{model}-{name.replace(' ', '')}"
            result = train_pixels(PixelTrainConfig(scenes=[str(b) for b in stack], labels=str(OSM),
                                                   label_field="fclass", classes=str(tmp / "groups.json"),
                                                   out_dir=str(run), val_bounds=east, model=model))
            seconds = time.perf_counter() - t0
            out = tmp / f"{run.name}.tif"
            t0 = time.perf_counter()
            predict(PredictConfig(scenes=[str(b) for b in stack], output=out, model=run))
            mp_s = truth.size / 1e6 / (time.perf_counter() - t0)
            own = {name: [name] for name in GROUPS}  # the map's classes are the groups
            rows.append((f"{model}, {name}", _score(out, truth, held_out, own),
                         f"{result.train_pixels:,} px, {seconds:.0f} s; predict {mp_s:.2f} MP/s"))
        out = tmp / "eurosat.tif"
        res = predict(PredictConfig(scenes=[str(b) for b in rgb], output=out))
        rows.append((f"shipped EuroSAT model ({res.strategy})", _score(out, truth, held_out, EUROSAT_GROUPS), "-"))
    print(f"held-out east half of T33UUU: {rows[0][1]['pixels']:,} labelled pixels (OSM land use)\n")
    print("| map | balanced accuracy | overall | water | forest | built | agri | training |")
    print("|---|---|---|---|---|---|---|---|")
    for label, s, training in rows:
        rec = " | ".join(f"{s['recall'].get(g, float('nan')):.2f}" for g in GROUPS)
        print(f"| {label} | **{s['balanced']:.3f}** | {s['overall']:.3f} | {rec} | {training} |")


if __name__ == "__main__":
    main()
