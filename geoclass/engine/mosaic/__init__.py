"""Mosaic class maps (or raw scenes) of neighbouring areas onto one grid, block by block.

The data flows through one module per stage:

- ``inputs``: each input opened and described once (kind, bands, class metadata, files);
- ``grid``: the output grid (CRS, resolution, union of extents) and each input's place on it;
- ``composite``: one output block, each input read or reprojected onto it and composited
  (``first``, ``last``, ``max-confidence``);
- ``geotiff`` / ``vrt``: the two outputs, written atomically beside the target;
- ``run``: ``mosaic()``, which ties them under a lock on the output.
"""

from __future__ import annotations

from geoclass.engine.mosaic.config import Method, MosaicConfig, MosaicResult
from geoclass.engine.mosaic.grid import REFUSE_PIXELS, WARN_PIXELS
from geoclass.engine.mosaic.inputs import MosaicInput, confidence_sibling
from geoclass.engine.mosaic.run import mosaic

__all__ = ["Method", "MosaicConfig", "MosaicInput", "MosaicResult", "confidence_sibling", "mosaic"]

# The sparse-canvas limits ``mosaic()`` reads here at each call (tests lower them).
_WARN_PIXELS = WARN_PIXELS
_REFUSE_PIXELS = REFUSE_PIXELS
