"""Per-band statistics of valid pixels, merged window by window (or chip by chip) in bounded memory.

The one implementation of band statistics: ``Scene.statistics`` streams windows into a
``StatsAccumulator``; ``geoclass tile`` merges one ``BandMoments`` per chip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BandMoments", "BandStatistics", "StatsAccumulator", "hist_offset"]

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


def hist_offset(dtype: str | np.dtype) -> int | None:
    """Value of histogram bin 0 for integer types of up to 16 bits; None (no histogram) otherwise."""
    dt = np.dtype(dtype)
    if dt.kind in "ui" and dt.itemsize * 8 <= _MAX_HIST_BITS:
        return int(np.iinfo(dt).min)
    return None


def _hist_percentile(hist: np.ndarray, n: int, p: float) -> float:
    """``np.percentile(values, p)`` (linear) from a histogram of ``n`` integer values (bin 0 = 0)."""
    cum = np.cumsum(hist)
    pos = p / 100.0 * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    v_lo = int(np.searchsorted(cum, lo, side="right"))
    v_hi = int(np.searchsorted(cum, hi, side="right"))
    return float(v_lo + (pos - lo) * (v_hi - v_lo))


@dataclass
class BandMoments:
    """Mergeable per-band statistics of valid pixels.

    Integer types of up to 16 bits keep an exact histogram per band (cheap per window, and mean,
    std, min, max and percentiles all follow from it exactly); other types keep count, mean, M2
    (Chan's parallel update), min and max.

    Attributes:
        count: Number of bands.
        hist_offset: Value of histogram bin 0 (``hist_offset(dtype)``); None keeps no histogram.
        n: Number of pixels merged so far.
    """

    count: int
    hist_offset: int | None
    n: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    hist: list[np.ndarray] | None = None

    @classmethod
    def of(cls, values: np.ndarray, hist_offset: int | None) -> BandMoments:
        """Statistics of ``(count, n)`` values (the valid pixels of one window or chip)."""
        m = cls(values.shape[0], hist_offset, values.shape[1])
        if hist_offset is not None:
            shifted = values if hist_offset == 0 else values.astype(np.int32) - hist_offset
            m.hist = [np.bincount(shifted[b].ravel()) for b in range(values.shape[0])]
            return m
        v = values.astype(np.float64, copy=False)
        m.mean = v.mean(axis=1)
        m.m2 = ((v - m.mean[:, None]) ** 2).sum(axis=1)
        m.lo, m.hi = v.min(axis=1), v.max(axis=1)
        return m

    def merge(self, other: BandMoments) -> None:
        """Add ``other``'s pixels to these statistics."""
        if other.n == 0:
            return
        if other.hist is not None:
            if self.hist is None:
                self.hist = [np.zeros(256 if h.size <= 256 else 65536, np.int64) for h in other.hist]
            for b, h in enumerate(other.hist):
                if h.size > self.hist[b].size:
                    grown = np.zeros(65536, np.int64)
                    grown[: self.hist[b].size] = self.hist[b]
                    self.hist[b] = grown
                self.hist[b][: h.size] += h
        elif self.n == 0:
            assert other.mean is not None and other.m2 is not None
            self.mean, self.m2 = other.mean.copy(), other.m2.copy()
            self.lo, self.hi = other.lo, other.hi
        else:
            assert self.mean is not None and self.m2 is not None and self.lo is not None
            assert other.mean is not None and other.m2 is not None and other.lo is not None
            assert self.hi is not None and other.hi is not None
            total = self.n + other.n
            delta = other.mean - self.mean
            self.mean = self.mean + delta * (other.n / total)
            self.m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / total)
            self.lo, self.hi = np.minimum(self.lo, other.lo), np.maximum(self.hi, other.hi)
        self.n += other.n

    def result(self, percentiles: Sequence[float] = (2.0, 98.0)) -> BandStatistics | None:
        """The statistics so far (percentiles only with a histogram); None without any pixel."""
        if self.n == 0:
            return None
        if self.hist is not None:
            off = self.hist_offset or 0
            mean, std, lo, hi = [], [], [], []
            for h in self.hist:
                vals = np.arange(h.size, dtype=np.float64) + off
                mu = float((h * vals).sum() / self.n)
                mean.append(mu)
                std.append(float(np.sqrt(max((h * (vals - mu) ** 2).sum() / self.n, 0.0))))
                nz = np.flatnonzero(h)
                lo.append(float(nz[0] + off))
                hi.append(float(nz[-1] + off))
            pct = {float(p): [_hist_percentile(h, self.n, p) + off for h in self.hist] for p in percentiles}
            return BandStatistics(mean=mean, std=std, min=lo, max=hi, percentiles=pct,
                                  pixel_count=int(self.n))
        assert self.mean is not None and self.m2 is not None
        assert self.lo is not None and self.hi is not None
        return BandStatistics(
            mean=[float(v) for v in self.mean],
            std=[float(v) for v in np.sqrt(np.maximum(self.m2 / self.n, 0.0))],
            min=[float(v) for v in self.lo],
            max=[float(v) for v in self.hi],
            pixel_count=int(self.n),
        )


class StatsAccumulator:
    """Merges per-window band values into running statistics (``BandMoments``).

    Percentiles are exact for integer types of up to 16 bits (a full histogram) and come from a
    bounded random sample otherwise.
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
        self._moments = BandMoments(count, hist_offset(self.dtype))
        self._samples: list[list[np.ndarray]] = [[] for _ in range(count)]
        self._sampled = 0
        self._per_window = max(256, _SAMPLE_CAP // max(1, expected_windows))
        self._rng = np.random.default_rng(seed)

    @property
    def n(self) -> int:
        """Number of valid pixels added so far."""
        return self._moments.n

    def update(self, values: np.ndarray) -> None:
        """Add one window's valid pixels, shaped ``(count, n)``."""
        k = values.shape[1]
        if k == 0:
            return
        self._moments.merge(BandMoments.of(values, self._moments.hist_offset))
        if self._moments.hist_offset is None and self.percentiles:
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

    def result(self) -> BandStatistics:
        """The statistics so far; raises ``ValueError`` when no pixel was added."""
        stats = self._moments.result(self.percentiles)
        if stats is None:
            raise ValueError("no valid pixels")
        if self._moments.hist_offset is None and self.percentiles:
            stats.percentiles = {
                p: [float(np.percentile(np.concatenate(self._samples[b]), p)) for b in range(self.count)]
                for p in self.percentiles
            }
        return stats
