"""Training of one architecture on one fold.

Logs through dvclive (so ``dvc plots`` shows loss and Dice curves), keeps the checkpoint of the
best validation Dice as safetensors, and is deterministic on CPU for a given seed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from dvclive import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from timm.scheduler import CosineLRScheduler
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .augment import AugmentConfig
from .checkpoint import save_checkpoint
from .datasets import CropDataset, to_tensor
from .distributed import GlobalBatchSampler, barrier, cleanup, from_main, mean_across, setup
from .errors import DataError
from .inference import resolve_device
from .losses import LossWeights, SegmentationLoss
from .metrics import dice
from .models import Segmenter, build_model
from .prepare import ARRAYS, load_prepared, prepared_path, read_index
from .prepare import INDEX_NAME as PREPARED_INDEX
from .resume import (
    TrainingState,
    fingerprint,
    inputs_digest,
    load_state,
    mark_complete,
    restore,
    save_state,
)
from .stain import INDEX_NAME as STAIN_INDEX
from .stain import NormalizeConfig, StainNormalizer, load_copies
from .utils import seed_everything

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` group of params.yaml."""

    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    crop_size: int = 192
    samples_per_image: int = 2
    ftu_crop_prob: float = 0.5
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    focal_weight: float = 0.0
    aux_weight: float = 0.2  # deep-supervision maps (models with `deep_supervision: true`)
    organ_weight: float = 0.1  # organ head (models with `organ_head: true`)
    pixel_size_weight: float = 0.1  # pixel-size head (models with `pixel_size_head: true`)
    accumulate: int = 1  # gradient accumulation: optimizer steps every `accumulate` batches
    organ_oversample: dict[str, float] = field(default_factory=dict)  # e.g. {lung: 5}
    stain_copy_prob: float = 0.0  # draw a stain-augmented copy instead of the original
    patience: int = 0  # epochs without improvement before stopping; 0 = never stop early
    num_workers: int = 0
    seed: int = 2022
    threads: int = 0  # CPU threads for torch; 0 = all cores
    device: str = "auto"
    amp: bool = True
    resume: bool = True  # continue an interrupted run from its persisted state
    nproc: int = 1  # processes (DDP under torchrun): NCCL on GPU, gloo on CPU
    sync_bn: bool = True  # synchronise BatchNorm statistics across GPU processes (CUDA only)


def train_config(train_group: dict[str, Any], model_cfg: dict[str, Any]) -> TrainConfig:
    """The ``train`` group with the model's own ``train`` overrides (e.g. a lower lr for
    transformers) applied on top."""
    overrides = dict(model_cfg.get("train") or {})
    unknown = set(overrides) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown train override(s) in the model config: {sorted(unknown)}")
    return TrainConfig(**{**train_group, **overrides})


def split_ids(index: Any, fold: int) -> tuple[list[str], list[str]]:
    """Training and validation ids of a fold."""
    return (
        index.loc[index["fold"] != fold, "id"].tolist(),
        index.loc[index["fold"] == fold, "id"].tolist(),
    )


class _NoLive:
    """Stands in for dvclive on the non-main processes, which log nothing."""

    summary: dict[str, Any] = {}

    def __enter__(self) -> _NoLive:
        self.summary = {}
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def log_params(self, params: dict[str, Any]) -> None:
        return None

    def log_metric(self, name: str, value: float) -> None:
        return None

    def next_step(self) -> None:
        return None


def input_files(
    prepared_dir: str | Path,
    train_ids: list[str],
    val_ids: list[str],
    stain_dir: str | Path | None,
    with_copies: bool,
) -> list[Path]:
    """Every file whose content shapes a training run: the prepared index and arrays of its
    images and, when copies are drawn, the stain stage's index and copies of its images."""
    files = [Path(prepared_dir) / PREPARED_INDEX]
    files += [prepared_path(prepared_dir, i, a) for i in [*train_ids, *val_ids] for a in ARRAYS]
    if with_copies and stain_dir is not None:
        index = Path(stain_dir) / STAIN_INDEX
        table = pd.read_csv(index, dtype={"id": str})
        files += [
            index,
            *(Path(stain_dir) / f for f in table.loc[table["id"].isin(train_ids), "file"]),
        ]
    return files


@torch.inference_mode()
def evaluate(
    model: Segmenter, items: list[tuple[np.ndarray, np.ndarray]], device: torch.device
) -> float:
    """Mean per-image Dice at threshold 0.5 on whole prepared images (at training scale)."""
    model.eval()
    scores = []
    for image, mask in items:
        logits = model(to_tensor(image).unsqueeze(0).to(device))
        scores.append(dice((logits[0, 0] > 0).cpu().numpy(), mask))
    return float(np.mean(scores)) if scores else math.nan


def train_fold(
    prepared_dir: str | Path,
    model_name: str,
    model_cfg: dict[str, Any],
    fold: int,
    cfg: TrainConfig,
    um_per_px: float,
    out_dir: str | Path,
    live_dir: str | Path,
    state_dir: str | Path | None = None,
    augment: AugmentConfig | None = None,
    stain_dir: str | Path | None = None,
    normalize: NormalizeConfig | None = None,
) -> dict[str, Any]:
    """Train ``model_name`` on all folds but ``fold``, validate on ``fold``; returns a summary.

    With ``state_dir`` (and ``cfg.resume``), the state after every epoch is persisted there and a
    run killed part-way continues from its last completed epoch, ending with the same weights
    and logs as an uninterrupted run (see :mod:`ftuseg.resume`).

    ``augment`` is the augmentation recipe (default: dihedral only), ``stain_dir`` the stain
    stage's output (copies drawn with ``cfg.stain_copy_prob``), ``normalize`` the stain
    normalisation applied to every training and validation image and recorded in the checkpoint
    so inference applies it too.
    """
    augment = augment if augment is not None else AugmentConfig()
    normalize = normalize or NormalizeConfig()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    info = setup(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    seed = cfg.seed + 1000 * fold
    seed_everything(seed)

    index = read_index(prepared_dir)
    if fold not in set(index["fold"]):
        raise ValueError(
            f"fold {fold} does not exist in {prepared_dir} (folds: {sorted(set(index['fold']))})"
        )
    if cfg.accumulate < 1:
        raise ValueError(f"train.accumulate must be >= 1, got {cfg.accumulate}")
    train_ids, val_ids = split_ids(index, fold)
    if cfg.stain_copy_prob > 0 and stain_dir is None:
        raise DataError(
            f"train.stain_copy_prob is {cfg.stain_copy_prob} but no stain stage output was given"
        )
    train_pixel_sizes = sorted(
        {float(v) for v in index.loc[index["id"].isin(train_ids), "pixel_size"]}
    )
    normalizer = StainNormalizer(normalize)
    dataset = CropDataset(
        prepared_dir,
        train_ids,
        cfg.crop_size,
        cfg.samples_per_image,
        cfg.ftu_crop_prob,
        augment=augment,
        seed=seed,
        organ_oversample=cfg.organ_oversample,
        um_per_px=um_per_px,
        stain_copies=load_copies(stain_dir, train_ids) if cfg.stain_copy_prob > 0 else None,
        stain_copy_prob=cfg.stain_copy_prob,
        normalize=normalizer if normalizer.enabled else None,
    )
    # The same global batches whatever the number of processes; each rank takes its slice.
    sampler = GlobalBatchSampler(
        len(dataset), cfg.batch_size, len(dataset) > cfg.batch_size, seed, info
    )
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers)
    val_items = [load_prepared(prepared_dir, i, mmap=True) for i in val_ids]
    val_items = [(normalizer(im, i), m) for (im, m), i in zip(val_items, val_ids, strict=True)]

    model = build_model(model_cfg)
    if info.enabled and device.type == "cuda" and cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    # DDP shares the parameters with `model`; evaluation and checkpoints use `model` directly.
    heads = model.has_heads
    net = (
        DistributedDataParallel(
            model,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=heads,
        )
        if info.enabled
        else model
    )
    criterion = SegmentationLoss(
        LossWeights(
            cfg.bce_weight,
            cfg.dice_weight,
            cfg.focal_weight,
            cfg.aux_weight,
            cfg.organ_weight,
            cfg.pixel_size_weight,
        )
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    updates_per_epoch = math.ceil(len(loader) / cfg.accumulate)
    steps = cfg.epochs * updates_per_epoch
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=steps,
        lr_min=cfg.lr * 0.01,
        warmup_t=round(cfg.warmup_epochs * updates_per_epoch),
        warmup_lr_init=cfg.lr * 0.01,
        t_in_epochs=False,
    )
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    # Everything that determines the run; the execution knobs (threads, workers, resume) do not.
    run_id = fingerprint(
        {
            "model": model_name,
            "model_cfg": model_cfg,
            "cfg": {
                k: v
                for k, v in asdict(cfg).items()
                if k not in ("threads", "num_workers", "resume")
            },
            "um_per_px": um_per_px,
            "fold": fold,
            "train_ids": train_ids,
            "val_ids": val_ids,
            "augment": asdict(augment),
            "normalize": asdict(normalize),
            "stain_copies": str(stain_dir) if cfg.stain_copy_prob > 0 else None,
            # a GPU run resumes on a GPU (its CUDA RNG and GradScaler state), a CPU run on a CPU
            "device": device.type,
            "inputs": inputs_digest(
                input_files(prepared_dir, train_ids, val_ids, stain_dir, cfg.stain_copy_prob > 0)
            ),
        }
    )
    state = TrainingState(run_id)
    best_weights = None
    resumed = load_state(state_dir, run_id) if (state_dir and cfg.resume) else None
    if resumed is not None:
        state, tensors, saved = resumed
        best_weights = restore(tensors, saved, model, optimizer, scaler)
        log.info(
            "resuming %s fold %d after epoch %d (best %d)",
            model_name,
            fold,
            state.epoch,
            state.best_epoch,
        )

    resumed_from = state.epoch

    def checkpoint_meta(epoch: int, val_dice: float) -> dict[str, Any]:
        return {
            "name": model_name,
            "model_cfg": model_cfg,
            "um_per_px": um_per_px,
            "stain_normalize": asdict(normalize),
            "fold": fold,
            "epoch": epoch,
            "val_dice": round(val_dice, 5),
            "train_ids": train_ids,
            "val_ids": val_ids,
            # What `inference.scale_handling: false` assumes every image has.
            "train_pixel_sizes": train_pixel_sizes,
        }

    if resumed is not None and best_weights is not None and info.is_main:
        # The killed run's checkpoint folder is gone (DVC clears outputs); re-emit the best one.
        current = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_weights)
        save_checkpoint(out_dir, model, checkpoint_meta(state.best_epoch, state.best_val_dice))
        model.load_state_dict(current)

    started = time.perf_counter()
    stopped_early = False
    with (
        Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
        if info.is_main
        else _NoLive() as live,
        Progress(
            TextColumn(f"train {model_name} fold {fold}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "epoch {task.fields[epoch]} loss {task.fields[loss]:.4f} dice {task.fields[dice]:.4f}"
            ),
            TimeElapsedColumn(),
            disable=not info.is_main,
        ) as progress,
    ):
        live.log_params({"model": model_name, "fold": fold, **asdict(cfg)})
        for logged in state.history:  # replay the epochs a killed run already logged
            for name, value in logged.items():
                live.log_metric(name, value)
            live.next_step()
        task = progress.add_task(
            "train",
            total=cfg.epochs * len(loader),
            completed=state.epoch * len(loader),
            epoch=state.epoch,
            loss=math.nan,
            dice=math.nan,
        )
        for epoch in range(state.epoch, cfg.epochs):
            model.train()
            dataset.set_epoch(epoch)
            sampler.set_epoch(epoch)  # the data order depends on the epoch alone
            losses: list[float] = []
            parts_sum: dict[str, float] = {}
            optimizer.zero_grad(set_to_none=True)
            for i, batch in enumerate(loader):
                batch = {k: v.to(device) for k, v in batch.items()}
                update = (i + 1) % cfg.accumulate == 0 or i + 1 == len(loader)
                # Gradients of non-final micro-batches stay local (DDP syncs on the update).
                sync = contextlib.nullcontext() if update or not info.enabled else net.no_sync()
                with sync:
                    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                        output = net(batch["image"], heads=heads)
                    loss, parts = criterion(
                        output, batch["mask"], batch["organ"], batch["log_pixel_size"]
                    )
                    scaler.scale(loss / cfg.accumulate).backward()
                if update:
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step_update(epoch * updates_per_epoch + (i // cfg.accumulate) + 1)
                losses.append(loss.item())
                for name, value in parts.items():
                    parts_sum[name] = parts_sum.get(name, 0.0) + value
                progress.update(task, advance=1, epoch=epoch + 1, loss=float(np.mean(losses)))
            # Validation on the main process; every rank gets its score for early stopping.
            val_dice = from_main(evaluate(model, val_items, device) if info.is_main else 0.0, info)
            progress.update(task, dice=val_dice)
            metrics = {
                "train/loss": mean_across(float(np.mean(losses)), info),
                **{
                    f"train/loss_{name}": mean_across(value / len(losses), info)
                    for name, value in parts_sum.items()
                    if len(parts_sum) > 1
                },
                "train/lr": optimizer.param_groups[0]["lr"],
                "val/dice": val_dice,
            }
            for name, value in metrics.items():
                live.log_metric(name, value)
            live.next_step()
            state.history.append(metrics)
            state.epoch = epoch + 1
            if val_dice > state.best_val_dice:
                state.best_val_dice, state.best_epoch, state.stale = val_dice, epoch + 1, 0
                if info.is_main:
                    save_checkpoint(out_dir, model, checkpoint_meta(epoch + 1, val_dice))
                best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                state.stale += 1
                stopped_early = bool(cfg.patience and state.stale >= cfg.patience)
            if state_dir and info.is_main:
                save_state(state_dir, state, model, optimizer, best_weights, scaler)
            barrier(info)
            if stopped_early:
                log.info("early stop after epoch %d (best %d)", epoch + 1, state.best_epoch)
                break
        summary = {
            "best_val_dice": round(state.best_val_dice, 5),
            "best_epoch": state.best_epoch,
            "epochs_run": state.epoch,
        }
        for key, value in summary.items():
            live.summary[key] = value
    if state_dir and info.is_main:
        mark_complete(state_dir, state)
    cleanup(info)
    # Wall time is reported but kept out of the metrics file, which must be reproducible.
    return {
        **summary,
        "resumed_from_epoch": resumed_from,
        "seconds": round(time.perf_counter() - started, 1),
    }
