"""Training of one architecture on one fold.

Logs through dvclive (so ``dvc plots`` shows loss and Dice curves), keeps the checkpoint of the
best validation Dice as safetensors, and is deterministic on CPU for a given seed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dvclive import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from timm.scheduler import CosineLRScheduler
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .augment import AugmentConfig
from .checkpoint import save_checkpoint
from .dann import DomainAdversarial, build_domain_adversarial, unlabeled_files
from .datasets import CropDataset, EpochBatches, make_loader
from .distributed import (
    DistInfo,
    GlobalBatchSampler,
    barrier,
    cleanup,
    from_main,
    mean_across,
    setup,
)
from .errors import DataError
from .inference import PRECISIONS, InferenceConfig, resolve_device
from .losses import LossWeights, SegmentationLoss
from .models import Segmenter, build_model
from .prepare import ARRAYS, prepared_path, read_index
from .prepare import INDEX_NAME as PREPARED_INDEX
from .pseudo import PseudoImage, label_stats, read_pseudo_labels, write_pseudo_labels
from .resume import (
    TrainingState,
    fingerprint,
    inputs_digest,
    load_state,
    mark_complete,
    restore,
    save_state,
)
from .stain import NormalizeConfig, copy_files, normalized_files
from .utils import seed_everything
from .validation import Validator

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
    # Domain-adversarial training on unlabeled target images (0 = off; see ftuseg.dann).
    domain_weight: float = 0.0
    domain_gamma: float = 10.0  # DANN schedule: reversal scale 2 / (1 + exp(-γ p)) - 1
    # Self-training on unlabeled target images (0 = off; see ftuseg.pseudo): from this epoch on,
    # a share of the crops comes from the model's own confident pseudo-labels.
    pseudo_start: int = 0
    pseudo_share: float = 0.3  # share of each epoch's crops drawn from pseudo-labelled images
    pseudo_confidence: float = 0.9  # FTU where p >= this, background where p <= 1 - this
    patience: int = 0  # epochs without improvement before stopping; 0 = never stop early
    # Cap on optimiser updates over the whole run (0: none): a rehearsal at real sizes on a
    # slow machine runs every code path with a few steps; the epoch it falls in is the last.
    max_steps: int = 0
    num_workers: int = 0  # data-loader processes (persistent; pinned memory on CUDA)
    seed: int = 2022
    threads: int = 0  # CPU threads for torch; 0 = all cores
    device: str = "auto"
    precision: str = "fp16"  # autocast on CUDA: fp16 (with loss scaling) | bf16 | fp32
    channels_last: bool = True  # NHWC activations on CUDA (tensor-core friendly convolutions)
    cudnn_benchmark: bool = True  # let cuDNN time its kernels for the crop size (CUDA only)
    resume: bool = True  # continue an interrupted run from its persisted state
    nproc: int = 1  # processes (DDP under torchrun): NCCL on GPU, gloo on CPU
    sync_bn: bool = True  # synchronise BatchNorm statistics across GPU processes (CUDA only)

    def __post_init__(self) -> None:
        if self.domain_weight < 0:
            raise ValueError(f"train.domain_weight must be >= 0, got {self.domain_weight}")
        if not 0 <= self.pseudo_start < max(self.epochs, 1):
            raise ValueError(
                f"train.pseudo_start must be in [0, epochs = {self.epochs}), got {self.pseudo_start}"
            )
        if self.pseudo_start and not 0.0 < self.pseudo_share < 1.0:
            raise ValueError(f"train.pseudo_share must be in (0, 1), got {self.pseudo_share}")
        if self.pseudo_start and not 0.5 < self.pseudo_confidence <= 1.0:
            raise ValueError(
                f"train.pseudo_confidence must be in (0.5, 1], got {self.pseudo_confidence}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"train.precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}"
            )


# Settings that change how fast a run goes, not what it computes (kept out of the fingerprint).
EXECUTION_KNOBS = ("threads", "num_workers", "resume", "cudnn_benchmark")


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


@dataclass(frozen=True)
class TrainData:
    """Where a training run reads its data."""

    prepared: Path  # the prepare stage's output
    train_csv: Path  # the raw train.csv: validation scores against its original-size masks
    um_per_px: float  # the training scale (prepare.um_per_px)
    stain: Path | None = None  # the stain stage's output (stain copies)
    normalized: Path | None = None  # the normalize stage's output (with stain.normalize on)
    unlabeled: Path | None = None  # the unlabeled stage's output (domain_weight or pseudo_start)


@dataclass(frozen=True)
class RunDirs:
    """Where a training run writes."""

    checkpoint: Path  # the best epoch's safetensors + model.json
    live: Path  # dvclive
    state: Path | None = None  # resumable state (None: no resume)


@dataclass
class Runtime:
    """Device and process group of a run."""

    device: torch.device
    info: DistInfo

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """Threads, device, process group and the determinism switches."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    info = setup(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    else:
        # cuDNN picks the fastest kernels for the fixed crop size (not bit-reproducible).
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    return Runtime(device, info)


def fold_ids(prepared: Path, fold: int) -> tuple[list[str], list[str], list[float]]:
    """Training ids, validation ids and the training images' pixel sizes of a fold."""
    index = read_index(prepared)
    if fold not in set(index["fold"]):
        raise ValueError(
            f"fold {fold} does not exist in {prepared} (folds: {sorted(set(index['fold']))})"
        )
    train_ids, val_ids = split_ids(index, fold)
    sizes = sorted({float(v) for v in index.loc[index["id"].isin(train_ids), "pixel_size"]})
    return train_ids, val_ids, sizes


def image_files(
    data: TrainData, normalize: NormalizeConfig, ids: list[str], cfg: TrainConfig
) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """The image each id is cropped from and its stain copies: the prepared image and the stain
    stage's copies, or their cached stain-normalised versions."""
    with_copies = cfg.stain_copy_prob > 0
    if with_copies and data.stain is None:
        raise DataError(
            f"train.stain_copy_prob is {cfg.stain_copy_prob} but no stain stage output was given"
        )
    if normalize.method != "none":
        if data.normalized is None:
            raise DataError("stain.normalize is on but no normalize stage output was given")
        return normalized_files(data.normalized, normalize, ids, with_copies)
    images = {i: prepared_path(data.prepared, i, "image") for i in ids}
    copies = copy_files(data.stain, ids) if with_copies else {}  # type: ignore[arg-type]
    return images, copies


def input_files(
    data: TrainData,
    ids: list[str],
    files: tuple[dict[str, Path], dict[str, list[Path]]],
    cfg: TrainConfig,
) -> list[Path]:
    """Every file whose content shapes a training run: the prepared index, train.csv (the
    validation masks), the prepared arrays of ``ids`` and the images and copies it crops."""
    inputs = [data.prepared / PREPARED_INDEX, data.train_csv]
    inputs += [prepared_path(data.prepared, i, a) for i in ids for a in ARRAYS]
    inputs += [*files[0].values(), *(c for cs in files[1].values() for c in cs)]
    if (cfg.domain_weight > 0 or cfg.pseudo_start) and data.unlabeled is not None:
        inputs += unlabeled_files(data.unlabeled)
    return sorted(set(inputs))


def build_loader(
    data: TrainData,
    ids: list[str],
    files: tuple[dict[str, Path], dict[str, list[Path]]],
    cfg: TrainConfig,
    augment: AugmentConfig,
    seed: int,
    runtime: Runtime,
    pseudo: Sequence[PseudoImage] = (),
) -> tuple[DataLoader, EpochBatches]:
    dataset = CropDataset(
        data.prepared,
        ids,
        cfg.crop_size,
        cfg.samples_per_image,
        cfg.ftu_crop_prob,
        augment=augment,
        seed=seed,
        organ_oversample=cfg.organ_oversample,
        um_per_px=data.um_per_px,
        stain_copies=files[1],
        stain_copy_prob=cfg.stain_copy_prob,
        images=files[0],
        pseudo=pseudo,
        pseudo_share=cfg.pseudo_share,
    )
    # The same global batches whatever the number of processes; each rank takes its slice.
    batches = GlobalBatchSampler(
        len(dataset), cfg.batch_size, len(dataset) > cfg.batch_size, seed, runtime.info
    )
    return make_loader(dataset, batches, cfg.num_workers, pin_memory=runtime.cuda)


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


def build_optimisation(
    model: Segmenter, cfg: TrainConfig, batches: int, cuda: bool
) -> Optimisation:
    """AdamW, a per-update cosine schedule with warm-up, and mixed precision on CUDA."""
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
    return Optimisation(optimizer, scheduler, scaler, autocast, updates)


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
    if runtime.cuda and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if not runtime.info.enabled:
        return model, model
    net = DistributedDataParallel(
        model,
        device_ids=[runtime.device] if runtime.cuda else None,
        find_unused_parameters=model.has_heads,
    )
    return model, net


def run_fingerprint(
    model_name: str,
    model_cfg: dict[str, Any],
    cfg: TrainConfig,
    fold: int,
    ids: tuple[list[str], list[str]],
    data: TrainData,
    settings: dict[str, Any],
    device: torch.device,
    files: list[Path],
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
            **settings,
            # a GPU run resumes on a GPU (its CUDA RNG and GradScaler state), a CPU run on a CPU
            "device": device.type,
            "inputs": inputs_digest(files),
        }
    )


def progress_bar(model_name: str, fold: int, enabled: bool) -> Progress:
    return Progress(
        TextColumn(f"train {model_name} fold {fold}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "epoch {task.fields[epoch]} loss {task.fields[loss]:.4f} dice {task.fields[dice]:.4f}"
        ),
        TimeElapsedColumn(),
        disable=not enabled,
    )


def train_epoch(
    net: torch.nn.Module,
    heads: bool,
    loader: DataLoader,
    criterion: SegmentationLoss,
    opt: Optimisation,
    epoch: int,
    cfg: TrainConfig,
    runtime: Runtime,
    advance: Any,
    domain: DomainAdversarial | None = None,
) -> dict[str, float]:
    """One pass over the loader; returns the mean loss and loss parts of this process.

    Batches arrive as NHWC uint8 and become floats on the device (a quarter of the bytes to
    copy); pinned batches copy asynchronously while the previous step computes. With
    ``domain``, each batch is joined by a batch of unlabeled target crops (see
    :mod:`ftuseg.dann`).
    """
    losses: list[float] = []
    parts_sum: dict[str, float] = {}
    memory = torch.channels_last if runtime.cuda and cfg.channels_last else torch.contiguous_format
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
            with torch.autocast(
                runtime.device.type, dtype=opt.autocast or torch.float32,
                enabled=opt.autocast is not None,
            ):  # fmt: skip
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
            opt.scheduler.step_update(epoch * opt.updates_per_epoch + (i // cfg.accumulate) + 1)
        losses.append(loss.item())
        for name, value in parts.items():
            parts_sum[name] = parts_sum.get(name, 0.0) + value
        advance(float(np.mean(losses)))
    return {
        "loss": float(np.mean(losses)),
        **{f"loss_{k}": v / len(losses) for k, v in parts_sum.items() if len(parts_sum) > 1},
    }


@dataclass
class FoldRun:
    """Everything one fold's training builds before its first epoch."""

    name: str
    model_cfg: dict[str, Any]
    fold: int
    seed: int
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
    um_per_px: float
    normalize: NormalizeConfig
    crop_size: int

    def checkpoint_meta(self, epoch: int, val_dice: float) -> dict[str, Any]:
        """What the checkpoint records beside the weights (everything inference needs)."""
        return {
            "name": self.name,
            "model_cfg": self.model_cfg,
            "um_per_px": self.um_per_px,
            "stain_normalize": asdict(self.normalize),
            "fold": self.fold,
            "epoch": epoch,
            "val_dice": round(val_dice, 5),
            "train_ids": self.train_ids,
            "val_ids": self.val_ids,
            # What `inference.scale_handling: false` assumes every image has.
            "train_pixel_sizes": self.train_pixel_sizes,
            # The context the model learnt from: inference tiles default to it.
            "crop_size": self.crop_size,
        }


def build_fold_run(
    data: TrainData,
    model_name: str,
    model_cfg: dict[str, Any],
    fold: int,
    cfg: TrainConfig,
    settings: tuple[AugmentConfig, NormalizeConfig, InferenceConfig],
    runtime: Runtime,
) -> FoldRun:
    """Seed, split, data, validator, model, loss, optimiser, domain head and run fingerprint,
    built in a fixed order (the order of the random draws is part of determinism)."""
    augment, normalize, inference = settings
    if cfg.pseudo_start and normalize.method != "none":
        raise DataError(
            "train.pseudo_start > 0 with stain.normalize on: the unlabeled images are not "
            "normalised, so the teacher would label other colours than it was trained on"
        )
    seed = cfg.seed + 1000 * fold
    seed_everything(seed)
    train_ids, val_ids, train_pixel_sizes = fold_ids(data.prepared, fold)
    files = image_files(data, normalize, [*train_ids, *val_ids], cfg)
    loader, sampler = build_loader(data, train_ids, files, cfg, augment, seed, runtime)
    validate = Validator(
        data.prepared, data.train_csv, val_ids, data.um_per_px, cfg.crop_size, inference,
        train_pixel_sizes, files[0],
    )  # fmt: skip
    if cfg.domain_weight > 0:  # recorded in the checkpoint: its weights include the head
        model_cfg = {**model_cfg, "domain_head": True}
    model, net = prepare_model(model_cfg, cfg, runtime)
    criterion = SegmentationLoss(
        LossWeights(
            cfg.bce_weight, cfg.dice_weight, cfg.focal_weight, cfg.aux_weight, cfg.organ_weight,
            cfg.pixel_size_weight,
        )
    )  # fmt: skip
    opt = build_optimisation(model, cfg, len(loader), runtime.cuda)
    domain = (
        build_domain_adversarial(
            data.unlabeled,
            model.domain_head,
            len(loader.dataset),
            cfg.batch_size,
            cfg.crop_size,
            cfg.domain_weight,
            cfg.domain_gamma,
            total_updates(cfg, len(loader)),
            seed + 1,
            cfg.num_workers,
            runtime.cuda,
            runtime.info,
        )  # fmt: skip
        if cfg.domain_weight > 0
        else None
    )
    recipe = {"augment": asdict(augment), "normalize": asdict(normalize),
              "inference": asdict(inference)}  # fmt: skip
    run_id = run_fingerprint(
        model_name, model_cfg, cfg, fold, (train_ids, val_ids), data, recipe, runtime.device,
        input_files(data, [*train_ids, *val_ids], files, cfg),
    )  # fmt: skip
    return FoldRun(
        model_name, model_cfg, fold, seed, train_ids, val_ids, train_pixel_sizes, files, loader,
        sampler, validate, model, net, criterion, opt, domain, run_id, data.um_per_px, normalize,
        cfg.crop_size,
    )  # fmt: skip


def train_fold(
    data: TrainData,
    model_name: str,
    model_cfg: dict[str, Any],
    fold: int,
    cfg: TrainConfig,
    dirs: RunDirs,
    augment: AugmentConfig | None = None,
    normalize: NormalizeConfig | None = None,
    inference: InferenceConfig | None = None,
) -> dict[str, Any]:
    """Train ``model_name`` on all folds but ``fold``, validate on ``fold``; returns a summary.

    The best epoch is chosen by :class:`~ftuseg.validation.Validator`, the OOF stage's own
    computation with ``inference`` (default: tiles of the training crop, no TTA). With
    ``dirs.state`` (and ``cfg.resume``), the state after every epoch is persisted there and a
    run killed part-way continues from its last completed epoch, ending with the same weights
    and logs as an uninterrupted run (see :mod:`ftuseg.resume`).

    ``augment`` is the augmentation recipe (default: dihedral only); stain copies come from
    ``data.stain`` (drawn with ``cfg.stain_copy_prob``); with ``normalize`` on, every image and
    copy is read from the normalize stage's cached output and the checkpoint records the
    settings, so inference normalises too.
    """
    settings = (augment or AugmentConfig(), normalize or NormalizeConfig(),
                inference or InferenceConfig())  # fmt: skip
    runtime = setup_runtime(cfg)
    run = build_fold_run(data, model_name, model_cfg, fold, cfg, settings, runtime)
    state, best_weights = resume_run(
        dirs, cfg, run.run_id, run.model, run.opt, run.checkpoint_meta, runtime
    )
    resumed_from = state.epoch
    started = time.perf_counter()
    main = runtime.info.is_main
    with (
        Live(str(dirs.live), dvcyaml=None, save_dvc_exp=False, report=None)
        if main
        else _NoLive() as live,
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
            run, state, best_weights, cfg, settings, data, dirs, runtime, live, progress,
            (labels_dir, resumed_from),
        )  # fmt: skip
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


def run_epochs(
    run: FoldRun,
    state: TrainingState,
    best_weights: dict[str, torch.Tensor] | None,
    cfg: TrainConfig,
    settings: tuple[AugmentConfig, NormalizeConfig, InferenceConfig],
    data: TrainData,
    dirs: RunDirs,
    runtime: Runtime,
    live: Any,
    progress: Progress,
    pseudo: tuple[Path, int],
) -> dict[str, float] | None:
    """The epochs from ``state.epoch`` on: train, validate, log, keep the best checkpoint, stop
    early where asked. ``pseudo``: where pseudo-labels go and the epoch the run resumed from.
    Returns the pseudo-label statistics (None without self-training)."""
    augment, _, inference = settings
    labels_dir, resumed_from = pseudo
    loader, sampler, pseudo_stats = run.loader, run.sampler, None
    task = progress.add_task(
        "train", total=cfg.epochs * len(loader), completed=state.epoch * len(loader),
        epoch=state.epoch, loss=math.nan, dice=math.nan,
    )  # fmt: skip
    for epoch in range(state.epoch, cfg.epochs):
        if cfg.pseudo_start and epoch >= cfg.pseudo_start and pseudo_stats is None:
            # The teacher: this fold's weights as they stand now (see ftuseg.pseudo).
            loader, sampler, pseudo_stats = pseudo_loader(
                run.model, data, (run.train_ids, run.val_ids), run.files, cfg, augment, run.seed,
                runtime, inference, labels_dir, generate=resumed_from <= cfg.pseudo_start,
            )  # fmt: skip
        run.model.train()
        sampler.set_epoch(epoch)  # the data order and every crop depend on the epoch alone
        if run.domain is not None:
            run.domain.set_epoch(epoch)
        losses = train_epoch(
            run.net, run.model.has_heads, loader, run.criterion, run.opt, epoch, cfg, runtime,
            lambda loss, e=epoch: progress.update(task, advance=1, epoch=e + 1, loss=loss),
            run.domain,
        )  # fmt: skip
        # Validation on the main process; every rank gets its score for early stopping.
        val_dice = from_main(run.validate(run.model) if runtime.info.is_main else 0.0, runtime.info)
        progress.update(task, dice=val_dice)
        metrics = {
            **{f"train/{k}": mean_across(v, runtime.info) for k, v in losses.items()},
            "train/lr": run.opt.optimizer.param_groups[0]["lr"],
            "val/dice": val_dice,
        }
        for name, value in metrics.items():
            live.log_metric(name, value)
        live.next_step()
        best_weights = end_epoch(
            state, epoch, metrics, run.model, run.opt, best_weights, dirs, run.checkpoint_meta,
            runtime,
        )  # fmt: skip
        if cfg.max_steps and (epoch + 1) * run.opt.updates_per_epoch >= cfg.max_steps:
            log.info("stopping after %d optimiser steps (train.max_steps)", cfg.max_steps)
            break
        if cfg.patience and state.stale >= cfg.patience:
            log.info("early stop after epoch %d (best %d)", epoch + 1, state.best_epoch)
            break
    return pseudo_stats


def pseudo_loader(
    model: Segmenter,
    data: TrainData,
    split: tuple[list[str], list[str]],
    files: tuple[dict[str, Path], dict[str, list[Path]]],
    cfg: TrainConfig,
    augment: AugmentConfig,
    seed: int,
    runtime: Runtime,
    inference: InferenceConfig,
    labels_dir: Path,
    generate: bool,
) -> tuple[DataLoader, EpochBatches, dict[str, float]]:
    """The loader of the self-training epochs: the fold's labelled crops, a ``pseudo_share`` of
    them replaced by crops of pseudo-labelled unlabeled images (same epoch length, so the
    learning-rate schedule is unchanged). ``generate``: label now with ``model`` (else reuse the
    labels of the interrupted run this one resumes)."""
    if data.unlabeled is None:
        raise DataError("train.pseudo_start > 0 but no unlabeled stage output was given")
    train_ids, val_ids = split
    if generate and runtime.info.is_main:
        write_pseudo_labels(
            model, data.unlabeled, labels_dir, [*train_ids, *val_ids], data.um_per_px,
            cfg.crop_size, inference, cfg.pseudo_confidence,
        )  # fmt: skip
    barrier(runtime.info)
    pseudo = read_pseudo_labels(labels_dir, data.unlabeled)
    loader, sampler = build_loader(data, train_ids, files, cfg, augment, seed, runtime, pseudo)
    return loader, sampler, label_stats(labels_dir)


def resume_run(
    dirs: RunDirs,
    cfg: TrainConfig,
    run_id: str,
    model: Segmenter,
    opt: Optimisation,
    checkpoint_meta: Any,
    runtime: Runtime,
) -> tuple[TrainingState, dict[str, torch.Tensor] | None]:
    """The state to start from: a fresh one, or the persisted state of an interrupted run with
    the same fingerprint (weights, optimiser, scaler and RNG restored in place)."""
    resumed = load_state(dirs.state, run_id) if (dirs.state and cfg.resume) else None
    if resumed is None:
        return TrainingState(run_id), None
    state, tensors, saved = resumed
    best_weights = restore(tensors, saved, model, opt.optimizer, opt.scaler)
    log.info("resuming after epoch %d (best %d)", state.epoch, state.best_epoch)
    if best_weights is not None and runtime.info.is_main:
        # The killed run's checkpoint folder is gone (DVC clears outputs); re-emit the best one.
        current = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_weights)
        save_checkpoint(
            dirs.checkpoint, model, checkpoint_meta(state.best_epoch, state.best_val_dice)
        )
        model.load_state_dict(current)
    return state, best_weights


def end_epoch(
    state: TrainingState,
    epoch: int,
    metrics: dict[str, float],
    model: Segmenter,
    opt: Optimisation,
    best_weights: dict[str, torch.Tensor] | None,
    dirs: RunDirs,
    checkpoint_meta: Any,
    runtime: Runtime,
) -> dict[str, torch.Tensor] | None:
    """Book-keeping after an epoch: history, best checkpoint, early-stopping counter and the
    resumable state. Returns the best weights so far."""
    val_dice = metrics["val/dice"]
    state.history.append(metrics)
    state.epoch = epoch + 1
    if val_dice > state.best_val_dice:
        state.best_val_dice, state.best_epoch, state.stale = val_dice, epoch + 1, 0
        if runtime.info.is_main:
            save_checkpoint(dirs.checkpoint, model, checkpoint_meta(epoch + 1, val_dice))
        best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        state.stale += 1
    if dirs.state and runtime.info.is_main:
        save_state(dirs.state, state, model, opt.optimizer, best_weights, opt.scaler)
    barrier(runtime.info)
    return best_weights
