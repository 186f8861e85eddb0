"""The output folder: refuse a foreign or input-holding folder, overwrite ours, or resume a run.

A run records the options that decide its chips (the fingerprint) in ``STATE_FILE``; ``--resume``
continues only with the same fingerprint, after dropping half-written chips.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from geoclass.data.tiling.chip_writer import unlink
from geoclass.data.tiling.config import DATASET_FORMAT, TileConfig
from geoclass.data.tiling.describe import nodata_json
from geoclass.errors import ConfigError, OutputError, OutputExistsError
from geoclass.io.outputs import atomic_output, input_files
from geoclass.io.reader import Scene
from geoclass.progress import Reporter

__all__ = ["PARTIAL_CSV", "STATE_FILE", "atomic_write_text", "check_inputs_outside", "fingerprint",
           "prepare_output"]

STATE_FILE = ".geoclass-tile.json"
PARTIAL_CSV = ".chips.csv.partial"
_OUTPUT_DIRS = ("chips", "images", "masks")
_OUTPUT_FILES = ("chips.csv", "index.gpkg", "dataset.json", STATE_FILE, PARTIAL_CSV,
                 ".index.tmp.gpkg", ".dataset.json.tmp", ".chips.csv.tmp")


def _is_ours(out: Path) -> bool:
    """Whether ``out`` holds a run of ``geoclass tile`` (state file or dataset.json)."""
    if (out / STATE_FILE).is_file():
        return True
    try:
        return json.loads((out / "dataset.json").read_text()).get("format") == DATASET_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _clear_outputs(out: Path) -> None:
    for d in _OUTPUT_DIRS:
        if (out / d).is_dir():
            shutil.rmtree(out / d)
    for f in _OUTPUT_FILES:
        unlink(out / f)


def _remove_temp_files(out: Path) -> None:
    """Drop half-written chips an interrupted run left (hidden ``.*.tmp`` files)."""
    for d in _OUTPUT_DIRS:
        if not (out / d).is_dir():
            continue
        for dirpath, _, files in os.walk(out / d):
            for f in files:
                if f.startswith(".") and f.endswith(".tmp"):
                    unlink(Path(dirpath) / f)


def _abs(p: str | os.PathLike[str] | None) -> str | None:
    if p is None:
        return None
    s = os.fspath(p)
    return s if s.startswith("/vsi") or "://" in s else str(Path(s).resolve())


def fingerprint(cfg: TileConfig, scene_paths: list[str], scene: Scene, labels: Any, classes: list[str],
                stride: int) -> dict[str, Any]:
    """The options that decide a run's chips; ``--resume`` needs the same ones."""
    return {
        "scenes": [_abs(p) for p in scene_paths],
        "bands": list(scene.bands),
        "nodata": nodata_json(scene.nodata),
        "size": cfg.size,
        "stride": stride,
        "task": cfg.task,
        "labels": _abs(cfg.labels),
        "label_field": getattr(labels, "field", None),
        "classes": classes,
        "label_colors": dict(getattr(labels, "values", {})) if cfg.label_colors is not None else None,
        "min_labelled": cfg.min_labelled,
        "max_nodata": cfg.max_nodata,
        "val_fraction": cfg.val_fraction,
        "block_size": cfg.block_size,
        "seed": cfg.seed,
        "sample": cfg.sample,
        "per_feature": cfg.per_feature,
    }


def check_inputs_outside(out: Path, scene_paths: list[str], labels: str | os.PathLike[str] | None) -> None:
    """Refuse an output folder that holds a file the inputs read (overwrite would delete it)."""
    folder = Path(os.path.realpath(out))
    inputs = input_files(scene_paths, "scene") + input_files([labels] if labels else [], "labels")
    for item in inputs:
        if item.path == folder or folder in item.path.parents:
            raise ConfigError(f"{out}: holds {item.describe()}; write the chips to another folder")


def prepare_output(out: Path, overwrite: bool, resume: bool, fingerprint: dict[str, Any],
                    report: Reporter) -> bool:
    """Create or check the output folder; return True when resuming an earlier run."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    try:
        non_empty = out.is_dir() and any(out.iterdir())
    except OSError as exc:
        raise OutputError(f"{out}: cannot read the output folder ({exc.strerror or exc})") from exc
    resuming = False
    if non_empty:
        if resume:
            state = out / STATE_FILE
            if not state.is_file():
                raise OutputExistsError(
                    f"{out}: nothing to resume (no unfinished 'geoclass tile' run here); "
                    "pass --overwrite to replace its contents or choose an empty folder"
                )
            try:
                old = json.loads(state.read_text()).get("fingerprint", {})
            except (OSError, ValueError) as exc:
                raise OutputExistsError(f"{out}: unreadable {STATE_FILE}; pass --overwrite") from exc
            diffs = [k for k in fingerprint if old.get(k) != fingerprint[k]]
            if diffs:
                shown = "; ".join(f"{k}: {old.get(k)!r} -> {fingerprint[k]!r}" for k in diffs[:3])
                raise ConfigError(
                    f"{out}: cannot resume with different options ({shown}); run with the same "
                    "options, or pass --overwrite to start again"
                )
            _remove_temp_files(out)
            resuming = True
        elif overwrite:
            if not _is_ours(out):
                raise OutputExistsError(
                    f"{out}: is not empty and was not written by 'geoclass tile'; refusing to "
                    "delete its contents, choose an empty or new folder"
                )
            _clear_outputs(out)
        else:
            raise OutputExistsError(
                f"{out}: output folder is not empty; pass --overwrite to replace it, or --resume "
                "to continue an interrupted run"
            )
    elif resume:
        report.info(f"{out}: nothing to resume, starting a new run")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from exc
    atomic_write_text(out / STATE_FILE, json.dumps({"fingerprint": fingerprint}, indent=2))
    return resuming


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``atomic_output``); a failure is an ``OutputError``."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
