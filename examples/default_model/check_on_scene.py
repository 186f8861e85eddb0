"""Judge a class map of the T33UUU sample against OpenStreetMap land use (forest, water, farm ...).

EuroSAT accuracy says little about a winter scene; this counts, for the pixels inside each kind
of OSM polygon, which classes the map gave them. OSM is not a reference map (meadow vs farm is
loose), but forest and water are reliable enough to catch the classic failure: dark conifer
forest called SeaLake.

    python examples/default_model/check_on_scene.py map.tif \
        ../shared/data/scenes/sentinel2-t33uuu/gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import fiona
import numpy as np
import rasterio
from rasterio.features import rasterize
from shapely.geometry import shape

from geoclass.io.class_map import read_class_metadata


def main(map_path: str, osm_path: str) -> dict[str, dict[str, float]]:
    with rasterio.open(map_path) as src:
        classes = read_class_metadata(src)[0]
        predicted = src.read(1)
        grid = {"out_shape": predicted.shape, "transform": src.transform}
    with fiona.open(osm_path) as layer:
        features = [(shape(f["geometry"]), f["properties"]["fclass"]) for f in layer]
    kinds = sorted({kind for _, kind in features})
    table: dict[str, dict[str, float]] = {}
    for code, kind in enumerate(kinds, start=1):
        mask = rasterize([(g, code) for g, k in features if k == kind], fill=0, dtype="uint8", **grid) == code
        counts = Counter(predicted[mask & (predicted < len(classes))].tolist())
        total = sum(counts.values())
        if total:
            table[kind] = {classes[c]: round(n / total, 3) for c, n in counts.most_common(4)}
            table[kind]["pixels"] = total
    return table


if __name__ == "__main__":
    result = main(sys.argv[1], sys.argv[2])
    for kind, shares in result.items():
        print(f"{kind:12s} {json.dumps(shares)}")
