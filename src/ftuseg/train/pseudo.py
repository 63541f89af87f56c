"""Pseudo-labels on unlabeled target-domain images (self-training, as the 2nd and 3rd places did).

At epoch ``train.pseudo_start`` the model being trained labels every image of the ``unlabeled``
stage (H&E / PAS at the training scale) through the inference engine; a pixel becomes FTU where
the probability is at least ``train.pseudo_confidence``, background where it is at most
``1 - pseudo_confidence``, and :data:`~ftuseg.models.losses.IGNORE` (no loss) in between. From then on a
share ``train.pseudo_share`` of each epoch's crops is drawn from these images, with the same
augmentation recipe as the labelled ones; the epoch length, learning-rate schedule and the
validation set (the fold's own labelled images) stay as they are.

Why a fold's own validation never sees its pseudo-labels, by construction:

- the teacher of fold *k* is fold *k*'s own model as it stands after ``pseudo_start`` epochs
  (the current weights, not the best-so-far checkpoint: choosing that checkpoint reads the
  validation masks), trained on the other folds only, so the pseudo-labels of fold *k* do not
  depend on fold *k*'s masks at all (tests/test_pseudo.py changes those masks and gets
  bit-identical pseudo-labels);
- pseudo-labelled images are training crops only, never validation images. An unlabeled image
  may show the same tissue as a labelled one (the real-pixel benchmark's target images are the
  training images' H&E): its pseudo-label still comes from the teacher alone, never from its
  mask, so this is logged, not refused.

A cross-architecture, all-fold ensemble as the teacher (what the write-ups used for the test
set) would carry every fold's validation masks into every fold's training, so its OOF Dice would
no longer be out-of-fold; that is why the teacher is per fold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import track

from ftuseg.core.errors import DataError
from ftuseg.core.layout import INDEX_NAME, unlabeled_path
from ftuseg.core.utils import atomic_path
from ftuseg.infer.engine import InferenceConfig, Member, Predictor
from ftuseg.models import Segmenter
from ftuseg.models.losses import IGNORE

log = logging.getLogger(__name__)

LABELS_INDEX = "pseudo.csv"


@dataclass(frozen=True)
class PseudoImage:
    """One pseudo-labelled image: its pixels (the unlabeled stage's array), its label map
    (uint8: 0, 1 or IGNORE) and the label's FTU pixels as flat indices (for FTU-centred crops)."""

    id: str
    organ: str
    image: Path
    label: Path
    ftu: Path


def pseudo_label(prob: np.ndarray, confidence: float) -> np.ndarray:
    """uint8 label map of a quantised (0..255) probability map: 1 where ``prob ≥ confidence``,
    0 where ``prob ≤ 1 - confidence``, :data:`IGNORE` in between."""
    if not 0.5 < confidence <= 1.0:
        raise ValueError(f"pseudo confidence must be in (0.5, 1], got {confidence}")
    p = prob.astype(np.float32) / 255.0
    label = np.full(prob.shape, IGNORE, np.uint8)
    label[p >= confidence] = 1
    label[p <= 1.0 - confidence] = 0
    return label


def unlabeled_index(unlabeled_dir: str | Path, labelled_ids: Sequence[str]) -> pd.DataFrame:
    """The unlabeled stage's index; an error when it is empty, a warning naming the ids it
    shares with the labelled images."""
    path = Path(unlabeled_dir) / INDEX_NAME
    if not path.is_file():
        raise DataError(f"{path}: no unlabeled index (run the unlabeled stage)")
    index = pd.read_csv(path, dtype={"id": str})
    if index.empty:
        raise DataError(
            f"{path}: train.pseudo_start > 0 but the unlabeled stage wrote no images (set "
            "data.unlabeled_dir to a folder with test.csv and test_images/)"
        )
    both = sorted(set(index["id"]) & set(labelled_ids))
    if both:
        log.warning(
            "%s: %d unlabeled image(s) share an id with labelled images (%s...); they are "
            "pseudo-labelled by the teacher like the others, their masks are never read",
            path,
            len(both),
            ", ".join(both[:5]),
        )
    return index


def write_pseudo_labels(
    model: Segmenter,
    unlabeled_dir: str | Path,
    out_dir: str | Path,
    *,
    labelled_ids: Sequence[str],
    um_per_px: float,
    crop_size: int,
    config: InferenceConfig,
    confidence: float,
) -> list[PseudoImage]:
    """Label every unlabeled image with ``model`` (tiles of ``crop_size``, the engine's blending
    and TTA) and write the label maps to ``out_dir`` atomically, with an index of the share of
    confident and FTU pixels per image. Returns the images, in index order."""
    index = unlabeled_index(unlabeled_dir, labelled_ids)
    predictor = Predictor([Member(model, 1.0, "teacher", tile_size=crop_size)], um_per_px, config)
    rows = []
    with atomic_path(out_dir, is_dir=True) as tmp:
        for row in track(list(index.itertuples(index=False)), description="pseudo-labels"):
            image = np.load(unlabeled_path(unlabeled_dir, row.id), mmap_mode="r")
            label = pseudo_label(predictor.predict_at_scale(image, row.organ), confidence)
            np.save(tmp / f"{row.id}.label.npy", label)
            np.save(tmp / f"{row.id}.ftu.npy", np.flatnonzero(label == 1).astype(np.int64))
            confident = float(np.mean(label != IGNORE))
            rows.append(
                [row.id, row.organ, round(confident, 5), round(float(np.mean(label == 1)), 5)]
            )
        table = pd.DataFrame(rows, columns=["id", "organ", "confident", "ftu"])
        table.to_csv(tmp / LABELS_INDEX, index=False)
    model.train()
    return read_pseudo_labels(out_dir, unlabeled_dir)


def read_pseudo_labels(labels_dir: str | Path, unlabeled_dir: str | Path) -> list[PseudoImage]:
    """The images of a finished :func:`write_pseudo_labels` (a resumed run reuses them)."""
    path = Path(labels_dir) / LABELS_INDEX
    if not path.is_file():
        raise DataError(f"{path}: no pseudo-labels (the run that wrote them did not finish)")
    table = pd.read_csv(path, dtype={"id": str})
    return [
        PseudoImage(
            row.id,
            row.organ,
            unlabeled_path(unlabeled_dir, row.id),
            Path(labels_dir) / f"{row.id}.label.npy",
            Path(labels_dir) / f"{row.id}.ftu.npy",
        )
        for row in table.itertuples(index=False)
    ]


def label_stats(labels_dir: str | Path) -> dict[str, float]:
    """Mean share of confident and of FTU pixels over the pseudo-labelled images (logged)."""
    table = pd.read_csv(Path(labels_dir) / LABELS_INDEX)
    return {
        "pseudo/confident": float(table["confident"].mean()),
        "pseudo/ftu": float(table["ftu"].mean()),
    }
