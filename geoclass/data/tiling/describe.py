"""The files that describe a chip dataset: ``index.gpkg`` (footprints) and ``dataset.json``."""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import fiona
import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geoclass.data.tiling.config import DATASET_FORMAT, DATASET_VERSION, TileConfig
from geoclass.data.tiling.plan import Aggregate
from geoclass.io.labels import UNLABELLED
from geoclass.io.outputs import atomic_output
from geoclass.io.reader import Scene
from geoclass.io.stats import BandStatistics
from geoclass.io.windows import window_transform

__all__ = ["dataset_info", "dumps", "nodata_json", "write_index"]


def _footprint(transform: Affine, row: int, col: int, size: int) -> list[list[tuple[float, float]]]:
    t = window_transform(transform, Window(col, row, size, size))
    corners = [(0, 0), (size, 0), (size, size), (0, size), (0, 0)]
    return [[(t.c + x * t.a + y * t.b, t.f + x * t.d + y * t.e) for x, y in corners]]


def write_index(out: Path, rows: Iterable[dict[str, Any]], scene: Scene, size: int, segment: bool) -> None:
    """Stream the chip rows into ``index.gpkg`` (footprint polygons), atomically."""
    props: dict[str, str] = {"path": "str", "label": "str", "split": "str"}
    if segment:
        props["mask"] = "str"
    props.update({"scene": "str", "row": "int", "col": "int"})
    schema = {"geometry": "Polygon", "properties": props}
    kwargs: dict[str, Any] = {}
    if scene.crs is not None:
        kwargs["crs_wkt"] = scene.crs.to_wkt()
    batch: list[fiona.Feature] = []
    with atomic_output(out / "index.gpkg") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fiona.open(tmp, "w", driver="GPKG", schema=schema, layer="chips", **kwargs) as dst:
            for r in rows:
                geom = fiona.Geometry(type="Polygon",
                                      coordinates=_footprint(scene.transform, r["row"], r["col"], size))
                batch.append(fiona.Feature(geometry=geom, properties={k: r[k] for k in props}))
                if len(batch) >= 2048:
                    dst.writerecords(batch)
                    batch.clear()
            if batch:
                dst.writerecords(batch)


def _jsonable_config(cfg: TileConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in asdict(cfg).items():
        if k in ("command", "workers", "overwrite", "resume"):
            continue
        if isinstance(v, os.PathLike):
            v = os.fspath(v)
        elif isinstance(v, (list, tuple)):
            v = [os.fspath(x) if isinstance(x, os.PathLike) else x for x in v]
        out[k] = v
    return out


def _crs_text(crs: CRS | None) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg(confidence_threshold=100)
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def nodata_json(nodata: float | None) -> float | str | None:
    """Nodata as JSON: None, ``"nan"``, an int when whole, else a float."""
    if nodata is None:
        return None
    if math.isnan(nodata):
        return "nan"
    return int(nodata) if float(nodata).is_integer() else float(nodata)


def dataset_info(cfg: TileConfig, scene: Scene, labels: Any, classes: list[str],
                  colors: list[tuple[int, int, int]], stride: int, counts: dict[str, dict[str, int]],
                  skipped: dict[str, int], windows: int, stats: BandStatistics | None,
                  aggs: Mapping[str, Aggregate] | None, n_classes: int) -> dict[str, Any]:
    """The content of ``dataset.json``."""
    from geoclass import __version__

    info: dict[str, Any] = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "task": cfg.task,
        "classes": classes,
        "class_ids": {c: i for i, c in enumerate(classes)},
        "label_values": {c: _plain(v) for c, v in (labels.values.items() if labels else [])},
        "colors": [list(c) for c in colors],
        "chip_size": cfg.size,
        "stride": stride,
        "bands": list(scene.bands),
        "band_names": list(scene.band_names),
        "dtype": scene.dtype,
        "nodata": nodata_json(scene.nodata),
        "crs": _crs_text(scene.crs),
        "scene": {
            "paths": [str(p) for p in scene.paths],
            "width": scene.width,
            "height": scene.height,
            "transform": list(scene.transform)[:6],
            "bounds": list(scene.bounds),
        },
        "labels": None if labels is None else {
            "path": str(labels.path),
            "kind": labels.kind,
            "field": getattr(labels, "field", None),
        },
        "statistics": stats.to_dict() if stats is not None else None,
        "statistics_split": "train",
        "counts": counts,
        "chips": {s: sum(v.values()) for s, v in counts.items()},
        "skipped": skipped,
        "windows": windows,
        "split": {
            "method": "spatial-blocks",
            "block_size": cfg.block_size,
            "block_px": cfg.block_size * stride,
            "val_fraction": cfg.val_fraction,
            "seed": cfg.seed,
        },
        "created_by": {
            "geoclass": __version__,
            "command": cfg.command,
            "config": _jsonable_config(cfg),
        },
    }
    if cfg.task == "segment":
        info["ignore_index"] = UNLABELLED
        info["min_labelled"] = cfg.min_labelled
        if aggs is not None:
            info["pixel_counts"] = {
                s: {c: int(a.pixels[i]) if a.pixels is not None else 0 for i, c in enumerate(classes)}
                for s, a in aggs.items()
            }
    return info


def dumps(obj: Any) -> str:
    """Indented JSON with short lists of numbers kept on one line."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)

    def join(m: re.Match[str]) -> str:
        items = [x.strip() for x in m.group(1).split(",")]
        line = "[" + ", ".join(items) + "]"
        return line if len(line) <= 100 else m.group(0)

    return re.sub(r"\[\s*((?:-?[\d.eE+-]+|null|true|false)(?:,\s*(?:-?[\d.eE+-]+|null|true|false))*)\s*\]",
                  join, text) + "\n"


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v
