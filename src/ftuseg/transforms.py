"""Augmentations that move image and mask together. Seeded by an explicit numpy Generator."""

from __future__ import annotations

import numpy as np


def dihedral(arr: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 symmetries of the square (k in 0..7): rot90 ``k % 4`` times, then transpose
    if ``k >= 4``. Works on (H, W) and (H, W, C) arrays."""
    out = np.rot90(arr, k % 4, axes=(0, 1))
    if k >= 4:
        out = np.swapaxes(out, 0, 1)
    return out


def random_dihedral(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    k = int(rng.integers(8))
    return dihedral(image, k), dihedral(mask, k)
