"""Optical density (Beer-Lambert) primitives and per-image density standardisation.

A section's optical density grows with its thickness and with how long it sat in the stains:
a 10 µm HuBMAP section is darker than the 4 µm HPA one in every stain alike. Scaling an image's
optical density (relative to its own glass) so that its tissue's 99th percentile matches a
reference's removes that one factor and keeps the stains' hue and every texture (the
``stain.normalize.method: od`` normaliser). Unlike Vahadane or Macenko normalisation it fits no
stain matrix, so it never maps one stain onto another (an HPA image's DAB stays DAB) and it
costs one look-up table and two percentiles per image.
"""

from __future__ import annotations

import cv2
import numpy as np

from ftuseg.core.errors import DataError

# Optical density above the glass's (summed over RGB, natural log) below this is glass.
TISSUE_OD = 0.15
MIN_TISSUE_PIXELS = 64
GLASS_OD_MAX = 0.12  # per channel: glass is never darker than RGB ≈ 226
# Densities are compared at their 99th percentile over tissue: the darkest nuclei, robust to
# a few saturated pixels.
PERCENTILE = 99.0
# Statistics of large images come from a regular grid of at most this many pixels (an
# 8000² slide tile costs as little as a crop; the grid makes the percentiles deterministic).
STAT_PIXELS = 1_000_000

# -log(level / 255) for the 256 levels, level 0 read as 1 (staintools' convention), as the
# 3-channel table cv2.LUT takes.
_OD_LUT = np.repeat(
    (-np.log(np.maximum(np.arange(256), 1) / 255.0)).astype(np.float32)[:, None], 3, axis=1
).reshape(256, 1, 3)


def optical_density(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 3) float32 optical density (natural log)."""
    return cv2.LUT(image, _OD_LUT)


def glass_level(od: np.ndarray) -> np.ndarray:
    """The image's glass as optical density (3,): the 1st percentile per channel, capped at
    GLASS_OD_MAX for images without glass. Scanners and HPA slides put glass at RGB ≈ 235-245,
    which would otherwise read as a thin layer of stain everywhere."""
    return np.minimum(np.percentile(od.reshape(-1, 3), 1.0, axis=0), GLASS_OD_MAX).astype(
        np.float32
    )


def glass_corrected(od: np.ndarray) -> np.ndarray:
    """Optical density relative to the image's own glass instead of pure white (Beer-Lambert
    with the slide's background as incident light)."""
    return np.maximum(od - glass_level(od), 0.0)


def tissue_mask(od: np.ndarray) -> np.ndarray:
    """Pixels whose glass-corrected optical density (summed over RGB) is above TISSUE_OD."""
    return od.sum(axis=2) > TISSUE_OD


class NoTissueError(DataError):
    """An image without tissue (no pixel above TISSUE_OD): it has no density to measure."""


def _grid(image: np.ndarray) -> np.ndarray:
    step = max(1, int(np.ceil(np.sqrt(image.shape[0] * image.shape[1] / STAT_PIXELS))))
    return np.ascontiguousarray(image[::step, ::step])


def _glass_and_top(image: np.ndarray, label: str) -> tuple[np.ndarray, float]:
    """The glass level (3,) and the tissue's 99th-percentile glass-corrected density."""
    od = optical_density(_grid(image))
    glass = glass_level(od)
    density = np.maximum(od - glass, 0.0).sum(axis=2)
    tissue = density > TISSUE_OD
    if np.count_nonzero(tissue) < MIN_TISSUE_PIXELS:
        raise NoTissueError(f"{label}: no tissue found (optical density)")
    return glass, float(np.percentile(density[tissue], PERCENTILE))


def tissue_density_top(image: np.ndarray, label: str = "image") -> float:
    """The 99th percentile of the tissue's glass-corrected optical density (summed over RGB) of
    an (H, W, 3) uint8 RGB image; a NoTissueError naming ``label`` when it holds no tissue."""
    return _glass_and_top(image, label)[1]


def standardize_density(image: np.ndarray, target: float, label: str = "image") -> np.ndarray:
    """``image`` with its optical density above its own glass scaled by one factor so that its
    tissue's 99th-percentile density is ``target``: a thicker or longer-stained section is made
    as dark as the reference, stain ratios (hue) and glass unchanged. Raises a NoTissueError
    naming ``label`` when the image holds no tissue."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"{label}: expected an (H, W, 3) uint8 RGB image")
    image = np.ascontiguousarray(image)
    glass, top = _glass_and_top(image, label)
    return cv2.LUT(image, _density_lut(glass, target / top))


def _density_lut(glass: np.ndarray, factor: float) -> np.ndarray:
    """Per level and channel: OD' = glass + (OD - glass) · factor, floored at the glass (levels
    brighter than the glass stay as they are): one 256-entry table per channel for cv2.LUT."""
    od = _OD_LUT.reshape(256, 3)
    scaled = np.where(od > glass, glass + (od - glass) * np.float32(factor), od)
    lut = np.clip(np.rint(255.0 * np.exp(-scaled)), 0, 255).astype(np.uint8)
    return lut.reshape(256, 1, 3)


def scale_density(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` with its stain above its own glass ``factor`` times as dense: a lab that stains
    lighter or cuts thinner (factor < 1), or darker / thicker (factor > 1). Every stain alike,
    so hue and texture stay; unlike a brightness change the glass stays glass. The training
    augmentation ``augment.density`` draws the factor per crop."""
    image = np.ascontiguousarray(image)
    glass = glass_level(optical_density(_grid(image)))
    return cv2.LUT(image, _density_lut(glass, factor))
