"""Resume state: what an interrupted run was, and how far it got.

Beside the map's partial file lies a JSON sidecar, rewritten after every finished 256-row strip:
the run's fingerprint (scene, model, every option that changes the bytes written), the rows done
and the class histogram of those rows. A run with ``resume`` continues only from a sidecar with
the same fingerprint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from geoclass import __version__
from geoclass.errors import ConfigError, OutputExistsError
from geoclass.io.outputs import file_digest
from geoclass.io.raster_writer import StripWriter
from geoclass.progress import Reporter

__all__ = ["read_sidecar", "resume_state", "scene_identity", "write_sidecar"]

_SIDECAR_VERSION = 1


def scene_identity(path: str) -> dict[str, Any]:
    """A scene file's resolved path, size and modification time (just the path if not local)."""
    p = Path(path)
    if p.exists():
        st = p.stat()
        return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {"path": path}


def fingerprint(model_path: Path, scene_paths: list[str], **settings: Any) -> dict[str, Any]:
    """What makes two runs write the same bytes: geoclass, the model, the scenes and
    ``settings`` (JSON-able values, such as bands, window, stride, device and precision)."""
    st = model_path.stat()
    return {
        "geoclass": __version__,
        "model": {
            "path": str(model_path.resolve()),
            "size": st.st_size,
            "sha256": file_digest(model_path),
        },
        "scenes": [scene_identity(p) for p in scene_paths],
        **settings,
    }


def write_sidecar(
    path: Path, fingerprint: dict[str, Any], rows_done: int, histogram: np.ndarray
) -> None:
    """Atomically write the resume sidecar (nothing is left behind when it fails)."""
    doc = {
        "version": _SIDECAR_VERSION,
        "fingerprint": fingerprint,
        "rows_done": rows_done,
        "histogram": [int(v) for v in histogram],
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar's contents, or None if it is missing, unreadable or of another version."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != _SIDECAR_VERSION:
        return None
    return doc


def resume_state(
    output: Path,
    sidecar: Path,
    fingerprint: dict[str, Any],
    writers: list[StripWriter],
    *,
    resume: bool,
    reporter: Reporter,
) -> tuple[int, np.ndarray]:
    """Rows already finished by an interrupted run, and their class histogram.

    Args:
        output: The class map.
        sidecar: Its resume sidecar.
        fingerprint: This run's fingerprint.
        writers: The output writers, whose partial files must all exist to resume.
        resume: Whether the run was asked to resume; without it an old sidecar is discarded.
        reporter: Gets what happens to an earlier run.

    Raises:
        OutputExistsError: ``resume`` with no interrupted run and an existing map.
        ConfigError: The interrupted run had a different fingerprint.
    """
    fresh = (0, np.zeros(256, np.int64))
    doc = read_sidecar(sidecar) if sidecar.exists() else None
    if not resume:
        if doc is not None:
            reporter.info(
                f"{output}: an unfinished earlier run is discarded (pass --resume to continue one)"
            )
        return fresh
    if doc is None:
        if output.exists():
            raise OutputExistsError(
                f"{output}: already exists and there is no interrupted run to resume "
                "(pass --overwrite to predict it again)"
            )
        reporter.info(f"{output}: no interrupted run to resume; starting from the first row")
        return fresh
    old = doc.get("fingerprint", {})
    if old != fingerprint:
        diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        raise ConfigError(
            f"{output}: cannot resume: the interrupted run used a different {', '.join(diff)} "
            "(run with the same scene, model and options, or pass --overwrite to start again)"
        )
    rows = int(doc.get("rows_done", 0))
    missing = [w.partial for w in writers if not w.partial.exists()]
    if rows and missing:
        reporter.warn(f"{missing[0]}: partial file missing; starting from the first row")
        return fresh
    hist = np.asarray(doc.get("histogram", [0] * 256), np.int64)
    return rows, hist if hist.shape == (256,) else fresh[1]
