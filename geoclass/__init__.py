"""geoclass: land-cover classification of satellite and aerial imagery at any scale.

The public API, usable from a notebook::

    import geoclass
    scene = geoclass.open_scene(["B04.jp2", "B03.jp2", "B02.jp2"])
    geoclass.predict(geoclass.PredictConfig(scenes=[...], output="map.tif"))

Names are imported lazily so that ``import geoclass`` (and the CLI's ``--help``) stay fast:
torch is only loaded when a model is touched.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "open_scene": "geoclass.io.reader",
    "Scene": "geoclass.io.reader",
    "BandStatistics": "geoclass.io.stats",
    "window_grid": "geoclass.io.windows",
    "GridWindow": "geoclass.io.windows",
    "load_samples": "geoclass.data.samples",
    "ChipDataset": "geoclass.data.chips",
    "create_model": "geoclass.models.registry",
    "list_models": "geoclass.models.registry",
    "load_model_file": "geoclass.models.model_file",
    "save_model_file": "geoclass.models.model_file",
    "ModelMeta": "geoclass.models.model_file",
    "default_model_path": "geoclass.models.model_file",
    "TileConfig": "geoclass.data.tiling",
    "tile": "geoclass.data.tiling",
    "TrainConfig": "geoclass.engine.train",
    "train": "geoclass.engine.train",
    "resume": "geoclass.engine.train",
    "PixelTrainConfig": "geoclass.engine.train.pixels",
    "train_pixels": "geoclass.engine.train.pixels",
    "EvalConfig": "geoclass.engine.evaluate",
    "evaluate": "geoclass.engine.evaluate",
    "PredictConfig": "geoclass.engine.predict",
    "predict": "geoclass.engine.predict",
    "MosaicConfig": "geoclass.engine.mosaic",
    "mosaic": "geoclass.engine.mosaic",
    "polygonize_class_map": "geoclass.io.vector_writer",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'geoclass' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
