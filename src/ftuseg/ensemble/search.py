"""Ensemble search on the out-of-fold predictions: model weights (coordinate ascent) and one
threshold per organ that maximise OOF mean Dice.

Weights are searched at training scale against the prepared masks (cheap, many evaluations);
thresholds are then chosen at the original resolution against the real masks, through the same
map arithmetic (:mod:`ftuseg.infer.maps`) the submission uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.progress import track

from ftuseg.core.errors import DataError
from ftuseg.core.metrics import dice, dice_from_counts, summarise
from ftuseg.core.organs import ORGANS
from ftuseg.data.contract import read_metadata, row_mask
from ftuseg.data.prepare import load_prepared, read_index
from ftuseg.ensemble.level_table import (
    LevelTable,
    best_thresholds,
    level_table,
    threshold_counts,
)
from ftuseg.ensemble.oof_maps import read_coverage, read_oof_map
from ftuseg.infer.maps import ensemble_prob, member_weights, postprocess
from ftuseg.infer.members import EnsembleConfig

# The threshold every report compares the tuned ones with ("at 0.5" in metrics/ensemble.json).
REFERENCE_THRESHOLD = 0.5


def search_weights(
    maps: Sequence[Sequence[np.ndarray]] | LevelTable,
    truths: Sequence[np.ndarray] | None,
    organs: Sequence[str],
    grid: Sequence[float],
    factors: Sequence[float] = (0.0, 0.5, 0.8, 1.25, 2.0),
    max_rounds: int = 10,
    coverage: Sequence[Sequence[str] | None] | None = None,
) -> tuple[np.ndarray, float]:
    """Coordinate ascent on model weights for OOF mean Dice with per-organ thresholds.

    ``maps[i][m]`` is model m's quantised probability for image i (same shape as
    ``truths[i]``), or a :class:`LevelTable` built from them (``truths`` None). Each round tries
    scaling one weight at a time by ``factors`` and keeps any improvement; cost grows linearly
    with the number of models. Specialists (``coverage``) count only on their organs; weights
    leaving an organ without any member are not considered. Returns normalised weights and the
    objective they reach.
    """
    table = maps if isinstance(maps, LevelTable) else level_table(maps, truths)  # type: ignore[arg-type]
    n_models = table.n_members

    def objective(w: np.ndarray) -> float:
        return table.objective(w, organs, grid, coverage)

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


def fixed_weights_of(
    fixed: dict[str, float], models: Sequence[str], coverage: Sequence[Any]
) -> np.ndarray:
    """``ensemble.weights`` as a normalised vector over ``models``, checked to give every organ
    a covering member."""
    weights = np.array([float(fixed.get(n, 0.0)) for n in models])
    if weights.sum() <= 0:
        raise DataError("ensemble.weights must give at least one model a positive weight")
    weights = weights / weights.sum()
    for organ in ORGANS:
        try:
            member_weights(weights, coverage, organ)
        except ValueError as exc:
            raise DataError(f"ensemble.weights: {exc}") from None
    return weights


def searched_weights(
    prepared_dir: Path,
    oof_dir: Path,
    models: Sequence[str],
    ids: Sequence[str],
    organs: np.ndarray,
    grid: np.ndarray,
    coverage: Sequence[Any],
) -> np.ndarray:
    """Weights by coordinate ascent at training scale. One image in memory at a time: the
    search works on the compressed :class:`LevelTable`."""
    table = LevelTable(len(models))
    for i in track(ids, description="ensemble: index OOF maps"):
        table.add([read_oof_map(oof_dir, n, i) for n in models], load_prepared(prepared_dir, i)[1])
    weights, _ = search_weights(table, None, organs, grid, coverage=coverage)
    return weights


def score_thresholds(
    csv_path: Path,
    meta: pd.DataFrame,
    oof_dir: Path,
    models: Sequence[str],
    ids: Sequence[str],
    candidates: dict[str, np.ndarray],
    coverage: Sequence[Any],
    evaluated: np.ndarray,
    min_component_um2: float,
) -> dict[str, np.ndarray]:
    """Per candidate weighting (name -> weights), the (images, thresholds) Dice table at the
    original resolution against the real masks (``meta``: ``csv_path``'s rows by id).
    ``"ensemble"`` uses the members' organ coverage; any other candidate (a model on its own) is
    scored on every image, as if it covered every organ."""
    no_coverage = [None] * len(models)
    tables = {k: np.zeros((len(ids), evaluated.size)) for k in candidates}
    for i, image_id in enumerate(track(ids, description="ensemble: score thresholds")):
        row = meta.loc[image_id]
        truth = row_mask(row, csv_path)
        maps = [read_oof_map(oof_dir, n, image_id) for n in models]
        for key, w in candidates.items():
            if key != "ensemble" and len(models) == 1:  # the one model is the ensemble
                tables[key][i] = tables["ensemble"][i]
                continue
            cov = coverage if key == "ensemble" else no_coverage
            prob = ensemble_prob(maps, member_weights(w, cov, row.organ), truth.shape)
            if min_component_um2 > 0:
                tables[key][i] = [
                    dice(postprocess(prob, t, row.pixel_size, min_component_um2), truth)
                    for t in evaluated
                ]
            else:
                tables[key][i] = dice_from_counts(*threshold_counts(prob, truth, evaluated))
    return tables


def checked_coverage(oof_dir: Path, models: Sequence[str], organs: np.ndarray) -> list[Any]:
    """Each member's organ coverage (None: every organ); an error when an organ of the OOF
    images has no member."""
    coverage = read_coverage(oof_dir, models)
    uncovered = sorted(
        {o for o in organs if all(cov is not None and o not in cov for cov in coverage)}
    )
    if uncovered:
        raise DataError(f"ensemble.models: no member covers organ(s) {uncovered}")
    return coverage


def ensemble_metrics(
    tables: dict[str, np.ndarray],
    index: pd.DataFrame,
    models: Sequence[str],
    weights: np.ndarray,
    evaluated: np.ndarray,
    on_grid: np.ndarray,
) -> tuple[dict[str, float], dict[str, Any], np.ndarray]:
    """The ensemble's per-organ thresholds (best on the grid), its metrics (at those, at the
    reference threshold, each model alone at its own) and its per-image Dice at its thresholds."""
    organs = index["organ"].to_numpy()
    column = {float(t): j for j, t in enumerate(evaluated)}

    def summary(key: str, intervals: bool = False) -> tuple[dict, dict[str, Any], np.ndarray]:
        chosen, _ = best_thresholds(tables[key][:, on_grid], organs, evaluated[on_grid])
        per_image = np.array([tables[key][i, column[chosen[o]]] for i, o in enumerate(organs)])
        scores = summarise(index[["id", "organ"]].assign(dice=per_image), intervals=intervals)
        return chosen, scores, per_image

    chosen, ens_metrics, ens_per_image = summary("ensemble", intervals=True)
    default_col = column[float(REFERENCE_THRESHOLD)]
    metrics: dict[str, Any] = {
        "ensemble": ens_metrics,
        "ensemble_at_default_threshold": summarise(
            index[["id", "organ"]].assign(dice=tables["ensemble"][:, default_col]), intervals=True
        ),
        "weights": {n: round(float(w), 4) for n, w in zip(models, weights, strict=True)},
        "single_models": {n: summary(n)[1] for n in models},
    }
    best_single = max(models, key=lambda n: metrics["single_models"][n]["dice"])
    metrics["best_single_model"] = {
        "name": best_single,
        "dice": metrics["single_models"][best_single]["dice"],
    }
    return chosen, metrics, ens_per_image


def cross_fitted(
    index: pd.DataFrame, evaluated: np.ndarray, on_grid: np.ndarray, fold_table: Any
) -> tuple[dict[str, float], np.ndarray]:
    """Every fold scored with the weights and per-organ thresholds tuned on the other folds
    (``fold_table(k)``: the (images, thresholds) Dice table of the weights found without fold
    ``k``): an estimate of what the ensemble scores on images it was not tuned on."""
    organs, folds = index["organ"].to_numpy(), index["fold"].to_numpy()
    column = {float(t): j for j, t in enumerate(evaluated)}
    per_image = np.full(len(index), np.nan)
    for k in sorted(set(folds.tolist())):
        table, held = fold_table(int(k)), folds == k
        chosen, _ = best_thresholds(table[~held][:, on_grid], organs[~held], evaluated[on_grid])
        untuned = sorted(set(organs[held].tolist()) - set(chosen))
        if untuned:
            raise DataError(
                f"cross-fitting: fold {k} holds {untuned} images, the other folds none to tune on"
            )
        per_image[held] = [table[i, column[chosen[organs[i]]]] for i in np.flatnonzero(held)]
    scores = summarise(index[["id", "organ"]].assign(dice=per_image), intervals=True)
    return scores, per_image


def search_ensemble(
    raw_dir: str | Path,
    prepared_dir: str | Path,
    oof_dir: str | Path,
    models: Sequence[str],
    thresholds: Sequence[float],
    *,
    um_per_px: float,
    fixed_weights: dict[str, float] | None = None,
    min_component_um2: float = 0.0,
    untuned_threshold: float | None = None,
) -> EnsembleResult:
    """Find model weights and per-organ thresholds that maximise OOF mean Dice.

    ``fixed_weights`` skips the weight search; ``untuned_threshold`` is recorded for organs
    the OOF data has no image of (None: predicting such an organ is an error).
    """
    raw_dir, prepared_dir, oof_dir = Path(raw_dir), Path(prepared_dir), Path(oof_dir)
    grid = np.asarray(sorted(thresholds), dtype=np.float64)
    if grid.size == 0 or grid.min() <= 0 or grid.max() >= 1:
        raise DataError("ensemble.thresholds must be a non-empty list of values in (0, 1)")
    evaluated = np.union1d(grid, [REFERENCE_THRESHOLD])
    on_grid = np.isin(evaluated, grid)
    csv_path = raw_dir / "train.csv"  # read before the search: a bad row fails fast
    meta = read_metadata(csv_path, "train").set_index("id", drop=False)
    index = read_index(prepared_dir)
    ids, organs = index["id"].tolist(), index["organ"].to_numpy()
    models = list(models)

    coverage = checked_coverage(oof_dir, models, organs)
    if fixed_weights:
        weights = fixed_weights_of(fixed_weights, models, coverage)
    else:
        weights = searched_weights(prepared_dir, oof_dir, models, ids, organs, grid, coverage)

    candidates = {"ensemble": weights, **{n: np.eye(len(models))[j] for j, n in enumerate(models)}}
    tables = score_thresholds(
        csv_path, meta, oof_dir, models, ids, candidates, coverage, evaluated, min_component_um2
    )

    chosen, metrics, ens_per_image = ensemble_metrics(
        tables, index, models, weights, evaluated, on_grid
    )

    def fold_table(fold: int) -> np.ndarray:
        """The Dice table of the weights searched without ``fold`` (fixed weights stay)."""
        if fixed_weights or len(models) == 1:
            return tables["ensemble"]
        rest = index["fold"].to_numpy() != fold
        w = searched_weights(
            prepared_dir,
            oof_dir,
            models,
            index.loc[rest, "id"].tolist(),
            organs[rest],
            grid,
            coverage,
        )
        if np.array_equal(w, weights):
            return tables["ensemble"]
        one = {"ensemble": w}
        args = (csv_path, meta, oof_dir, models, ids, one, coverage, evaluated, min_component_um2)
        return score_thresholds(*args)["ensemble"]

    metrics["ensemble_cross_fitted"], _ = cross_fitted(index, evaluated, on_grid, fold_table)
    config = EnsembleConfig(
        members={n: round(float(w), 6) for n, w in zip(models, weights, strict=True) if w > 0},
        thresholds=chosen,
        um_per_px=um_per_px,
        untuned_threshold=untuned_threshold,
    )
    per_image = index[["id", "organ", "fold"]].assign(dice=np.round(ens_per_image, 5))
    return EnsembleResult(
        config,
        metrics,
        organ_curves(tables["ensemble"][:, on_grid], organs, evaluated[on_grid]),
        per_image,
    )


def organ_curves(table: np.ndarray, organs: np.ndarray, grid: np.ndarray) -> pd.DataFrame:
    """Mean Dice per threshold of every organ present (the ensemble's threshold curves)."""
    curves = pd.DataFrame({"threshold": grid})
    for organ in ORGANS:
        sel = organs == organ
        if sel.any():
            curves[organ] = np.round(table[sel].mean(axis=0), 5)
    return curves
