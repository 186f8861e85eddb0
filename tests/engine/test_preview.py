"""The PNG quick-look of a class map: colours, legend, decimated reads, atomic writes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from geoclass.engine.preview import legend_entries, render_preview
from geoclass.errors import ConfigError, InputNotFoundError, OutputExistsError
from geoclass.io.class_map import write_class_metadata
from tests.conftest import UTM_TRANSFORM

CLASSES = ["water", "forest", "crop"]
COLORS = [(0, 0, 255), (0, 128, 0), (255, 200, 0)]


def class_map(path: Path, ids: np.ndarray, named: bool = True) -> Path:
    profile = {
        "driver": "GTiff",
        "width": ids.shape[1],
        "height": ids.shape[0],
        "count": 1,
        "dtype": "uint8",
        "nodata": 255,
        "crs": "EPSG:32633",
        "transform": UTM_TRANSFORM,
    }
    with rasterio.open(path, "w", **profile) as ds:
        if named:
            write_class_metadata(ds, CLASSES, COLORS)
        ds.write(ids[None])
    return path


def colours_of(png: Path) -> set[tuple[int, ...]]:
    img = np.asarray(Image.open(png).convert("RGB"))
    return {tuple(int(v) for v in c) for c in np.unique(img.reshape(-1, 3), axis=0)}


def test_preview_shows_the_classes_present_in_their_colours(tmp_path: Path) -> None:
    ids = np.zeros((120, 200), np.uint8)
    ids[:, 100:] = 1
    ids[:20, :20] = 255
    png = render_preview(class_map(tmp_path / "m.tif", ids), tmp_path / "m.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    colours = colours_of(png)
    assert {(0, 0, 255), (0, 128, 0), (255, 255, 255)} <= colours  # nodata shows the background
    assert (255, 200, 0) not in colours  # crop is absent: not in the legend either
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png", "m.tif"]  # no temp left


def test_legend_entries_are_shares_of_valid_pixels() -> None:
    ids = np.array([[0, 0, 1, 255], [2, 0, 255, 255]], np.uint8)
    entries = legend_entries(ids, 255, 3)
    assert [i for i, _ in entries] == [0, 1, 2]
    assert entries[0][1] == pytest.approx(0.6)
    assert legend_entries(np.full((2, 2), 255, np.uint8), 255, 3) == []


def test_map_without_class_names(tmp_path: Path) -> None:
    ids = (np.arange(60 * 80).reshape(60, 80) // 1000 % 4).astype(np.uint8)
    png = render_preview(class_map(tmp_path / "m.tif", ids, named=False), tmp_path / "p.png")
    assert png.exists()


def test_all_nodata_map(tmp_path: Path) -> None:
    png = render_preview(
        class_map(tmp_path / "m.tif", np.full((30, 40), 255, np.uint8)), tmp_path / "p.png"
    )
    assert png.exists()


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="missing.tif"):
        render_preview(tmp_path / "missing.tif", tmp_path / "p.png")
    m = class_map(tmp_path / "m.tif", np.zeros((10, 10), np.uint8))
    (tmp_path / "p.png").write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        render_preview(m, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes() == b"old"
    render_preview(m, tmp_path / "p.png", overwrite=True)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError):
        render_preview(m, tmp_path / "q.png", max_size=4)


def test_large_map_is_read_decimated(tmp_path: Path) -> None:
    """A 900-megapixel map (sparse on disk) previews in a small, flat amount of memory."""
    big = tmp_path / "big.tif"
    profile = {
        "driver": "GTiff",
        "width": 30000,
        "height": 30000,
        "count": 1,
        "dtype": "uint8",
        "nodata": 255,
        "crs": "EPSG:32633",
        "transform": UTM_TRANSFORM,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "SPARSE_OK": True,
    }
    with rasterio.open(big, "w", **profile) as ds:
        write_class_metadata(ds, CLASSES, COLORS)
        ds.write(
            np.ones((1, 512, 30000), np.uint8), window=rasterio.windows.Window(0, 0, 30000, 512)
        )
    script = textwrap.dedent(f"""
        from geoclass.engine.preview import render_preview
        render_preview({str(big)!r}, {str(tmp_path / "big.png")!r}, max_size=512)
        # VmHWM, not ru_maxrss: the latter keeps the parent's RSS across fork + exec.
        hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
        print(int(hwm.split()[1]) // 1024)
    """)
    env = {k: v for k, v in os.environ.items() if k != "GDAL_CACHEMAX"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    peak_mb = int(out.stdout.strip().splitlines()[-1])
    assert peak_mb < 400, f"peak RSS {peak_mb} MB: the map was not read decimated"  # full: 900 MB
    assert (0, 128, 0) in colours_of(tmp_path / "big.png")
