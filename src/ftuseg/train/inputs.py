"""What a training run reads: the stage folders it crops from (found through the layout), the images
and stain copies of its ids, the files whose content shapes it, and its data loaders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader

from ftuseg.core.errors import DataError
from ftuseg.core.layout import ARRAYS, Layout, prepared_path
from ftuseg.core.layout import INDEX_NAME as PREPARED_INDEX
from ftuseg.data.prepare import read_index
from ftuseg.domain.augment import AugmentConfig
from ftuseg.domain.normalize import NormalizeConfig, normalized_files
from ftuseg.domain.stain import copy_files
from ftuseg.infer.engine import InferenceConfig
from ftuseg.models import Segmenter
from ftuseg.train.config import (
    Runtime,
    TrainConfig,
    split_ids,
)
from ftuseg.train.dann import unlabeled_files
from ftuseg.train.datasets import CropDataset, EpochBatches, make_loader
from ftuseg.train.distributed import (
    GlobalBatchSampler,
    barrier,
)
from ftuseg.train.pseudo import PseudoImage, label_stats, read_pseudo_labels, write_pseudo_labels


@dataclass(frozen=True)
class TrainData:
    """Where a training run reads its data (stage folders, from :meth:`from_layout` in the
    pipeline), and the training scale."""

    prepared: Path  # the prepare stage's output
    train_csv: Path  # the raw train.csv: validation scores against its original-size masks
    um_per_px: float  # the training scale (prepare.um_per_px)
    stain: Path | None = None  # the stain stage's output (stain copies)
    normalized: Path | None = None  # the normalize stage's output (with stain.normalize on)
    unlabeled: Path | None = None  # the unlabeled stage's output (domain_weight or pseudo_start)

    @classmethod
    def from_layout(cls, layout: Layout, um_per_px: float) -> TrainData:
        """Every stage output a training run may read, at the pipeline's places."""
        stage_outputs = (layout.stain, layout.normalized, layout.unlabeled)
        return cls(layout.prepared, layout.train_csv, um_per_px, *stage_outputs)


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
    *,
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
        samples_per_image=cfg.samples_per_image,
        ftu_prob=cfg.ftu_crop_prob,
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


def pseudo_loader(
    model: Segmenter,
    data: TrainData,
    split: tuple[list[str], list[str]],
    files: tuple[dict[str, Path], dict[str, list[Path]]],
    *,
    cfg: TrainConfig,
    augment: AugmentConfig,
    inference: InferenceConfig,
    seed: int,
    runtime: Runtime,
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
            model,
            data.unlabeled,
            labels_dir,
            labelled_ids=[*train_ids, *val_ids],
            um_per_px=data.um_per_px,
            crop_size=cfg.crop_size,
            config=inference,
            confidence=cfg.pseudo_confidence,
        )
    barrier(runtime.info)
    loader, sampler = build_loader(
        data,
        train_ids,
        files,
        cfg=cfg,
        augment=augment,
        seed=seed,
        runtime=runtime,
        pseudo=read_pseudo_labels(labels_dir, data.unlabeled),
    )
    return loader, sampler, label_stats(labels_dir)
