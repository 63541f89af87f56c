"""Out-of-fold evaluation, per-organ threshold search, and submission.

All three run the images through :mod:`ftuseg.inference` and score exactly as the competition
does: Dice per image at the original resolution, averaged over images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from rich.progress import track

from . import rle
from .data import decode_mask, image_path, read_image, read_metadata
from .errors import DataError
from .inference import Predictor, binarize, combine, to_original
from .metrics import dice, dice_from_counts, summarise
from .organs import ORGANS
from .prepare import read_index
from .utils import atomic_path, read_yaml, write_yaml

log = logging.getLogger(__name__)


def checkpoint_dir(models_dir: str | Path, model: str, fold: int) -> Path:
    return Path(models_dir) / model / f"fold{fold}"


def oof_path(oof_dir: str | Path, model: str, image_id: str) -> Path:
    return Path(oof_dir) / model / f"{image_id}.png"


# --------------------------------------------------------------------------------------------
# OOF


def run_oof(
    raw_dir: str | Path,
    prepared_dir: str | Path,
    models_dir: str | Path,
    model_names: Sequence[str],
    oof_dir: str | Path,
    device: str = "auto",
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Predict every training image with the model of the fold that did not train on it.

    Writes the quantised probability at training scale (one PNG per model and image) under
    ``oof_dir`` and returns the metrics at threshold 0.5 per model and the per-image table.
    """
    raw_dir = Path(raw_dir)
    meta = read_metadata(raw_dir / "train.csv", "train").set_index("id", drop=False)
    index = read_index(prepared_dir)
    folds = sorted(index["fold"].unique())
    rows = []
    with atomic_path(oof_dir, is_dir=True) as tmp:
        for name in model_names:
            (tmp / name).mkdir()
            for fold in folds:
                predictor = Predictor.from_checkpoints(
                    [(checkpoint_dir(models_dir, name, fold), 1.0)], device=device
                )
                ids = index.loc[index["fold"] == fold, "id"].tolist()
                for image_id in track(ids, description=f"oof: {name} fold {fold}"):
                    row = meta.loc[image_id]
                    img = read_image(
                        image_path(raw_dir, "train", image_id), (row.img_height, row.img_width)
                    )
                    q = predictor.predict_scaled(img, row.pixel_size)
                    cv2.imwrite(str(oof_path(tmp, name, image_id)), q)
                    truth = decode_mask(
                        row.rle,
                        (row.img_height, row.img_width),
                        f"{raw_dir / 'train.csv'}: row id={row.id}",
                    )
                    pred = binarize(to_original(q, truth.shape), 0.5)
                    rows.append(
                        {
                            "model": name,
                            "id": image_id,
                            "organ": row.organ,
                            "fold": fold,
                            "dice": dice(pred, truth),
                        }
                    )
    per_image = pd.DataFrame(rows)
    metrics = {name: summarise(per_image[per_image["model"] == name]) for name in model_names}
    return metrics, per_image


# --------------------------------------------------------------------------------------------
# Ensemble: weights and per-organ thresholds


@dataclass(frozen=True)
class EnsembleConfig:
    members: dict[str, float]  # model name -> weight
    thresholds: dict[str, float]  # organ -> threshold
    um_per_px: float
    default_threshold: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return {
            "um_per_px": self.um_per_px,
            "members": dict(self.members),
            "thresholds": dict(self.thresholds),
            "default_threshold": self.default_threshold,
        }

    @classmethod
    def load(cls, path: str | Path) -> EnsembleConfig:
        d = read_yaml(path)
        return cls(
            members={str(k): float(v) for k, v in d["members"].items()},
            thresholds={str(k): float(v) for k, v in d["thresholds"].items()},
            um_per_px=float(d["um_per_px"]),
            default_threshold=float(d.get("default_threshold", 0.5)),
        )

    def threshold(self, organ: str) -> float:
        return self.thresholds.get(organ, self.default_threshold)

    def save(self, path: str | Path) -> None:
        write_yaml(path, self.to_dict())


def threshold_counts(
    prob: np.ndarray, truth: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """|P∩T| and |P| for ``P = prob > t`` at every threshold, in one pass over the pixels."""
    # searchsorted(side="left") counts the thresholds strictly below each pixel's probability.
    above = np.searchsorted(thresholds, prob.ravel(), side="left")
    k = thresholds.size
    all_hist = np.bincount(above, minlength=k + 1)
    in_hist = np.bincount(above[truth.ravel().astype(bool)], minlength=k + 1)
    # Pixels with above == i exceed thresholds 0..i-1: suffix sums give the count for each t.
    pred_sum = np.cumsum(all_hist[::-1])[::-1][1:]
    inter = np.cumsum(in_hist[::-1])[::-1][1:]
    return inter, pred_sum, int(truth.sum())


def search_ensemble(
    raw_dir: str | Path,
    prepared_dir: str | Path,
    oof_dir: str | Path,
    weights: dict[str, float],
    thresholds: Sequence[float],
    um_per_px: float,
) -> tuple[EnsembleConfig, dict[str, Any], pd.DataFrame]:
    """Choose per-organ thresholds that maximise the OOF mean Dice of the weighted ensemble.

    Returns the ensemble config, metrics (tuned vs. default threshold, and every single model at
    0.5) and the threshold-vs-Dice curve per organ.
    """
    raw_dir = Path(raw_dir)
    grid = np.asarray(sorted(thresholds), dtype=np.float64)
    if grid.size == 0 or grid.min() <= 0 or grid.max() >= 1:
        raise DataError("ensemble.thresholds must be a non-empty list of values in (0, 1)")
    # Score the default threshold as well, to report what the search gained over it.
    default_threshold = 0.5
    evaluated = np.union1d(grid, [default_threshold])
    meta = read_metadata(raw_dir / "train.csv", "train").set_index("id", drop=False)
    index = read_index(prepared_dir)
    names = list(weights)
    scores = np.zeros((len(index), evaluated.size))
    singles: dict[str, list[float]] = {n: [] for n in names}
    for i, image_id in enumerate(
        track(index["id"].tolist(), description="ensemble: threshold search")
    ):
        row = meta.loc[image_id]
        truth = decode_mask(
            row.rle, (row.img_height, row.img_width), f"{raw_dir / 'train.csv'}: row id={row.id}"
        )
        maps = []
        for n in names:
            q = cv2.imread(str(oof_path(oof_dir, n, image_id)), cv2.IMREAD_UNCHANGED)
            if q is None:
                raise DataError(f"{oof_path(oof_dir, n, image_id)}: OOF map missing or unreadable")
            maps.append(q)
            singles[n].append(dice(binarize(to_original(q, truth.shape), 0.5), truth))
        prob = to_original(combine(maps, [weights[n] for n in names]), truth.shape)
        inter, pred_sum, truth_sum = threshold_counts(prob, truth, evaluated)
        scores[i] = dice_from_counts(inter, pred_sum, truth_sum)

    organs = index["organ"].to_numpy()
    chosen, curves = {}, []
    for organ in ORGANS:
        sel = organs == organ
        if not sel.any():
            continue
        mean = scores[sel].mean(axis=0)
        on_grid = np.isin(evaluated, grid)
        best = int(np.flatnonzero(on_grid)[np.argmax(mean[on_grid])])
        chosen[organ] = round(float(evaluated[best]), 4)
        curves += [
            {"organ": organ, "threshold": float(t), "dice": round(float(d), 5)}
            for t, d in zip(evaluated[on_grid], mean[on_grid], strict=True)
        ]
    config = EnsembleConfig(
        members=dict(weights),
        thresholds=chosen,
        um_per_px=um_per_px,
        default_threshold=default_threshold,
    )

    column = {float(t): j for j, t in enumerate(evaluated)}
    tuned = np.array([scores[i, column[chosen[o]]] for i, o in enumerate(organs)])
    ids = index[["id", "organ"]]
    metrics: dict[str, Any] = {
        "ensemble": summarise(ids.assign(dice=tuned)),
        "ensemble_at_default_threshold": summarise(
            ids.assign(dice=scores[:, column[default_threshold]])
        ),
    }
    metrics["single_models"] = {
        n: summarise(index[["id", "organ"]].assign(dice=np.asarray(singles[n]))) for n in names
    }
    return config, metrics, pd.DataFrame(curves)


# --------------------------------------------------------------------------------------------
# Submission


def ensemble_members(
    models_dir: str | Path, config: EnsembleConfig, folds: Sequence[int]
) -> list[tuple[Path, float]]:
    """Checkpoint dirs and weights: each model's weight is split evenly over its fold models."""
    return [
        (checkpoint_dir(models_dir, name, fold), weight / len(folds))
        for name, weight in config.members.items()
        for fold in folds
    ]


def make_submission(
    raw_dir: str | Path,
    models_dir: str | Path,
    config: EnsembleConfig,
    folds: Sequence[int],
    out_csv: str | Path,
    device: str = "auto",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Write ``submission.csv`` (id, rle) for ``test.csv``; score it when test labels exist."""
    raw_dir = Path(raw_dir)
    test = read_metadata(raw_dir / "test.csv", "test")
    predictor = Predictor.from_checkpoints(
        ensemble_members(models_dir, config, folds), device=device
    )
    if abs(predictor.um_per_px - config.um_per_px) > 1e-9:
        raise DataError(
            f"ensemble config says {config.um_per_px} µm/px but the checkpoints were trained at "
            f"{predictor.um_per_px} µm/px"
        )
    rows, masks = [], {}
    for row in track(list(test.itertuples(index=False)), description="submit: predict test images"):
        img = read_image(image_path(raw_dir, "test", row.id), (row.img_height, row.img_width))
        pred = binarize(predictor.predict(img, row.pixel_size), config.threshold(row.organ))
        masks[row.id] = pred
        rows.append({"id": row.id, "rle": rle.encode(pred)})
    submission = pd.DataFrame(rows, columns=["id", "rle"])
    with atomic_path(out_csv) as tmp:
        submission.to_csv(tmp, index=False)

    labels_path = raw_dir / "test_labels.csv"
    if not labels_path.is_file():
        return submission, {"scored": False, "n_images": len(submission)}
    labels = pd.read_csv(labels_path, dtype={"id": str, "rle": str}).set_index("id")
    scored = []
    for row in test.itertuples(index=False):
        if row.id not in labels.index:
            raise DataError(f"{labels_path}: no label for test id {row.id}")
        truth = decode_mask(
            labels.loc[row.id, "rle"],
            (row.img_height, row.img_width),
            f"{labels_path}: id={row.id}",
        )
        scored.append({"id": row.id, "organ": row.organ, "dice": dice(masks[row.id], truth)})
    return submission, {"scored": True, **summarise(pd.DataFrame(scored))}


def write_table(path: str | Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def load_folds(prepared_dir: str | Path) -> list[int]:
    return sorted(int(f) for f in read_index(prepared_dir)["fold"].unique())
