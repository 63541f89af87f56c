"""Probability maps after the network: quantisation, ensembling, resampling, post-processing.

Pure numpy (no torch), so the ensemble search and the gallery run the exact arithmetic of the
inference engine without importing the model zoo. Every path that turns member maps into a mask
goes through these functions, which is why OOF numbers are the numbers a submission gets.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ftuseg.core.scale import resize_prob


def quantize(prob: np.ndarray) -> np.ndarray:
    """Probability in [0, 1] -> uint8 (0..255), rounding to nearest (float32 throughout)."""
    scaled = np.multiply(prob, np.float32(255.0), dtype=np.float32)
    return np.clip(np.rint(scaled, out=scaled), 0, 255, out=scaled).astype(np.uint8)


def dequantize(q: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) / 255.0


def accumulate(acc: np.ndarray | None, q: np.ndarray, weight: float) -> np.ndarray:
    """Add a quantised member map with a (normalised) weight to a running float32 sum."""
    term = np.float32(weight) * dequantize(q)
    return term if acc is None else acc + term


def combine(maps: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted mean of quantised member maps, quantised again.

    The Predictor folds its members in with the same :func:`accumulate` steps, so an ensemble
    evaluated from stored OOF maps gives bit-identical probabilities to running it on the image.
    """
    total = float(sum(weights))
    acc = None
    for q, w in zip(maps, weights, strict=True):
        acc = accumulate(acc, q, w / total)
    return quantize(acc)


def member_weights(
    weights: Sequence[float],
    coverage: Sequence[Sequence[str] | None],
    organ: str | None,
) -> list[float]:
    """The members' weights for an image of ``organ``: a specialist member (``coverage`` lists
    its organs; ``None`` = every organ) counts only on its organs. An unknown organ keeps all."""
    out = [
        float(w) if organ is None or cov is None or organ in cov else 0.0
        for w, cov in zip(weights, coverage, strict=True)
    ]
    if sum(out) <= 0:
        raise ValueError(f"no ensemble member with a positive weight covers organ {organ!r}")
    return out


def to_original(q: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A quantised model-scale probability map resampled to the original (H, W), as float32."""
    return resize_prob(dequantize(q), shape)


def ensemble_prob(
    maps: Sequence[np.ndarray], weights: Sequence[float], shape: tuple[int, int]
) -> np.ndarray:
    """Member maps at model scale -> the ensemble's probability at the original (H, W)."""
    return to_original(combine(maps, weights), shape)


def binarize(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Foreground where the probability is strictly above the threshold."""
    return (prob > threshold).astype(np.uint8)


def remove_small_components(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """Drop 8-connected components with fewer than ``min_pixels`` pixels."""
    if min_pixels <= 1:
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False  # background
    return keep[labels].astype(np.uint8) if n > 1 else mask


def postprocess(
    prob: np.ndarray, threshold: float, pixel_size: float, min_component_um2: float
) -> np.ndarray:
    """Threshold, then remove components smaller than ``min_component_um2`` (µm², physical)."""
    mask = binarize(prob, threshold)
    return remove_small_components(mask, min_component_um2 / pixel_size**2)
