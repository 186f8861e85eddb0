"""Which split each chip goes to: square blocks of chip steps, assigned by a seeded hash.

The scene is cut into square blocks of ``block_size`` x ``block_size`` chip steps; each block goes
to train or val by a seeded hash of its position, so neighbouring chips share a split and a run is
reproducible. ``Splitter`` then moves at most one block so that both splits have chips.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from geoclass.io.stats import BandMoments

if TYPE_CHECKING:
    from geoclass.data.tiling.worker import Outcome

__all__ = ["Aggregate", "Splitter", "block_split"]


def _block_u(seed: int, block: tuple[int, int]) -> float:
    digest = hashlib.blake2b(f"{seed}/{block[0]}/{block[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def block_split(row: int, col: int, block_px: int, val_fraction: float, seed: int) -> str:
    """Preliminary split of the chip at pixel offset (row, col): its block's seeded hash.

    ``tile`` may move one whole block afterwards so that a dataset of two or more blocks has both
    a train and a val split; ``chips.csv`` holds the final assignment.
    """
    block = (row // block_px, col // block_px)
    return "val" if _block_u(seed, block) < val_fraction else "train"


@dataclass
class Aggregate:
    """Chip counts, pixel counts and statistics of a set of chips (a split, or one block)."""

    moments: BandMoments
    chips: dict[str, int] = field(default_factory=dict)
    pixels: np.ndarray | None = None

    def add(self, outcome: Outcome, stats: bool) -> None:
        """Count one chip; merge its statistics when ``stats``."""
        self.chips[outcome.label] = self.chips.get(outcome.label, 0) + 1
        if outcome.pixels is not None:
            self.pixels = outcome.pixels.copy() if self.pixels is None else self.pixels + outcome.pixels
        if stats and outcome.moments is not None:
            self.moments.merge(outcome.moments)

    def merge(self, other: Aggregate) -> None:
        """Add another aggregate's chips, pixels and statistics."""
        for k, v in other.chips.items():
            self.chips[k] = self.chips.get(k, 0) + v
        if other.pixels is not None:
            self.pixels = other.pixels.copy() if self.pixels is None else self.pixels + other.pixels
        self.moments.merge(other.moments)

    @property
    def total(self) -> int:
        """Number of chips."""
        return sum(self.chips.values())


@dataclass
class _Candidate:
    """The block that would change split if one split ends up empty (see ``Splitter``)."""

    key: tuple[float, tuple[int, int]]
    block: tuple[int, int]
    agg: Aggregate


class Splitter:
    """Assigns chips to splits by block, keeping just enough state to fix an empty split.

    Chips go to train or val by their block's hash. To guarantee a train split (whenever there is
    any chip) and a val split (whenever ``val_fraction > 0`` and there are two or more blocks) the
    one block that would move is tracked separately: the train block with the smallest hash and
    the val block with the largest. A block's first chip decides whether it becomes the
    candidate, so the candidate's aggregate always holds all of its chips: memory is O(1) in the
    number of blocks.
    """

    def __init__(self, block_px: int, val_fraction: float, seed: int, new: Callable[[], Aggregate]) -> None:
        self.block_px = block_px
        self.val_fraction = val_fraction
        self.seed = seed
        self._new = new
        self.main = {"train": new(), "val": new()}
        self.cand: dict[str, _Candidate | None] = {"train": None, "val": None}
        self._first_train: tuple[int, int] | None = None
        self._many_train = False
        self.moved: dict[tuple[int, int], str] = {}

    def block_of(self, row: int, col: int) -> tuple[int, int]:
        """The block of the chip at pixel offset (row, col)."""
        return (row // self.block_px, col // self.block_px)

    def add(self, outcome: Outcome) -> str:
        """Account for one chip; return its preliminary split (its block's hash)."""
        block = self.block_of(outcome.row, outcome.col)
        u = _block_u(self.seed, block)
        split = "val" if u < self.val_fraction else "train"
        # Train keeps its smallest-hash block apart, val its largest.
        key = (u, block) if split == "train" else (-u, (-block[0], -block[1]))
        if split == "train":
            if self._first_train is None:
                self._first_train = block
            elif block != self._first_train:
                self._many_train = True
        cand = self.cand[split]
        if cand is None or key < cand.key:
            if cand is not None:
                self.main[split].merge(cand.agg)
            cand = self.cand[split] = _Candidate(key, block, self._new())
        target = cand.agg if block == cand.block else self.main[split]
        # Val statistics are never reported, but the val candidate may still move to train.
        target.add(outcome, stats=split == "train" or target is cand.agg)
        return split

    def finish(self) -> dict[str, Aggregate]:
        """Final aggregates per split; ``moved`` then names the block that changed split."""
        train_c, val_c = self.cand["train"], self.cand["val"]
        train, val = self.main["train"], self.main["val"]
        if train_c is None and val_c is not None:
            # No train chip at all: the val block closest to the threshold becomes train.
            self.moved[val_c.block] = "train"
            train.merge(val_c.agg)
            return {"train": train, "val": val}
        if val_c is not None:
            val.merge(val_c.agg)
        if train_c is not None:
            if val.total == 0 and self.val_fraction > 0 and self._many_train:
                self.moved[train_c.block] = "val"
                val.merge(train_c.agg)
            else:
                train.merge(train_c.agg)
        return {"train": train, "val": val}

    def final_split(self, row: int, col: int, split: str) -> str:
        """The chip's split after ``finish`` (``split`` unless its block moved)."""
        return self.moved.get(self.block_of(row, col), split) if self.moved else split
