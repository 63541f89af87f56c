"""Model, optimiser, LR schedule and loss scaling of one training run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel

from ftuseg.infer.engine import PRECISIONS
from ftuseg.models import Segmenter, build_model
from ftuseg.train.config import (
    Runtime,
    TrainConfig,
)


def total_updates(cfg: TrainConfig, batches: int) -> int:
    """Optimiser updates of the whole run: epochs × updates per epoch, or ``max_steps``."""
    updates = cfg.epochs * math.ceil(batches / cfg.accumulate)
    return min(updates, cfg.max_steps) if cfg.max_steps else updates


@dataclass
class Optimisation:
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    scaler: torch.amp.GradScaler
    autocast: torch.dtype | None  # None: fp32
    updates_per_epoch: int
    ema: ModelEmaV3 | None = None  # the averaged weights (train.ema_decay > 0)

    def scored(self, model: Segmenter) -> Segmenter:
        """The weights validation, checkpoints and OOF use: the average, else ``model``."""
        return self.ema.module if self.ema is not None else model

    def average(self, net: torch.nn.Module, update: int) -> None:
        """Fold the weights after optimiser update ``update`` (1-based) into the average."""
        if self.ema is not None:
            self.ema.update(getattr(net, "module", net), step=update)


def build_optimisation(
    model: Segmenter, cfg: TrainConfig, batches: int, cuda: bool
) -> Optimisation:
    """AdamW, a per-update cosine schedule with warm-up, mixed precision on CUDA and, with
    ``cfg.ema_decay``, a moving average of the weights."""
    if cfg.accumulate < 1:
        raise ValueError(f"train.accumulate must be >= 1, got {cfg.accumulate}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    updates = math.ceil(batches / cfg.accumulate)
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=total_updates(cfg, batches),
        lr_min=cfg.lr * 0.01,
        warmup_t=round(cfg.warmup_epochs * updates),
        warmup_lr_init=cfg.lr * 0.01,
        t_in_epochs=False,
    )
    autocast = PRECISIONS[cfg.precision] if cuda else None
    # bf16 has fp32's range: only fp16 needs loss scaling.
    scaler = torch.amp.GradScaler("cuda", enabled=autocast == torch.float16)
    # The decay warms up (1 - (1 + step)^-3/4: timm's setting for short runs) so the average
    # does not hold on to the random initialisation; every process averages the same weights.
    ema = (
        ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True, warmup_power=0.75)
        if cfg.ema_decay > 0
        else None
    )
    return Optimisation(optimizer, scheduler, scaler, autocast, updates, ema)


def prepare_model(
    model_cfg: dict[str, Any], cfg: TrainConfig, runtime: Runtime
) -> tuple[Segmenter, torch.nn.Module]:
    """The model on its device, and the module the training step calls (DDP-wrapped when
    several processes train). DDP shares the parameters; validation and checkpoints use the
    bare model."""
    model = build_model(model_cfg)
    if runtime.info.enabled and runtime.cuda and cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(runtime.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if not runtime.info.enabled:
        return model, model
    net = DistributedDataParallel(
        model,
        device_ids=[runtime.device] if runtime.cuda else None,
        find_unused_parameters=model.has_heads,
    )
    return model, net
