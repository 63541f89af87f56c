"""The settings of one training run (the ``train`` params group with a model's overrides), where it
writes, and the device and process group it runs on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ftuseg.core.layout import Layout
from ftuseg.infer.engine import PRECISIONS, resolve_device
from ftuseg.train.distributed import (
    DistInfo,
    setup,
)


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
    # Domain-adversarial training on unlabeled target images (0 = off; see ftuseg.train.dann).
    domain_weight: float = 0.0
    domain_gamma: float = 10.0  # DANN schedule: reversal scale 2 / (1 + exp(-γ p)) - 1
    # Self-training on unlabeled target images (0 = off; see ftuseg.train.pseudo): from this epoch on,
    # a share of the crops comes from the model's own confident pseudo-labels.
    pseudo_start: int = 0
    pseudo_share: float = 0.3  # share of each epoch's crops drawn from pseudo-labelled images
    pseudo_confidence: float = 0.9  # FTU where p >= this, background where p <= 1 - this
    patience: int = 0  # validations without improvement before stopping; 0 = never stop early
    # Validate every this many epochs and after the last one; the best checkpoint is chosen
    # among the validated epochs. Above 1 when validation is dear (TTA: 4 passes per tile).
    val_every: int = 1
    # No validation before this epoch (1-based; the last is always validated): with a cosine
    # schedule the best epochs come late, and early validations only cost time.
    val_start: int = 0
    # Cap on optimiser updates over the whole run (0: none): a rehearsal at real sizes on a
    # slow machine runs every code path with a few steps; the epoch it falls in is the last.
    max_steps: int = 0
    # Exponential moving average of the weights (timm ModelEmaV3, decay warmed up from 0 to
    # this): validation, the best checkpoint and OOF use the averaged weights. 0 = off.
    ema_decay: float = 0.0
    num_workers: int = 0  # data-loader processes (persistent; pinned memory on CUDA)
    # Warm start: a checkpoint folder (models/<model>/fold<k>) or shipped:<organ> whose weights
    # the run starts from (ftuseg.train.warm_start); None = a fresh initialisation.
    init: str | None = None
    seed: int = 2022
    threads: int = 0  # CPU threads for torch; 0 = all cores
    device: str = "auto"
    precision: str = "fp16"  # autocast on CUDA: fp16 (with loss scaling) | bf16 | fp32
    channels_last: bool = True  # NHWC weights and activations: faster convolutions on CPU and CUDA
    cudnn_benchmark: bool = True  # let cuDNN time its kernels for the crop size (CUDA only)
    resume: bool = True  # continue an interrupted run from its persisted state
    nproc: int = 1  # processes (DDP under torchrun): NCCL on GPU, gloo on CPU
    sync_bn: bool = True  # synchronise BatchNorm statistics across GPU processes (CUDA only)

    def __post_init__(self) -> None:
        if self.val_every < 1:
            raise ValueError(f"train.val_every must be >= 1, got {self.val_every}")
        if not 0 <= self.val_start <= self.epochs:
            raise ValueError(
                f"train.val_start must be in [0, epochs = {self.epochs}], got {self.val_start}"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
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


@dataclass(frozen=True)
class RunDirs:
    """Where a training run writes."""

    checkpoint: Path  # the best epoch's safetensors + model.json
    live: Path  # dvclive
    state: Path | None = None  # resumable state (None: no resume)

    @classmethod
    def of(cls, layout: Layout, model: str, fold: int) -> RunDirs:
        """The train stage's folders for ``model`` on ``fold``."""
        return cls(
            layout.model_dir(model, fold),
            layout.log_dir(model, fold),
            layout.state_dir(model, fold),
        )


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
