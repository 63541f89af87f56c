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


def summarise(per_image: pd.DataFrame, column: str = "dice") -> dict[str, float]:
    """Competition score (mean over images) and the mean per organ, as a flat dict.

    Organs without images are left out rather than reported as 0.
    """
    out = {"dice": round(float(per_image[column].mean()), 5), "n_images": len(per_image)}
    for organ in ORGANS:
        sel = per_image.loc[per_image["organ"] == organ, column]
        if len(sel):
            out[f"dice_{organ}"] = round(float(sel.mean()), 5)
    return out
