"""Predict a land-cover map of a scene of any size.

The data flows one way through the rooms of this package::

    inputs      the scene's files and the model, checked against each other
    plan        the windows to run (size, stride, offsets), where a resumed run starts,
                windows read in chunks of neighbours
    strategies  how the model turns windows into class scores (windows, dense, pixel)
    blend       overlapping scores blended into finished rows, without seams
    outputs     the class map, probabilities, confidence (strip by strip), vectors, preview
    resume      the fingerprint and progress of a run, so an interrupted one can continue
    stages      read -> infer -> blend -> write, overlapping in threads
    config      what a run is asked (PredictConfig) and what it gave (PredictResult)
    run         ``predict``: ties them together
    batch       ``predict_batch``: many scenes, one map each, and a VRT over the maps

Memory is flat in the scene's height and linear in its width: scores are held for one band of
rows as tall as a window, and rows are written out as soon as no later window can touch them.
Outputs are written to hidden partial files and renamed into place when complete; with
``resume`` an interrupted run continues from its last finished 256-row strip and produces the
same bytes as an uninterrupted run.
"""

from geoclass.engine.predict.batch import BatchResult, SkippedMap, predict_batch, read_batch_list
from geoclass.engine.predict.config import PredictConfig, PredictResult
from geoclass.engine.predict.plan import DEFAULT_OVERLAP
from geoclass.engine.predict.run import predict

__all__ = [
    "DEFAULT_OVERLAP",
    "BatchResult",
    "PredictConfig",
    "PredictResult",
    "SkippedMap",
    "predict",
    "predict_batch",
    "read_batch_list",
]
