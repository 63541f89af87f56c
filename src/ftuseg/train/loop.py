"""Training of one architecture on one fold.

Logs through dvclive (so ``dvc plots`` shows loss and Dice curves), keeps the checkpoint of the
best validation Dice as safetensors, and is deterministic on CPU for a given seed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from dvclive import Live
from rich.progress import Progress
from torch.utils.data import DataLoader

from ftuseg.core.errors import DataError
from ftuseg.core.utils import seed_everything
from ftuseg.domain.augment import AugmentConfig
from ftuseg.domain.normalize import NormalizeConfig
from ftuseg.infer.engine import InferenceConfig
from ftuseg.models import Segmenter
from ftuseg.models.checkpoint import save_checkpoint
from ftuseg.models.losses import LossWeights, SegmentationLoss
from ftuseg.train.config import (
    EXECUTION_KNOBS,
    RunDirs,
    Runtime,
    TrainConfig,
    setup_runtime,
)
from ftuseg.train.dann import DomainAdversarial, build_domain_adversarial
from ftuseg.train.datasets import EpochBatches
from ftuseg.train.distributed import (
    barrier,
    cleanup,
    from_main,
    mean_across,
)
from ftuseg.train.epoch import Trainee, train_epoch
from ftuseg.train.inputs import (
    TrainData,
    build_loader,
    fold_ids,
    image_files,
    input_files,
    pseudo_loader,
)
from ftuseg.train.live import NoLive, progress_bar
from ftuseg.train.optimisation import Optimisation, build_optimisation, prepare_model, total_updates
from ftuseg.train.resume import (
    TrainingState,
    fingerprint,
    inputs_digest,
    load_state,
    mark_complete,
    restore,
    save_state,
)
from ftuseg.train.validation import Validator
from ftuseg.train.warm_start import warm_start

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """How a fold trains beside the ``train`` group: the augmentations, the stain normalisation
    (recorded in the checkpoint, so inference normalises too) and the inference settings
    validation predicts with (as the OOF stage does)."""

    augment: AugmentConfig = field(default_factory=AugmentConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)


def run_fingerprint(
    *,
    model_name: str,
    model_cfg: dict[str, Any],
    cfg: TrainConfig,
    fold: int,
    ids: tuple[list[str], list[str]],
    data: TrainData,
    recipe: Recipe,
    device: torch.device,
    files: list[Path],
    init: dict[str, str] | None,
) -> str:
    """Everything that determines the run; the execution knobs (threads, workers, resume) do
    not count."""
    return fingerprint(
        {
            "model": model_name,
            "model_cfg": model_cfg,
            "cfg": {k: v for k, v in asdict(cfg).items() if k not in EXECUTION_KNOBS},
            "um_per_px": data.um_per_px,
            "fold": fold,
            "train_ids": ids[0],
            "val_ids": ids[1],
            "augment": asdict(recipe.augment),
            "normalize": asdict(recipe.normalize),
            "inference": asdict(recipe.inference),
            # a GPU run resumes on a GPU (its CUDA RNG and GradScaler state), a CPU run on a CPU
            "device": device.type,
            "inputs": inputs_digest(files),
            "init": init,
        }
    )


@dataclass
class FoldRun:
    """Everything one fold's training builds before its first epoch, and what it runs with."""

    name: str
    model_cfg: dict[str, Any]
    fold: int
    seed: int
    cfg: TrainConfig
    recipe: Recipe
    data: TrainData
    dirs: RunDirs
    runtime: Runtime
    train_ids: list[str]
    val_ids: list[str]
    train_pixel_sizes: list[float]
    files: tuple[dict[str, Path], dict[str, list[Path]]]
    loader: DataLoader
    sampler: EpochBatches
    validate: Validator
    model: Segmenter
    net: torch.nn.Module
    criterion: SegmentationLoss
    opt: Optimisation
    domain: DomainAdversarial | None
    run_id: str
    init: dict[str, str] | None = None  # train.init: the weights it started from

    def checkpoint_meta(self, epoch: int, val_dice: float) -> dict[str, Any]:
        """What the checkpoint records beside the weights (everything inference needs)."""
        return {
            "name": self.name,
            "model_cfg": self.model_cfg,
            "um_per_px": self.data.um_per_px,
            "stain_normalize": asdict(self.recipe.normalize),
            "fold": self.fold,
            "epoch": epoch,
            "val_dice": round(val_dice, 5),
            "train_ids": self.train_ids,
            "val_ids": self.val_ids,
            # What `inference.scale_handling: false` assumes every image has.
            "train_pixel_sizes": self.train_pixel_sizes,
            # The context the model learnt from: inference tiles default to it.
            "crop_size": self.cfg.crop_size,
            # Only when warm-started: a run from scratch writes the same meta as before.
            **({"init": self.init} if self.init else {}),
        }


def build_fold_run(
    data: TrainData,
    *,
    model_name: str,
    model_cfg: dict[str, Any],
    fold: int,
    cfg: TrainConfig,
    recipe: Recipe,
    dirs: RunDirs,
    runtime: Runtime,
) -> FoldRun:
    """Seed, split, data, validator, model, loss, optimiser, domain head and run fingerprint,
    built in a fixed order (the order of the random draws is part of determinism)."""
    if cfg.pseudo_start and recipe.normalize.method != "none":
        raise DataError(
            "train.pseudo_start > 0 with stain.normalize on: the unlabeled images are not "
            "normalised, so the teacher would label other colours than it was trained on"
        )
    seed = cfg.seed + 1000 * fold
    seed_everything(seed)
    train_ids, val_ids, train_pixel_sizes = fold_ids(data.prepared, fold)
    files = image_files(data, recipe.normalize, [*train_ids, *val_ids], cfg)
    loader, sampler = build_loader(
        data, train_ids, files, cfg=cfg, augment=recipe.augment, seed=seed, runtime=runtime
    )
    validate = Validator(
        data.prepared,
        data.train_csv,
        val_ids,
        um_per_px=data.um_per_px,
        crop_size=cfg.crop_size,
        config=recipe.inference,
        train_pixel_sizes=train_pixel_sizes,
        images=files[0],
    )
    if cfg.domain_weight > 0:  # recorded in the checkpoint: its weights include the head
        model_cfg = {**model_cfg, "domain_head": True}
    model, net = prepare_model(model_cfg, cfg, runtime)
    init = warm_start(model, model_cfg, cfg.init, data.um_per_px) if cfg.init else None
    criterion = SegmentationLoss(
        LossWeights(
            bce=cfg.bce_weight,
            dice=cfg.dice_weight,
            focal=cfg.focal_weight,
            aux=cfg.aux_weight,
            organ=cfg.organ_weight,
            pixel_size=cfg.pixel_size_weight,
        )
    )
    opt = build_optimisation(model, cfg, len(loader), runtime.cuda)
    domain = (
        build_domain_adversarial(
            data.unlabeled,
            model.domain_head,
            crops_per_epoch=len(loader.dataset),
            cfg=cfg,
            total_updates=total_updates(cfg, len(loader)),
            seed=seed + 1,
            runtime=runtime,
        )
        if cfg.domain_weight > 0
        else None
    )
    run_id = run_fingerprint(
        model_name=model_name,
        model_cfg=model_cfg,
        cfg=cfg,
        fold=fold,
        ids=(train_ids, val_ids),
        data=data,
        recipe=recipe,
        device=runtime.device,
        files=input_files(data, [*train_ids, *val_ids], files, cfg),
        init=init,
    )
    return FoldRun(
        name=model_name,
        model_cfg=model_cfg,
        fold=fold,
        seed=seed,
        cfg=cfg,
        recipe=recipe,
        data=data,
        dirs=dirs,
        runtime=runtime,
        train_ids=train_ids,
        val_ids=val_ids,
        train_pixel_sizes=train_pixel_sizes,
        files=files,
        loader=loader,
        sampler=sampler,
        validate=validate,
        model=model,
        net=net,
        criterion=criterion,
        opt=opt,
        domain=domain,
        run_id=run_id,
        init=init,
    )


def train_fold(
    data: TrainData,
    model_name: str,
    model_cfg: dict[str, Any],
    fold: int,
    cfg: TrainConfig,
    dirs: RunDirs,
    *,
    recipe: Recipe | None = None,
) -> dict[str, Any]:
    """Train ``model_name`` on all folds but ``fold``, validate on ``fold``; returns a summary.

    The best epoch is chosen by :class:`~ftuseg.train.validation.Validator`, the OOF stage's own
    computation with ``recipe.inference`` (default: tiles of the training crop, no TTA). With
    ``dirs.state`` (and ``cfg.resume``), the state after every epoch is persisted there and a
    run killed part-way continues from its last completed epoch, ending with the same weights
    and logs as an uninterrupted run (see :mod:`ftuseg.train.resume`).

    ``recipe.augment`` is the augmentation recipe (default: dihedral only); stain copies come
    from ``data.stain`` (drawn with ``cfg.stain_copy_prob``); with ``recipe.normalize`` on,
    every image and copy is read from the normalize stage's cached output and the checkpoint
    records the settings, so inference normalises too.
    """
    runtime = setup_runtime(cfg)
    run = build_fold_run(
        data,
        model_name=model_name,
        model_cfg=model_cfg,
        fold=fold,
        cfg=cfg,
        recipe=recipe or Recipe(),
        dirs=dirs,
        runtime=runtime,
    )
    state, best_weights = resume_run(run)
    resumed_from = state.epoch
    started = time.perf_counter()
    main = runtime.info.is_main
    with (
        Live(str(dirs.live), dvcyaml=None, save_dvc_exp=False, report=None)
        if main
        else NoLive() as live,
        progress_bar(model_name, fold, main) as progress,
        contextlib.ExitStack() as scratch,
    ):
        # Pseudo-labels live with the resumable state (a resumed run reuses them), else in a
        # temporary folder for the run's duration.
        labels_dir = (
            dirs.state / f"pseudo-{run.run_id[:16]}"
            if dirs.state
            else Path(scratch.enter_context(tempfile.TemporaryDirectory())) / "pseudo"
        )
        live.log_params({"model": model_name, "fold": fold, **asdict(cfg)})
        for logged in state.history:  # replay the epochs a killed run already logged
            for name, value in logged.items():
                live.log_metric(name, value)
            live.next_step()
        pseudo_stats = run_epochs(
            run, state, best_weights, live, progress, Pseudo(labels_dir, resumed_from)
        )
        summary = {
            "best_val_dice": round(state.best_val_dice, 5),
            "best_epoch": state.best_epoch,
            "epochs_run": state.epoch,
            **{k.replace("/", "_"): round(v, 5) for k, v in (pseudo_stats or {}).items()},
        }
        for key, value in summary.items():
            live.summary[key] = value
    if dirs.state and main:
        mark_complete(dirs.state, state)
    cleanup(runtime.info)
    # Wall time is reported but kept out of the metrics file, which must be reproducible.
    return {
        **summary,
        "resumed_from_epoch": resumed_from,
        "seconds": round(time.perf_counter() - started, 1),
    }


@dataclass(frozen=True)
class Pseudo:
    """Where a run's pseudo-labels go, and the epoch it resumed from (labels written before it
    are reused, not regenerated)."""

    labels_dir: Path
    resumed_from: int


def run_epochs(
    run: FoldRun,
    state: TrainingState,
    best_weights: dict[str, torch.Tensor] | None,
    live: Any,
    progress: Progress,
    pseudo: Pseudo,
) -> dict[str, float] | None:
    """The epochs from ``state.epoch`` on: train, validate, log, keep the best checkpoint, stop
    early where asked. Returns the pseudo-label statistics (None without self-training)."""
    cfg, runtime = run.cfg, run.runtime
    loader, sampler, pseudo_stats = run.loader, run.sampler, None
    task = progress.add_task(
        "train",
        total=cfg.epochs * len(loader),
        completed=state.epoch * len(loader),
        epoch=state.epoch,
        loss=math.nan,
        dice=math.nan,
    )
    for epoch in range(state.epoch, cfg.epochs):
        if cfg.pseudo_start and epoch >= cfg.pseudo_start and pseudo_stats is None:
            # The teacher: this fold's weights as they stand now (see ftuseg.train.pseudo).
            loader, sampler, pseudo_stats = pseudo_loader(
                run.model,
                run.data,
                (run.train_ids, run.val_ids),
                run.files,
                cfg=cfg,
                augment=run.recipe.augment,
                inference=run.recipe.inference,
                seed=run.seed,
                runtime=runtime,
                labels_dir=pseudo.labels_dir,
                generate=pseudo.resumed_from <= cfg.pseudo_start,
            )
        run.model.train()
        sampler.set_epoch(epoch)  # the data order and every crop depend on the epoch alone
        if run.domain is not None:
            run.domain.set_epoch(epoch)
        losses = train_epoch(
            Trainee(run.net, run.model.has_heads, run.criterion, run.opt, run.domain),
            loader,
            epoch,
            cfg,
            runtime,
            lambda loss, e=epoch: progress.update(task, advance=1, epoch=e + 1, loss=loss),
        )
        last = epoch + 1 == cfg.epochs or stepped_out(cfg, epoch, run.opt.updates_per_epoch)
        scored = run.opt.scored(run.model)
        metrics = {
            **{f"train/{k}": mean_across(v, runtime.info) for k, v in losses.items()},
            "train/lr": run.opt.optimizer.param_groups[0]["lr"],
        }
        if last or validated(cfg, epoch):
            # Validation on the main process; every rank gets its score for early stopping.
            val_dice = from_main(
                run.validate(scored) if runtime.info.is_main else 0.0, runtime.info
            )
            progress.update(task, dice=val_dice)
            metrics["val/dice"] = val_dice
        for name, value in metrics.items():
            live.log_metric(name, value)
        live.next_step()
        best_weights = end_epoch(run, state, epoch, metrics, scored, best_weights)
        if stepped_out(cfg, epoch, run.opt.updates_per_epoch):
            log.info("stopping after %d optimiser steps (train.max_steps)", cfg.max_steps)
            break
        if cfg.patience and state.stale >= cfg.patience:
            log.info("early stop after epoch %d (best %d)", epoch + 1, state.best_epoch)
            break
    return pseudo_stats


def validated(cfg: TrainConfig, epoch: int) -> bool:
    """Whether the 0-based ``epoch`` is validated (the last one always is, besides)."""
    return epoch + 1 >= cfg.val_start and (epoch + 1) % cfg.val_every == 0


def stepped_out(cfg: TrainConfig, epoch: int, updates_per_epoch: int) -> bool:
    """Whether ``train.max_steps`` ends the run with this epoch."""
    return bool(cfg.max_steps) and (epoch + 1) * updates_per_epoch >= cfg.max_steps


def resume_run(run: FoldRun) -> tuple[TrainingState, dict[str, torch.Tensor] | None]:
    """The state to start from: a fresh one, or the persisted state of an interrupted run with
    the same fingerprint (weights, optimiser, scaler and RNG restored in place)."""
    dirs, model, opt = run.dirs, run.model, run.opt
    resumed = load_state(dirs.state, run.run_id) if (dirs.state and run.cfg.resume) else None
    if resumed is None:
        return TrainingState(run.run_id), None
    state, tensors, saved = resumed
    best_weights = restore(tensors, saved, model, opt.optimizer, opt.scaler, opt.ema)
    log.info("resuming after epoch %d (best %d)", state.epoch, state.best_epoch)
    if best_weights is not None and run.runtime.info.is_main:
        # The killed run's checkpoint folder is gone (DVC clears outputs); re-emit the best one.
        current = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_weights)
        save_checkpoint(
            dirs.checkpoint, model, run.checkpoint_meta(state.best_epoch, state.best_val_dice)
        )
        model.load_state_dict(current)
    return state, best_weights


def end_epoch(
    run: FoldRun,
    state: TrainingState,
    epoch: int,
    metrics: dict[str, float],
    scored: Segmenter,
    best_weights: dict[str, torch.Tensor] | None,
) -> dict[str, torch.Tensor] | None:
    """Book-keeping after an epoch: history, best checkpoint, early-stopping counter (in
    validations) and the resumable state. ``scored``: the model validated (the trained one's
    weight average, or itself). Returns the best weights so far."""
    dirs, main = run.dirs, run.runtime.info.is_main
    val_dice = metrics.get("val/dice")  # None: not a validation epoch (train.val_every)
    state.history.append(metrics)
    state.epoch = epoch + 1
    if val_dice is not None and val_dice > state.best_val_dice:
        state.best_val_dice, state.best_epoch, state.stale = val_dice, epoch + 1, 0
        if main:
            save_checkpoint(dirs.checkpoint, scored, run.checkpoint_meta(epoch + 1, val_dice))
        best_weights = {k: v.detach().cpu().clone() for k, v in scored.state_dict().items()}
    elif val_dice is not None:
        state.stale += 1
    if dirs.state and main:
        opt = run.opt
        save_state(dirs.state, state, run.model, opt.optimizer, best_weights, opt.scaler, opt.ema)
    barrier(run.runtime.info)
    return best_weights
