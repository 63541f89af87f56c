"""Multi-process training with torch.distributed: NCCL on GPU, gloo on CPU, launched by torchrun.

The train stage relaunches itself under ``torchrun --standalone --nproc_per_node N`` when
``train.nproc > 1``, so ``dvc repro`` runs the same command either way. ``train.batch_size`` is
the *global* batch: every rank takes its slice of the same global batches that a single process
would see, so 1 and N processes follow the same data order.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def setup(device: torch.device) -> DistInfo:
    """Join the process group when started by torchrun; a no-op for a single process."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def mean_across(value: float, info: DistInfo) -> float:
    """Mean of a scalar over all ranks."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item() / info.world_size)


def from_main(value: float, info: DistInfo) -> float:
    """The main rank's value of a scalar, on every rank."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return float(t.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


class GlobalBatchSampler(Sampler[list[int]]):
    """Batches of a per-epoch seeded permutation; each rank yields its slice of every batch.

    With ``world_size=1`` this is an ordinary shuffled batch sampler; with N ranks, rank r of
    global batch b holds ``batch[r * B/N : (r + 1) * B/N]``, so the union over ranks is exactly
    the single-process batch. Several ranks always drop a short last batch (a rank with nothing
    to do would stall the others).
    """

    def __init__(
        self, n: int, batch_size: int, drop_last: bool, seed: int, info: DistInfo = DistInfo()
    ) -> None:
        if batch_size % info.world_size:
            raise ValueError(
                f"train.batch_size ({batch_size}) must be divisible by the number of processes ({info.world_size})"
            )
        self.n, self.batch_size, self.seed, self.info = n, batch_size, seed, info
        self.drop_last = drop_last or info.enabled
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(
            self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)
        ).tolist()
        per_rank = self.batch_size // self.info.world_size
        for b in range(len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield (
                batch[self.info.rank * per_rank : (self.info.rank + 1) * per_rank]
                if self.info.enabled
                else batch
            )


def relaunch(nproc: int, argv: Sequence[str]) -> int:
    """Run this script again under torchrun with ``nproc`` processes; returns its exit code."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *argv,
    ]
    return subprocess.run(cmd).returncode
