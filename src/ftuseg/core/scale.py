"""Physical-scale resampling: every image is brought to a common µm/px before the model sees it.

HPA train images are 0.4 µm/px; HuBMAP test images range from 0.229 to 6.263 µm/px. Working at
one physical scale makes an FTU the same size in pixels whatever the source, and predictions are
resampled back to the original grid before they are scored or encoded.
"""

from __future__ import annotations

import cv2
import numpy as np


def scaled_shape(shape: tuple[int, int], pixel_size: float, target_um: float) -> tuple[int, int]:
    """(H, W) of an image of ``shape`` at ``pixel_size`` µm/px once resampled to ``target_um``."""
    factor = pixel_size / target_um
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def _resize(arr: np.ndarray, shape: tuple[int, int], down: int, up: int) -> np.ndarray:
    """Resize to ``shape`` (H, W) with ``down`` interpolation when shrinking, ``up`` otherwise."""
    if tuple(arr.shape[:2]) == tuple(shape):
        return arr
    shrinking = shape[0] * shape[1] < arr.shape[0] * arr.shape[1]
    return cv2.resize(arr, (shape[1], shape[0]), interpolation=down if shrinking else up)


def resize_image(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, C) uint8 image: area averaging down (no aliasing), cubic up."""
    return _resize(img, shape, cv2.INTER_AREA, cv2.INTER_CUBIC)


def resize_prob(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a float probability map (area averaging down, bilinear up)."""
    return _resize(prob, shape, cv2.INTER_AREA, cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 0/1 mask by resampling its coverage and keeping pixels that are at least half in."""
    if tuple(mask.shape[:2]) == tuple(shape):
        return mask.astype(np.uint8, copy=False)
    return (resize_prob(mask.astype(np.float32), shape) >= 0.5).astype(np.uint8)


def to_scale(img: np.ndarray, pixel_size: float, target_um: float) -> np.ndarray:
    """Resample an image from ``pixel_size`` to ``target_um`` µm/px."""
    return resize_image(img, scaled_shape(img.shape[:2], pixel_size, target_um))
