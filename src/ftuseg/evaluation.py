"""Out-of-fold evaluation, ensemble search, and submission.

All three run images through :mod:`ftuseg.inference` and score exactly as the competition does:
Dice per image at the original resolution, averaged over images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from rich.progress import track

from . import rle
from .data import decode_mask, image_path, read_image, read_metadata
from .errors import DataError
from .inference import (
    InferenceConfig,
    Predictor,
    combine,
    member_weights,
    postprocess,
    to_original,
)
from .metrics import dice, dice_from_counts, summarise
from .organs import ORGANS
from .prepare import load_prepared, read_index
from .utils import atomic_path, read_yaml, write_yaml

log = logging.getLogger(__name__)


COVERAGE_NAME = "coverage.yaml"  # in the OOF folder: model -> organs it covers (None = all)


def checkpoint_dir(models_dir: str | Path, model: str, fold: int) -> Path:
    return Path(models_dir) / model / f"fold{fold}"


def oof_path(oof_dir: str | Path, model: str, image_id: str) -> Path:
    return Path(oof_dir) / model / f"{image_id}.png"


def read_coverage(oof_dir: str | Path, models: Sequence[str]) -> list[list[str] | None]:
    """Each model's organ coverage (a specialist's ``organs``; None = all), as the OOF stage
    recorded it from the checkpoints."""
    path = Path(oof_dir) / COVERAGE_NAME
    if not path.is_file():
        raise DataError(f"{path}: not found (re-run the oof stage)")
    recorded = read_yaml(path) or {}
    missing = [m for m in models if m not in recorded]
    if missing:
        raise DataError(f"{path}: no OOF predictions of model(s) {missing} (re-run the oof stage)")
    return [recorded[m] for m in models]


def read_oof_map(oof_dir: str | Path, model: str, image_id: str) -> np.ndarray:
    path = oof_path(oof_dir, model, image_id)
    q = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if q is None:
        raise DataError(f"{path}: OOF map missing or unreadable (re-run the oof stage)")
    return q


def write_table(path: str | Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def load_folds(prepared_dir: str | Path) -> list[int]:
    return sorted(int(f) for f in read_index(prepared_dir)["fold"].unique())


# -------------------------------------------------------------------------------------- OOF


def run_oof(
    raw_dir: str | Path,
    prepared_dir: str | Path,
    models_dir: str | Path,
    model_names: Sequence[str],
    oof_dir: str | Path,
    config: InferenceConfig | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Predict every training image with the model of the fold that did not train on it.

    Writes the quantised probability at training scale (one PNG per model and image) under
    ``oof_dir`` and returns the metrics at threshold 0.5 per model and the per-image table.
    """
    config = config or InferenceConfig()
    raw_dir = Path(raw_dir)
    meta = read_metadata(raw_dir / "train.csv", "train").set_index("id", drop=False)
    index = read_index(prepared_dir)
    rows = []
    coverage: dict[str, list[str] | None] = {}
    with atomic_path(oof_dir, is_dir=True) as tmp:
        for name in model_names:
            (tmp / name).mkdir()
            for fold in sorted(index["fold"].unique()):
                predictor = Predictor.from_checkpoints(
                    [(checkpoint_dir(models_dir, name, fold), 1.0)], config
                )
                organs = predictor.members[0].organs
                coverage[name] = list(organs) if organs else None
                ids = index.loc[index["fold"] == fold, "id"].tolist()
                for image_id in track(ids, description=f"oof: {name} fold {fold}"):
                    row = meta.loc[image_id]
                    img = read_image(
                        image_path(raw_dir, "train", image_id), (row.img_height, row.img_width)
                    )
                    q = predictor.predict_scaled(img, row.pixel_size)
                    cv2.imwrite(str(oof_path(tmp, name, image_id)), q)
                    truth = decode_mask(
                        row.rle, truth_shape(row), f"{raw_dir / 'train.csv'}: row id={image_id}"
                    )
                    pred = postprocess(
                        to_original(q, truth.shape), 0.5, row.pixel_size, config.min_component_um2
                    )
                    rows.append(
                        {
                            "model": name,
                            "id": image_id,
                            "organ": row.organ,
                            "fold": int(fold),
                            "dice": dice(pred, truth),
                        }
                    )
        write_yaml(tmp / COVERAGE_NAME, coverage)
    per_image = pd.DataFrame(rows)
    metrics = {name: summarise(per_image[per_image["model"] == name]) for name in model_names}
    return metrics, per_image


def truth_shape(row: Any) -> tuple[int, int]:
    return int(row.img_height), int(row.img_width)


# -------------------------------------------------------------------------------------- ensemble


@dataclass(frozen=True)
class EnsembleConfig:
    """What the submission and the kernel read: members, thresholds, scale."""

    members: dict[str, float]  # model name -> weight (sums to 1)
    thresholds: dict[str, float]  # organ -> threshold
    um_per_px: float
    default_threshold: float = 0.5
    # data source -> organ -> threshold, overriding ``thresholds`` where the source is known
    source_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)

    def threshold(self, organ: str, data_source: str | None = None) -> float:
        by_source = self.source_thresholds.get(data_source or "", {})
        return by_source.get(organ, self.thresholds.get(organ, self.default_threshold))

    def to_dict(self) -> dict[str, Any]:
        return {
            "um_per_px": self.um_per_px,
            "members": dict(self.members),
            "thresholds": dict(self.thresholds),
            "default_threshold": self.default_threshold,
            "source_thresholds": {k: dict(v) for k, v in self.source_thresholds.items()},
        }

    def save(self, path: str | Path) -> None:
        write_yaml(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> EnsembleConfig:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: ensemble config not found (run the ensemble stage)")
        d = read_yaml(path)
        return cls(
            members={str(k): float(v) for k, v in d["members"].items()},
            thresholds={str(k): float(v) for k, v in d["thresholds"].items()},
            um_per_px=float(d["um_per_px"]),
            default_threshold=float(d.get("default_threshold", 0.5)),
            source_thresholds={
                str(s): {str(o): float(t) for o, t in m.items()}
                for s, m in (d.get("source_thresholds") or {}).items()
            },
        )


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


def dice_table(
    probs: Sequence[np.ndarray], truths: Sequence[np.ndarray], grid: np.ndarray
) -> np.ndarray:
    """Per-image Dice at every threshold of ``grid``: shape (n_images, len(grid))."""
    return np.stack(
        [
            dice_from_counts(*threshold_counts(p, t, grid))
            for p, t in zip(probs, truths, strict=True)
        ]
    )


def best_thresholds(
    scores: np.ndarray, organs: np.ndarray, grid: np.ndarray
) -> tuple[dict[str, float], float]:
    """Per-organ threshold maximising the organ's mean Dice, and the resulting overall mean."""
    chosen, per_image = {}, np.zeros(len(organs))
    for organ in np.unique(organs):
        sel = organs == organ
        j = int(np.argmax(scores[sel].mean(axis=0)))
        chosen[str(organ)] = round(float(grid[j]), 4)
        per_image[sel] = scores[sel, j]
    return chosen, float(per_image.mean())


def search_weights(
    maps: Sequence[Sequence[np.ndarray]],
    truths: Sequence[np.ndarray],
    organs: Sequence[str],
    grid: Sequence[float],
    factors: Sequence[float] = (0.0, 0.5, 0.8, 1.25, 2.0),
    max_rounds: int = 10,
    coverage: Sequence[Sequence[str] | None] | None = None,
) -> tuple[np.ndarray, float]:
    """Coordinate ascent on model weights for OOF mean Dice with per-organ thresholds.

    ``maps[i][m]`` is model m's quantised probability for image i (same shape as
    ``truths[i]``). Each round tries scaling one weight at a time by ``factors`` and keeps any
    improvement; cost grows linearly with the number of models, so it scales to large ensembles.
    Specialists (``coverage``) count only on their organs; weights leaving an organ without
    any member are not considered. Returns normalised weights and the objective they reach.
    """
    n_models = len(maps[0])
    coverage = list(coverage) if coverage is not None else [None] * n_models
    grid_arr = np.asarray(sorted(grid), dtype=np.float64)
    organs_arr = np.asarray(organs)

    def objective(w: np.ndarray) -> float:
        try:
            image_weights = [member_weights(w, coverage, o) for o in organs]
        except ValueError:
            return -np.inf
        probs = [
            combine(m, iw) / np.float32(255.0) for m, iw in zip(maps, image_weights, strict=True)
        ]
        return best_thresholds(dice_table(probs, truths, grid_arr), organs_arr, grid_arr)[1]

    weights = np.ones(n_models)
    best = objective(weights)
    if n_models == 1:
        return weights, best
    for _ in range(max_rounds):
        improved = False
        for m in range(n_models):
            for f in factors:
                trial = weights.copy()
                trial[m] = weights[m] * f
                if trial.sum() <= 0 or np.allclose(trial, weights):
                    continue
                score = objective(trial)
                if score > best + 1e-9:
                    best, weights, improved = score, trial, True
        if not improved:
            break
    return weights / weights.sum(), best


@dataclass
class EnsembleResult:
    config: EnsembleConfig
    metrics: dict[str, Any]
    curves: pd.DataFrame  # threshold x organ mean Dice of the ensemble
    per_image: pd.DataFrame  # id, organ, dice of the ensemble at its thresholds


def search_ensemble(
    raw_dir: str | Path,
    prepared_dir: str | Path,
    oof_dir: str | Path,
    models: Sequence[str],
    thresholds: Sequence[float],
    um_per_px: float,
    fixed_weights: dict[str, float] | None = None,
    min_component_um2: float = 0.0,
) -> EnsembleResult:
    """Find model weights and per-organ thresholds that maximise OOF mean Dice.

    Weights are searched at training scale against the prepared masks (cheap, many evaluations);
    thresholds are then chosen at the original resolution against the real masks, through the
    same functions the submission uses. ``fixed_weights`` skips the weight search.
    """
    raw_dir = Path(raw_dir)
    grid = np.asarray(sorted(thresholds), dtype=np.float64)
    if grid.size == 0 or grid.min() <= 0 or grid.max() >= 1:
        raise DataError("ensemble.thresholds must be a non-empty list of values in (0, 1)")
    default_threshold = 0.5
    evaluated = np.union1d(grid, [default_threshold])
    on_grid = np.isin(evaluated, grid)
    meta = read_metadata(raw_dir / "train.csv", "train").set_index("id", drop=False)
    index = read_index(prepared_dir)
    ids, organs = index["id"].tolist(), index["organ"].to_numpy()
    models = list(models)

    coverage = read_coverage(oof_dir, models)
    uncovered = sorted(
        {o for o in organs if all(cov is not None and o not in cov for cov in coverage)}
    )
    if uncovered:
        raise DataError(f"ensemble.models: no member covers organ(s) {uncovered}")
    scaled_maps = [[read_oof_map(oof_dir, n, i) for n in models] for i in ids]
    if fixed_weights:
        weights = np.array([float(fixed_weights.get(n, 0.0)) for n in models])
        if weights.sum() <= 0:
            raise DataError("ensemble.weights must give at least one model a positive weight")
        weights = weights / weights.sum()
        for organ in ORGANS:
            try:
                member_weights(weights, coverage, organ)
            except ValueError as exc:
                raise DataError(f"ensemble.weights: {exc}") from None
    else:
        masks = [load_prepared(prepared_dir, i)[1] for i in ids]
        weights, _ = search_weights(scaled_maps, masks, organs, grid, coverage=coverage)

    # Exact scoring at the original resolution: the ensemble, and each model on its own (a
    # specialist alone is scored on every image, as if it covered every organ).
    candidates = {"ensemble": weights, **{n: np.eye(len(models))[j] for j, n in enumerate(models)}}
    no_coverage = [None] * len(models)
    tables: dict[str, np.ndarray] = {k: np.zeros((len(ids), evaluated.size)) for k in candidates}
    for i, image_id in enumerate(track(ids, description="ensemble: score thresholds")):
        row = meta.loc[image_id]
        truth = decode_mask(
            row.rle, truth_shape(row), f"{raw_dir / 'train.csv'}: row id={image_id}"
        )
        for key, w in candidates.items():
            if key != "ensemble" and len(models) == 1:
                tables[key][i] = tables["ensemble"][i]
                continue
            cov = coverage if key == "ensemble" else no_coverage
            w = member_weights(w, cov, row.organ)
            prob = to_original(combine(scaled_maps[i], w), truth.shape)
            if min_component_um2 > 0:
                tables[key][i] = [
                    dice(postprocess(prob, t, row.pixel_size, min_component_um2), truth)
                    for t in evaluated
                ]
            else:
                tables[key][i] = dice_from_counts(*threshold_counts(prob, truth, evaluated))

    def summary(key: str) -> tuple[dict[str, float], dict[str, Any], np.ndarray]:
        chosen, _ = best_thresholds(tables[key][:, on_grid], organs, evaluated[on_grid])
        column = {float(t): j for j, t in enumerate(evaluated)}
        per_image = np.array([tables[key][i, column[chosen[o]]] for i, o in enumerate(organs)])
        return chosen, summarise(index[["id", "organ"]].assign(dice=per_image)), per_image

    chosen, ens_metrics, ens_per_image = summary("ensemble")
    default_col = int(np.flatnonzero(evaluated == default_threshold)[0])
    metrics: dict[str, Any] = {
        "ensemble": ens_metrics,
        "ensemble_at_default_threshold": summarise(
            index[["id", "organ"]].assign(dice=tables["ensemble"][:, default_col])
        ),
        "weights": {n: round(float(w), 4) for n, w in zip(models, weights, strict=True)},
        "single_models": {n: summary(n)[1] for n in models},
    }
    best_single = max(models, key=lambda n: metrics["single_models"][n]["dice"])
    metrics["best_single_model"] = {
        "name": best_single,
        "dice": metrics["single_models"][best_single]["dice"],
    }

    curves = pd.DataFrame({"threshold": evaluated[on_grid]})
    for organ in ORGANS:
        sel = organs == organ
        if sel.any():
            curves[organ] = np.round(tables["ensemble"][sel][:, on_grid].mean(axis=0), 5)
    config = EnsembleConfig(
        members={n: round(float(w), 6) for n, w in zip(models, weights, strict=True) if w > 0},
        thresholds=chosen,
        um_per_px=um_per_px,
        default_threshold=default_threshold,
    )
    per_image = index[["id", "organ", "fold"]].assign(dice=np.round(ens_per_image, 5))
    return EnsembleResult(config, metrics, curves, per_image)


# -------------------------------------------------------------------------------------- submission


def ensemble_members(
    models_dir: str | Path, config: EnsembleConfig, folds: Sequence[int]
) -> list[tuple[Path, float]]:
    """Checkpoint dirs and weights: each model's weight is split evenly over its fold models."""
    return [
        (checkpoint_dir(models_dir, name, fold), weight / len(folds))
        for name, weight in config.members.items()
        for fold in folds
    ]


def predict_test(
    test: pd.DataFrame,
    images_dir: str | Path,
    predictor: Predictor,
    config: EnsembleConfig,
    on_image: Callable[[Any, float], None] | None = None,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Predict every row of a validated ``test.csv``: the one loop the submit stage and the Kaggle
    kernel share. Returns the submission (id, rle) and the masks; ``on_image(row, seconds)`` is
    called after each image (the kernel logs its runtime with it)."""
    if abs(predictor.um_per_px - config.um_per_px) > 1e-9:
        raise DataError(
            f"ensemble config says {config.um_per_px} µm/px but the checkpoints were trained at "
            f"{predictor.um_per_px} µm/px"
        )
    rows, masks = [], {}
    min_um2 = predictor.config.min_component_um2
    for row in track(list(test.itertuples(index=False)), description="predict test images"):
        started = time.perf_counter()
        img = read_image(Path(images_dir) / f"{row.id}.tiff", (row.img_height, row.img_width))
        prob = predictor.predict(img, row.pixel_size, row.organ)
        pred = postprocess(
            prob, config.threshold(row.organ, row.data_source), row.pixel_size, min_um2
        )
        masks[row.id] = pred
        rows.append({"id": row.id, "rle": rle.encode(pred)})
        if on_image is not None:
            on_image(row, time.perf_counter() - started)
    return pd.DataFrame(rows, columns=["id", "rle"]), masks


def write_submission(path: str | Path, submission: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        submission.to_csv(tmp, index=False)


def make_submission(
    raw_dir: str | Path,
    models_dir: str | Path,
    config: EnsembleConfig,
    folds: Sequence[int],
    out_csv: str | Path,
    inference: InferenceConfig | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Write ``submission.csv`` (id, rle) for ``test.csv``; score it when test labels exist."""
    raw_dir = Path(raw_dir)
    test = read_metadata(raw_dir / "test.csv", "test")
    predictor = Predictor.from_checkpoints(ensemble_members(models_dir, config, folds), inference)
    submission, masks = predict_test(test, raw_dir / "test_images", predictor, config)
    write_submission(out_csv, submission)

    labels_path = raw_dir / "test_labels.csv"
    if not labels_path.is_file():
        return submission, {"scored": False, "n_images": len(submission)}
    labels = pd.read_csv(labels_path, dtype={"id": str, "rle": str}).set_index("id")
    scored = []
    for row in test.itertuples(index=False):
        if row.id not in labels.index:
            raise DataError(f"{labels_path}: no label for test id {row.id}")
        truth = decode_mask(
            labels.loc[row.id, "rle"], truth_shape(row), f"{labels_path}: id={row.id}"
        )
        scored.append({"id": row.id, "organ": row.organ, "dice": dice(masks[row.id], truth)})
    return submission, {"scored": True, **summarise(pd.DataFrame(scored))}
