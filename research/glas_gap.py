"""Where a cross-stain gap comes from: what the rendition withholds, and what the transfer costs.

Per image, four Dice values enter (each averaged over seeds):

- C: the HPA-trained models on the (degraded) real H&E test images (cross-stain);
- T: the same-stain models on the same test images (the gap ratio's denominator);
- O: the HPA-trained models' OOF Dice on their own held-out training images (rendered as HPA,
  undegraded: in-domain);
- P: the same-stain models' OOF Dice on the same images as real H&E (undegraded).

Then the gap ratio G = C / T splits into

- the **ceiling** R = O / P: how much less the U-Net finds in the rendered images than in the
  H&E ones before any image changes stain; the ratio a method would reach if the transfer were
  perfect;
- the **transfer** τ = G / R = (C / O) / (T / P): what the HPA-trained model keeps on the H&E
  test images relative to its own domain, against what the same-stain model keeps.

Both move with the method: what a recipe does to the model on its own domain moves R (at the
benchmark's budget the full augmentation recipe and the recoloured copies cost in-domain Dice:
flips only reached R ≈ 1.04, the default ≈ 0.98), what it does for the other stain moves τ
(flips only τ ≈ 0.76, the default ≈ 0.98); the ratio needs both. Intervals are percentile bootstraps over images, all
from one fixed seed, paired: every statistic is recomputed on the same resampled images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

BOOTSTRAP = 2000


def bootstrap_of(stat: Callable[..., np.ndarray], *arrays: np.ndarray) -> tuple[float, ...]:
    """``stat`` of the arrays' means and its 95 % percentile interval, resampling images (the
    same resampled images for every array: paired). One fixed seed for every number, so an
    interval does not depend on what else a report holds."""
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(
            f"paired bootstrap needs arrays of one length, got {[len(a) for a in arrays]}"
        )
    idx = np.random.default_rng(0).integers(0, n, size=(BOOTSTRAP, n))
    point = stat(*(a.mean() for a in arrays))
    lo, hi = np.percentile(stat(*(a[idx].mean(axis=1) for a in arrays)), [2.5, 97.5])
    return float(point), float(lo), float(hi)


def bootstrap(values: np.ndarray, ref: np.ndarray | None = None) -> tuple[float, ...]:
    """Mean of ``values``, or with ``ref`` the paired ratio of means, and its interval."""
    if ref is None:
        return bootstrap_of(lambda v: v, values)
    return bootstrap_of(np.divide, values, ref)


def transfer(c: np.ndarray, t: np.ndarray, o: np.ndarray, p: np.ndarray) -> np.ndarray:
    return (c / t) / (o / p)


def decompose(cross: pd.Series, test: pd.Series, oof: pd.Series, oof_ref: pd.Series) -> dict:
    """Ceiling R and transfer τ (module docstring) of one method; the four series are per image
    and must hold the same images."""
    for name, s in (("same-stain test", test), ("in-domain OOF", oof), ("same-stain OOF", oof_ref)):
        if not s.index.sort_values().equals(cross.index.sort_values()):
            raise ValueError(f"{name} holds other images than the cross-stain test")
    arrays = [s.sort_index().to_numpy() for s in (cross, test, oof, oof_ref)]
    return {
        "ceiling": bootstrap_of(np.divide, arrays[2], arrays[3]),
        "transfer": bootstrap_of(transfer, *arrays),
    }


def ceiling_by_group(oof: pd.Series, oof_ref: pd.Series, groups: pd.Series) -> dict:
    """The ceiling R per group of images (``groups``: image id -> group, e.g. the antibody
    pattern the image was rendered with): which renditions withhold what."""
    out = {}
    for name, ids in groups.groupby(groups).groups.items():
        out[str(name)] = {
            "images": int(len(ids)),
            "in_domain_oof": bootstrap(oof[ids].to_numpy()),
            "same_stain_oof": bootstrap(oof_ref[ids].to_numpy()),
            "ceiling": bootstrap(oof[ids].to_numpy(), oof_ref[ids].to_numpy()),
        }
    return out
