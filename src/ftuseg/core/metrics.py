"""The competition metric and its per-organ summaries."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ftuseg.core.organs import ORGANS


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks, ``2|P∩T| / (|P|+|T|)``; 1.0 when both are empty."""
    p = pred.astype(bool, copy=False)
    t = truth.astype(bool, copy=False)
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & t)) / denom


def dice_from_counts(
    intersection: np.ndarray, pred_sum: np.ndarray, truth_sum: np.ndarray
) -> np.ndarray:
    denom = pred_sum + truth_sum
    return np.where(denom > 0, 2.0 * intersection / np.maximum(denom, 1), 1.0)


BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 2022


def bootstrap_interval(
    values: np.ndarray, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling images), from a fixed
    seed: the same interval for the same values on every run."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = values[rng.integers(0, values.size, (resamples, values.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def summarise(
    per_image: pd.DataFrame, column: str = "dice", intervals: bool = False
) -> dict[str, float]:
    """Competition score (mean over images) and the mean per organ, as a flat dict; with
    ``intervals`` each mean also gets its 95 % bootstrap interval over images (``<key>_lo95``,
    ``<key>_hi95``: flat keys, so `dvc exp show` lists them as columns).

    Organs without images are left out rather than reported as 0.
    """
    groups = {"dice": per_image[column]}
    for organ in ORGANS:
        sel = per_image.loc[per_image["organ"] == organ, column]
        if len(sel):
            groups[f"dice_{organ}"] = sel
    out: dict[str, float] = {"n_images": len(per_image)}
    for key, values in groups.items():
        out[key] = round(float(values.mean()), 5)
        if intervals:
            low, high = bootstrap_interval(values.to_numpy())
            out[f"{key}_lo95"], out[f"{key}_hi95"] = round(low, 5), round(high, 5)
    # the order metrics files always had: dice, n_images, then the organs
    return {"dice": out.pop("dice"), **out}
