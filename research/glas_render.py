"""Real H&E glands (GlaS) rendered as HPA-like images, for the real-pixel domain benchmark.

Each real H&E image is deconvolved into hematoxylin and eosin (its own Macenko vectors); the
hematoxylin is kept and the eosin replaced by DAB in one of the "antibody" patterns HPA images
show, recomposed with the HPA stain vectors (scikit-image's H and DAB) on HPA-like glass:

- ``negative``: no DAB (a quarter of HPA images are DAB-negative in the FTU's region);
- ``cytoplasmic``: DAB follows the eosin (the simple recipe: DAB = k · eosin);
- ``membranous``: DAB on the cell borders (morphological gradient of the eosin);
- ``nuclear``: DAB on the nuclei (follows the hematoxylin);
- ``ftu``: DAB on the glands themselves (an antibody that marks the FTU's epithelium: brown
  means gland in training, a cue no H&E test image carries).

``simple`` draws negative (25 %) or cytoplasmic; ``hard`` draws the five patterns evenly and
degrades the real H&E *test* images the way other sites and scanners do: thicker sections
(optical density × U(1, 1.6)), blur (σ up to 1.2 px) and JPEG (quality 60-90). The same-stain
reference trains on the original H&E images and is tested on the same degraded test images.

GlaS is research-only: this module writes into a folder the caller names, never into the
project, and nothing here is part of the package.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ftuseg.domain.optics import MIN_TISSUE_PIXELS, TISSUE_OD, glass_corrected, optical_density
from ftuseg.domain.recolour import HPA_STAINS, concentrations

PATTERNS = ("negative", "cytoplasmic", "membranous", "nuclear", "ftu")
DIFFICULTIES = ("simple", "hard")
HPA_GLASS_OD = np.array([0.045, 0.05, 0.04], np.float32)  # RGB ≈ (244, 243, 245)


def he_concentrations(image: np.ndarray, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Hematoxylin and eosin of a real H&E image (glass-corrected OD, its own Macenko vectors),
    each divided by its 99th percentile over tissue."""
    from staintools import MacenkoStainExtractor

    od = glass_corrected(optical_density(image))
    matrix = MacenkoStainExtractor.get_stain_matrix(image).astype(np.float64)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    conc = concentrations(od, matrix)
    tissue = od.sum(axis=2) > TISSUE_OD
    if np.count_nonzero(tissue) < MIN_TISSUE_PIXELS:
        raise ValueError(f"{label}: no tissue")
    top = np.maximum(np.percentile(conc[tissue], 99.0, axis=0), 1e-3)
    return conc[..., 0] / np.float32(top[0]), conc[..., 1] / np.float32(top[1])


def dab_map(
    pattern: str, hematoxylin: np.ndarray, eosin: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Relative DAB amount (0..~1) of one antibody pattern."""
    if pattern == "negative":
        return np.zeros_like(eosin)
    if pattern == "cytoplasmic":
        return eosin
    if pattern == "membranous":
        smooth = cv2.GaussianBlur(eosin, (0, 0), 1.0)
        border = cv2.morphologyEx(smooth, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        return np.clip(border / max(float(np.percentile(border, 99)), 1e-3), 0, 1.5)
    if pattern == "nuclear":
        return hematoxylin
    if pattern == "ftu":
        epithelium = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        return np.where(epithelium, np.maximum(eosin, hematoxylin), 0.0).astype(np.float32)
    raise ValueError(f"unknown antibody pattern {pattern!r}")


def draw_amounts(rng: np.random.Generator) -> tuple[float, float]:
    """Hematoxylin and DAB amounts of one rendered image."""
    amount_h = float(rng.uniform(0.45, 0.8))  # HPA's 4 µm sections: lighter hematoxylin than H&E
    amount_d = float(rng.uniform(0.35, 1.0))
    return amount_h, amount_d


def render_hpa(
    image: np.ndarray, mask: np.ndarray, pattern: str, amounts: tuple[float, float], label: str
) -> np.ndarray:
    """One real H&E image as an HPA-like hematoxylin + DAB image."""
    h, e = he_concentrations(image, label)
    dab = dab_map(pattern, h, e, mask)
    amount_h, amount_d = amounts
    od = (
        np.minimum(h, 2.0)[..., None] * (amount_h * HPA_STAINS[0]).astype(np.float32)
        + np.minimum(dab, 2.0)[..., None] * (amount_d * HPA_STAINS[1]).astype(np.float32)
        + HPA_GLASS_OD
    )
    return np.clip(np.rint(255.0 * np.exp(-od)), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Degradation:
    """How another site delivers one H&E test image (hard renderer)."""

    thickness: float  # optical density above glass × this (a thicker, darker section)
    blur_sigma: float  # Gaussian blur at the scan's 0.62 µm/px; none at ≤ 0.2
    jpeg_quality: int


def draw_degradation(rng: np.random.Generator) -> Degradation:
    return Degradation(
        thickness=float(rng.uniform(1.0, 1.6)),
        blur_sigma=float(rng.uniform(0.0, 1.2)),
        jpeg_quality=int(rng.integers(60, 91)),
    )


def degrade_he(image: np.ndarray, how: Degradation) -> np.ndarray:
    """A real H&E image as another site would deliver it: thicker (darker), blurred, JPEG."""
    od = optical_density(image)
    glass = np.percentile(od.reshape(-1, 3), 1.0, axis=0).astype(np.float32)
    thicker = glass + (od - glass) * np.float32(how.thickness)
    out = np.clip(np.rint(255.0 * np.exp(-np.maximum(thicker, 0))), 0, 255).astype(np.uint8)
    if how.blur_sigma > 0.2:
        out = cv2.GaussianBlur(out, (0, 0), how.blur_sigma)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, how.jpeg_quality])  # fmt: skip
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def draw_pattern(difficulty: str, rng: np.random.Generator) -> str:
    if difficulty == "simple":
        return "negative" if rng.random() < 0.25 else "cytoplasmic"
    if difficulty == "hard":
        return PATTERNS[int(rng.integers(len(PATTERNS)))]
    raise ValueError(f"difficulty must be one of {DIFFICULTIES}, not {difficulty!r}")


def draws(image_id: str, difficulty: str) -> tuple[str, tuple[float, float], Degradation | None]:
    """Every random choice of one image, from its own generator and in a fixed order: the
    antibody pattern, the stain amounts, the test degradation (hard only). The report replays
    them without rendering."""
    rng = np.random.default_rng([2022, int(image_id), DIFFICULTIES.index(difficulty)])
    pattern = draw_pattern(difficulty, rng)
    amounts = draw_amounts(rng)
    return pattern, amounts, draw_degradation(rng) if difficulty == "hard" else None
