"""Training on several processes with ``torch.distributed`` (DDP; gloo on CPU, NCCL on GPUs).

Every rank draws the same global batch (its rows and masking depend only on the seed and the
draw) and trains on its share of the rows; DDP averages the gradients. The loss of a share is its
summed cross-entropy over the *global* number of masked tokens (times the world size, which DDP's
averaging divides out), so the update equals a single process's on the whole batch, within
floating-point rounding. Rank 0 alone writes logs and checkpoints, and decides when to stop.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from encoder.masking import IGNORE_INDEX

log = logging.getLogger(__name__)

# What rank 0 tells the others after a step.
CONTINUE, STOP, FAILED = 0, 1, 2


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: its rank and the number of processes."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes logs and checkpoints and decides when to stop."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process."""
        return self.world > 1


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` / ``torch.distributed.run``."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_device(device: torch.device) -> torch.device:
    """Under torchrun on GPUs, each process its own GPU (``cuda:LOCAL_RANK``); else ``device``."""
    if device.type == "cuda" and launched_by_torchrun():
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def join(device: torch.device) -> Ranks:
    """The run's ranks: joins the process group torchrun describes in the environment (NCCL for
    a CUDA device, gloo otherwise) if not joined yet; a single process otherwise."""
    if not dist.is_available():
        return Ranks()
    if not dist.is_initialized():
        if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) < 2:
            return Ranks()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        log.info("joined the process group: rank %d of %d", dist.get_rank(), dist.get_world_size())
    return Ranks(dist.get_rank(), dist.get_world_size())


def wrap(module: torch.nn.Module, device: torch.device, unused_parameters: bool) -> torch.nn.Module:
    """``module`` under DDP, which averages its gradients across the ranks during backward.
    ``unused_parameters``: some parameters may get no gradient in a step (the NSP head on a
    reading step)."""
    return DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=unused_parameters,
        broadcast_buffers=False,  # BERT's buffers are constant position and token-type ids
    )


def no_sync(module: torch.nn.Module, last_micro_batch: bool) -> contextlib.AbstractContextManager[None]:
    """Skip the gradient all-reduce on the micro-batches before the last one of a step."""
    if isinstance(module, DistributedDataParallel) and not last_micro_batch:
        return module.no_sync()
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Share:
    """This rank's rows of a global batch, with what its loss is divided by: the global number of
    masked tokens (and of NSP rows) over the world size."""

    inputs: dict[str, torch.Tensor | None]
    nsp_labels: torch.Tensor | None
    mlm_divisor: float
    nsp_divisor: float


def share(inputs: Mapping[str, torch.Tensor | None], nsp_labels: torch.Tensor | None, ranks: Ranks) -> Share:
    """This rank's contiguous share of the rows of every tensor in ``inputs`` (batch dimension
    first), and the divisors that make the averaged gradient the global batch's."""
    labels = inputs["labels"]
    if labels is None:
        raise ValueError("train_mlm: the batch's labels are None (a batch_hook must keep them)")
    if labels.shape[0] < ranks.world:
        raise ValueError(f"train_mlm: a batch of {labels.shape[0]} rows cannot be shared by {ranks.world} processes")
    masked = int((labels != IGNORE_INDEX).sum())
    mine = {k: (None if v is None else v.tensor_split(ranks.world)[ranks.rank]) for k, v in inputs.items()}
    nsp = None if nsp_labels is None else nsp_labels.tensor_split(ranks.world)[ranks.rank]
    rows = labels.shape[0]
    return Share(mine, nsp, max(masked, 1) / ranks.world, rows / ranks.world)


def global_mean(value: torch.Tensor, ranks: Ranks) -> float:
    """The mean over the ranks of a scalar (each rank's loss term): the global batch's loss."""
    if not ranks.distributed:
        return float(value.item())
    total = value.detach().float().reshape(1).clone()
    dist.all_reduce(total)
    return float(total.item()) / ranks.world


def rank0_says(decision: int, ranks: Ranks, device: torch.device) -> int:
    """Rank 0's ``decision`` (:data:`CONTINUE`, :data:`STOP`, :data:`FAILED`), on every rank."""
    if not ranks.distributed:
        return decision
    flag = torch.tensor([decision], dtype=torch.int64, device=device if device.type == "cuda" else "cpu")
    dist.broadcast(flag, src=0)
    return int(flag.item())


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (after rank 0 wrote a checkpoint the others may read)."""
    if ranks.distributed:
        dist.barrier()


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Ranks]:
    """Join the process group torchrun describes (see :func:`join`) for the duration and leave it
    afterwards; for scripts run by torchrun."""
    ranks = join(device)
    try:
        yield ranks
    finally:
        if ranks.distributed and dist.is_initialized():
            dist.destroy_process_group()
