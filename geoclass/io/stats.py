"""Streaming per-band statistics, computed window by window in bounded memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BandStatistics", "StatsAccumulator"]

# Integer types up to 16 bits get an exact histogram; anything else a bounded random sample.
_MAX_HIST_BITS = 16
_SAMPLE_CAP = 1 << 20


@dataclass
class BandStatistics:
    """Per-band statistics of the valid (non-nodata) pixels of a scene.

    Attributes:
        mean: Mean per band.
        std: Population standard deviation per band.
        min: Minimum per band.
        max: Maximum per band.
        percentiles: ``{p: [value per band]}`` for each requested percentile ``p`` (0-100).
        pixel_count: Number of valid pixels the statistics were computed from.
    """

    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    percentiles: dict[float, list[float]] = field(default_factory=dict)
    pixel_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (percentile keys become strings)."""
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "min": list(self.min),
            "max": list(self.max),
            "percentiles": {_pkey(p): list(v) for p, v in self.percentiles.items()},
            "pixel_count": int(self.pixel_count),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BandStatistics:
        """Inverse of ``to_dict``."""
        return cls(
            mean=[float(v) for v in data["mean"]],
            std=[float(v) for v in data["std"]],
            min=[float(v) for v in data["min"]],
            max=[float(v) for v in data["max"]],
            percentiles={
                float(p): [float(v) for v in vals]
                for p, vals in data.get("percentiles", {}).items()
            },
            pixel_count=int(data.get("pixel_count", 0)),
        )


def _pkey(p: float) -> str:
    return repr(float(p))


class StatsAccumulator:
    """Merges per-window band values into running statistics.

    Mean and variance use Chan's parallel update in float64; percentiles are exact for integer
    types of up to 16 bits (a full histogram) and come from a bounded random sample otherwise.
    """

    def __init__(
        self,
        count: int,
        dtype: str | np.dtype,
        percentiles: Sequence[float] = (2.0, 98.0),
        *,
        expected_windows: int = 64,
        seed: int = 0,
    ) -> None:
        self.count = count
        self.dtype = np.dtype(dtype)
        self.percentiles = tuple(float(p) for p in percentiles)
        for p in self.percentiles:
            if not 0.0 <= p <= 100.0:
                raise ValueError(f"percentile {p} is outside 0-100")
        self.n = 0
        self.mean = np.zeros(count, np.float64)
        self.m2 = np.zeros(count, np.float64)
        self.min = np.full(count, np.inf)
        self.max = np.full(count, -np.inf)
        self._hist: np.ndarray | None = None
        self._hist_offset = 0
        if self.dtype.kind in "ui" and self.dtype.itemsize * 8 <= _MAX_HIST_BITS:
            info = np.iinfo(self.dtype)
            self._hist_offset = int(info.min)
            self._hist = np.zeros((count, int(info.max) - int(info.min) + 1), np.int64)
        self._samples: list[list[np.ndarray]] = [[] for _ in range(count)]
        self._sampled = 0
        self._per_window = max(256, _SAMPLE_CAP // max(1, expected_windows))
        self._rng = np.random.default_rng(seed)

    def update(self, values: np.ndarray) -> None:
        """Add one window's valid pixels, shaped ``(count, n)``."""
        k = values.shape[1]
        if k == 0:
            return
        v64 = values.astype(np.float64, copy=False)
        w_mean = v64.mean(axis=1)
        w_m2 = ((v64 - w_mean[:, None]) ** 2).sum(axis=1)
        total = self.n + k
        delta = w_mean - self.mean
        self.mean = self.mean + delta * (k / total)
        self.m2 = self.m2 + w_m2 + delta**2 * (self.n * k / total)
        self.n = total
        self.min = np.minimum(self.min, v64.min(axis=1))
        self.max = np.maximum(self.max, v64.max(axis=1))
        if self._hist is not None:
            for b in range(self.count):
                idx = values[b].astype(np.int64) - self._hist_offset
                self._hist[b] += np.bincount(idx, minlength=self._hist.shape[1])
        elif self.percentiles:
            take = values
            if k > self._per_window:
                take = values[:, self._rng.choice(k, self._per_window, replace=False)]
            for b in range(self.count):
                self._samples[b].append(np.array(take[b], dtype=np.float64))
            self._sampled += take.shape[1]
            if self._sampled > 2 * _SAMPLE_CAP:
                self._shrink()

    def _shrink(self) -> None:
        keep = self._rng.choice(self._sampled, _SAMPLE_CAP, replace=False)
        for b in range(self.count):
            self._samples[b] = [np.concatenate(self._samples[b])[keep]]
        self._sampled = _SAMPLE_CAP

    def _percentile_from_hist(self, hist: np.ndarray, p: float) -> float:
        # Same as np.percentile(..., method="linear") over the expanded values.
        cum = np.cumsum(hist)
        pos = p / 100.0 * (self.n - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, self.n - 1)
        v_lo = int(np.searchsorted(cum, lo, side="right")) + self._hist_offset
        v_hi = int(np.searchsorted(cum, hi, side="right")) + self._hist_offset
        return float(v_lo + (pos - lo) * (v_hi - v_lo))

    def result(self) -> BandStatistics:
        """The statistics so far; raises ``ValueError`` when no pixel was added."""
        if self.n == 0:
            raise ValueError("no valid pixels")
        pct: dict[float, list[float]] = {}
        for p in self.percentiles:
            if self._hist is not None:
                pct[p] = [self._percentile_from_hist(self._hist[b], p) for b in range(self.count)]
            else:
                pct[p] = [
                    float(np.percentile(np.concatenate(self._samples[b]), p))
                    for b in range(self.count)
                ]
        return BandStatistics(
            mean=[float(v) for v in self.mean],
            std=[float(v) for v in np.sqrt(np.maximum(self.m2 / self.n, 0.0))],
            min=[float(v) for v in self.min],
            max=[float(v) for v in self.max],
            percentiles=pct,
            pixel_count=int(self.n),
        )
