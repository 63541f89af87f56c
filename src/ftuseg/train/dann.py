"""Domain-adversarial training (DANN, Ganin & Lempitsky 2015) inside the training loop.

Each training batch of labelled source crops (HPA) is joined by as many unlabeled target crops
(H&E / PAS, the ``unlabeled`` stage's output) in one forward pass: the mask losses see the
source rows only, the domain head (behind a gradient-reversal layer, see
:mod:`ftuseg.models.adversarial`) classifies every row, source = 0, target = 1. The reversal
scale follows the DANN schedule over the run's optimiser updates, so the still-random classifier
does not shake the encoder early on. One batch holds both domains, so BatchNorm statistics mix
them as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ftuseg.core.errors import DataError
from ftuseg.core.layout import INDEX_NAME, unlabeled_path
from ftuseg.models.adversarial import DomainClassifier, dann_schedule
from ftuseg.train.config import Runtime, TrainConfig
from ftuseg.train.datasets import EpochBatches, TargetCrops, make_loader
from ftuseg.train.distributed import GlobalBatchSampler

# Per-image entries of a Segmenter's heads output (sliced to the source rows for the losses).
PER_IMAGE = ("mask", "organ", "pixel_size")


def unlabeled_files(unlabeled_dir: str | Path) -> list[Path]:
    """The unlabeled stage's images, in index order."""
    index_path = Path(unlabeled_dir) / INDEX_NAME
    if not index_path.is_file():
        raise DataError(f"{index_path}: no unlabeled index (run the unlabeled stage)")
    ids = pd.read_csv(index_path, dtype={"id": str})["id"].tolist()
    if not ids:
        raise DataError(
            f"{index_path}: train.domain_weight or train.pseudo_start is on but the unlabeled "
            "stage wrote no images (was it run with both off? set data.unlabeled_dir to a folder "
            "with test.csv and test_images/)"
        )
    return [unlabeled_path(unlabeled_dir, i) for i in ids]


@dataclass
class DomainAdversarial:
    """The target-domain loader and the domain loss of one training run."""

    loader: DataLoader
    sampler: EpochBatches
    head: DomainClassifier
    weight: float
    gamma: float
    total_updates: int

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def batches(self) -> Iterator[torch.Tensor]:
        for batch in self.loader:
            yield batch["image"]

    def set_progress(self, update: int) -> None:
        """The reversal scale at optimiser update ``update`` of the run."""
        progress = min(1.0, update / max(1, self.total_updates))
        self.head.reversal.scale = dann_schedule(progress, self.gamma)

    def split(self, output: dict[str, Any], n_source: int) -> tuple[dict[str, Any], torch.Tensor]:
        """The source rows of ``output`` (for the mask losses) and the weighted domain loss
        over all rows (the first ``n_source`` are source = 0, the rest target = 1)."""
        logits = output["domain"].float()
        labels = torch.zeros_like(logits)
        labels[n_source:] = 1.0
        loss = self.weight * F.binary_cross_entropy_with_logits(logits, labels)
        source = {k: v[:n_source] for k, v in output.items() if k in PER_IMAGE}
        if "aux" in output:
            source["aux"] = [a[:n_source] for a in output["aux"]]
        return source, loss


def build_domain_adversarial(
    unlabeled_dir: Path | None,
    head: DomainClassifier | None,
    *,
    crops_per_epoch: int,
    cfg: TrainConfig,
    total_updates: int,
    seed: int,
    runtime: Runtime,
) -> DomainAdversarial:
    """Target crops batched exactly like the source crops (same count, ``train.batch_size`` and
    crop size per epoch, another seed), so every source batch has its target batch; the loss
    weighted by ``train.domain_weight`` on the ``train.domain_gamma`` schedule."""
    if unlabeled_dir is None:
        raise DataError("train.domain_weight > 0 but no unlabeled stage output was given")
    if head is None:
        raise DataError("train.domain_weight > 0 but the model has no domain head")
    dataset = TargetCrops(unlabeled_files(unlabeled_dir), cfg.crop_size, crops_per_epoch, seed)
    batch = cfg.batch_size
    batches = GlobalBatchSampler(
        crops_per_epoch, batch, crops_per_epoch > batch, seed, runtime.info
    )
    loader, sampler = make_loader(dataset, batches, cfg.num_workers, runtime.cuda)  # type: ignore[arg-type]
    return DomainAdversarial(
        loader, sampler, head, cfg.domain_weight, cfg.domain_gamma, total_updates
    )
