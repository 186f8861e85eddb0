"""Training on several processes (``torchrun``): who this process is, and the few collectives.

``torchrun --nproc-per-node N -m geoclass train ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in the environment. Each
process trains on its shard of every epoch's order (``SeededSampler(rank=, world=)``) with
``batch_size / N`` chips per step, so the global batch, the steps per epoch and the learning-rate
schedule are those of one process; DistributedDataParallel averages the gradients (gloo on CPUs,
NCCL on CUDA). Validation is sharded too and the confusion matrices summed, so every process
gets the same numbers and takes the same decisions (best epoch, early stop). Only rank 0 writes
the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from geoclass.errors import ConfigError

__all__ = [
    "Ranks",
    "all_sum",
    "barrier",
    "init_ranks",
    "launched_ranks",
    "rank_device",
    "shutdown",
    "wrap_model",
]


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job (``world == 1``: an ordinary one-process run)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run folder and reports progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched_ranks() -> Ranks:
    """The ranks ``torchrun`` (or any launcher setting ``WORLD_SIZE``/``RANK``) gave this process."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Ranks()
    return Ranks(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_ranks(batch_size: int, device: torch.device) -> Ranks:
    """Join the process group when launched by torchrun (no-op for one process).

    Raises:
        ConfigError: A batch size that the processes cannot share evenly.
    """
    ranks = launched_ranks()
    if not ranks.distributed:
        return ranks
    if batch_size % ranks.world:
        raise ConfigError(f"--batch-size {batch_size} is the global batch and must be a multiple "
                          f"of the {ranks.world} processes; each takes batch-size / processes")
    if not dist.is_initialized():
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.set_device(ranks.local_rank % torch.cuda.device_count())
        dist.init_process_group("nccl" if cuda else "gloo")
    return ranks


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """This rank's device: its own GPU (``LOCAL_RANK``) when training on CUDA."""
    if ranks.distributed and device.type == "cuda":
        return torch.device("cuda", ranks.local_rank % torch.cuda.device_count())
    return device


def wrap_model(model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """The module the training steps call: DDP (gradients averaged) when distributed."""
    if not ranks.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_sum(values: np.ndarray, ranks: Ranks) -> np.ndarray:
    """``values`` summed over all processes (float64 or int64), the same array on every rank."""
    if not ranks.distributed:
        return values
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.numpy()


def barrier(ranks: Ranks) -> None:
    """Wait for every process (e.g. until rank 0 has prepared the run folder)."""
    if ranks.distributed:
        dist.barrier()


def shutdown(ranks: Ranks) -> None:
    """Leave the process group at the end of the run."""
    if ranks.distributed and dist.is_initialized():
        dist.destroy_process_group()
