"""Fit the uint16 Sentinel-2 L1C -> EuroSAT 8-bit mapping from EuroSAT's multispectral chips.

EuroSAT's RGB JPEGs are 8-bit renderings of the same Sentinel-2 L1C chips that the
multispectral release carries as uint16 (reflectance x 10000). For every chip of
``eurosat-ms-subset`` whose RGB twin exists in ``eurosat-rgb`` this pairs the pixels of bands
B04, B03, B02 with the JPEG's red, green, blue and fits ``rgb = scale * dn + offset`` per band by
least squares over unsaturated pixels. The result is written as a JSON radiometry entry that
``geoclass train --radiometry`` stores in the model, so ``predict`` on a uint16 scene feeds the
model what it saw in training.

Usage: python examples/default_model/fit_radiometry.py ../shared/data -o radiometry.json
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning


def fit(data: Path) -> dict[str, object]:
    ms_root = data / "eurosat-ms-subset"
    rgb_root = data / "eurosat-rgb"
    dn: list[np.ndarray] = []
    rgb: list[np.ndarray] = []
    for tif in sorted(ms_root.rglob("*.tif")):
        jpg = rgb_root / tif.parent.name / f"{tif.stem}.jpg"
        if not jpg.exists():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(tif) as src:
                dn.append(src.read([4, 3, 2]).reshape(3, -1).astype(np.float64))
            with rasterio.open(jpg) as src:
                rgb.append(src.read().reshape(3, -1).astype(np.float64))
    if not dn:
        raise SystemExit(f"no multispectral chip in {ms_root} has an RGB twin in {rgb_root}")
    x, y = np.concatenate(dn, axis=1), np.concatenate(rgb, axis=1)
    scale, offset, r2 = [], [], []
    for band in range(3):
        keep = (y[band] > 2) & (y[band] < 253)  # JPEG clipping at both ends would bias the fit
        a, b = np.polyfit(x[band][keep], y[band][keep], 1)
        pred = a * x[band][keep] + b
        r2.append(1 - np.sum((y[band][keep] - pred) ** 2) / np.sum((y[band][keep] - y[band][keep].mean()) ** 2))
        scale.append(float(a))
        offset.append(float(b))
    return {
        "uint16": {
            "scale": scale, "offset": offset, "clip_min": 0.0, "clip_max": 255.0,
            "source": f"least-squares fit of EuroSAT RGB on Sentinel-2 L1C B04/B03/B02 over {len(dn)} chip pairs "
                      f"(R^2 {', '.join(f'{v:.3f}' for v in r2)})",
        }
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the shared data folder")
    parser.add_argument("-o", "--output", type=Path, default=Path("radiometry.json"))
    args = parser.parse_args()
    result = fit(args.data)
    args.output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
