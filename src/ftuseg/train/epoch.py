"""One training epoch: forward, loss (with the DANN and pseudo-label terms when on), backward and
optimiser step per global batch, with loss scaling on CUDA."""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ftuseg.models.losses import SegmentationLoss
from ftuseg.train.config import (
    Runtime,
    TrainConfig,
)
from ftuseg.train.dann import DomainAdversarial
from ftuseg.train.optimisation import Optimisation


@dataclass(frozen=True)
class Trainee:
    """What an epoch updates: the network as it runs (DDP-wrapped or not), whether its output
    carries the heads, the loss, the optimiser, and the domain-adversarial branch (or None)."""

    net: torch.nn.Module
    heads: bool
    criterion: SegmentationLoss
    opt: Optimisation
    domain: DomainAdversarial | None = None


def train_epoch(
    trainee: Trainee,
    loader: DataLoader,
    epoch: int,
    cfg: TrainConfig,
    runtime: Runtime,
    advance: Any,
) -> dict[str, float]:
    """One pass over the loader; returns the mean loss and loss parts of this process.

    Batches arrive as NHWC uint8 and become floats on the device (a quarter of the bytes to
    copy); pinned batches copy asynchronously while the previous step computes. With
    ``domain``, each batch is joined by a batch of unlabeled target crops (see
    :mod:`ftuseg.train.dann`).
    """
    net, heads, criterion, opt, domain = (
        trainee.net,
        trainee.heads,
        trainee.criterion,
        trainee.opt,
        trainee.domain,
    )
    losses: list[float] = []
    parts_sum: dict[str, float] = {}
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    opt.optimizer.zero_grad(set_to_none=True)
    batches = len(loader)
    if cfg.max_steps:  # the batches of the updates left under the cap, no more
        left = cfg.max_steps - epoch * opt.updates_per_epoch
        batches = max(0, min(batches, left * cfg.accumulate))
    targets = domain.batches() if domain is not None else None

    def on_device(images: torch.Tensor) -> torch.Tensor:
        # (B, S, S, 3) uint8 -> (B, 3, S, S) float: a view, then one conversion on the device
        images = images.to(runtime.device, non_blocking=True).permute(0, 3, 1, 2)
        return images.float().div_(255.0).contiguous(memory_format=memory)

    for i, batch in enumerate(itertools.islice(loader, batches)):
        batch = {k: v.to(runtime.device, non_blocking=True) for k, v in batch.items()}
        image = on_device(batch["image"])
        n_source = image.shape[0]
        if domain is not None and targets is not None:
            domain.set_progress(epoch * opt.updates_per_epoch + i // cfg.accumulate)
            image = torch.cat([image, on_device(next(targets))])
        update = (i + 1) % cfg.accumulate == 0 or i + 1 == batches
        # Gradients of non-final micro-batches stay local (DDP syncs on the update).
        sync = net.no_sync() if runtime.info.enabled and not update else contextlib.nullcontext()
        with sync:
            dtype, enabled = opt.autocast or torch.float32, opt.autocast is not None
            with torch.autocast(runtime.device.type, dtype=dtype, enabled=enabled):
                output = net(image, heads=heads)
            domain_loss = None
            if domain is not None:
                output, domain_loss = domain.split(output, n_source)
            loss, parts = criterion(
                output, batch["mask"].float(), batch["organ"], batch["log_pixel_size"]
            )
            if domain_loss is not None:
                loss = loss + domain_loss
                parts["domain"] = float(domain_loss.detach())
            opt.scaler.scale(loss / cfg.accumulate).backward()
        if update:
            opt.scaler.step(opt.optimizer)
            opt.scaler.update()
            opt.optimizer.zero_grad(set_to_none=True)
            step = epoch * opt.updates_per_epoch + (i // cfg.accumulate) + 1
            opt.scheduler.step_update(step)
            opt.average(net, step)
        losses.append(loss.item())
        for name, value in parts.items():
            parts_sum[name] = parts_sum.get(name, 0.0) + value
        advance(float(np.mean(losses)))
    return {
        "loss": float(np.mean(losses)),
        **{f"loss_{k}": v / len(losses) for k, v in parts_sum.items() if len(parts_sum) > 1},
    }
