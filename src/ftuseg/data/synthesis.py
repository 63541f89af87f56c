"""Synthetic tissue pixels for the sample dataset: stain concentrations -> Beer–Lambert RGB.

Per-organ textures (a glomerulus' tuft inside Bowman's space, a crypt's nuclear rim...) fill an
FTU mask, so a model learns the FTUs from structure; the stains and thickness set the colours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ftuseg.core.organs import HPA_THICKNESS_UM

# Optical density per unit stain concentration in R, G, B (Ruifrok & Johnston 2001, as in
# ImageJ's colour deconvolution "H DAB", "H&E" and "H PAS" vectors).
STAIN_VECTORS: dict[str, np.ndarray] = {
    "hematoxylin": np.array([0.650, 0.704, 0.286]),
    "dab": np.array([0.268, 0.570, 0.776]),
    "eosin": np.array([0.093, 0.954, 0.283]),
    "pas": np.array([0.175, 0.972, 0.155]),
}
GLASS_OD = 0.03  # slide + mounting medium


@dataclass(frozen=True)
class Zone:
    """A tissue compartment: nuclei per 1000 µm², counterstain optical density, and depth.

    FTU zones are stacked from the FTU boundary inward; each is ``depth_um`` thick and the last
    one fills the rest of the FTU.
    """

    nuclei: float
    matrix: float
    depth_um: float = math.inf


@dataclass(frozen=True)
class OrganTexture:
    stroma: Zone
    ftu: tuple[Zone, ...]
    nucleus_um: float  # nucleus radius


ORGAN_TEXTURES: dict[str, OrganTexture] = {
    # Glomerulus: a thin empty Bowman's space, then a dense capillary tuft rich in matrix.
    "kidney": OrganTexture(Zone(3.5, 0.30), (Zone(0.3, 0.04, 4.0), Zone(14.0, 0.55)), 2.8),
    # Prostate gland: an epithelial rim of nuclei around an empty lumen.
    "prostate": OrganTexture(Zone(2.0, 0.40), (Zone(12.0, 0.25, 10.0), Zone(0.3, 0.06)), 3.0),
    # Colonic crypt: a dense epithelial rim around pale goblet cells and lumen.
    "largeintestine": OrganTexture(Zone(7.0, 0.25), (Zone(16.0, 0.30, 8.0), Zone(1.5, 0.12)), 2.6),
    # White pulp: packed small lymphocytes with little matrix, in eosinophilic red pulp.
    "spleen": OrganTexture(Zone(5.0, 0.45), (Zone(22.0, 0.12),), 2.2),
    # Alveolus: a thin cellular wall around air.
    "lung": OrganTexture(Zone(6.0, 0.40), (Zone(6.0, 0.30, 3.0), Zone(0.2, 0.03)), 2.5),
}


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ``sigma_px``.

    Large correlation lengths are synthesised on a coarse grid and upsampled, which keeps the
    cost proportional to the image area rather than to area × kernel size.
    """
    h, w = shape
    factor = max(1.0, sigma_px / 3.0)
    ch, cw = max(2, math.ceil(h / factor)), max(2, math.ceil(w / factor))
    field = rng.standard_normal((ch, cw), dtype=np.float32)
    field = cv2.GaussianBlur(field, (0, 0), sigmaX=max(sigma_px / factor, 0.3))
    if (ch, cw) != (h, w):
        field = cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC)
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def _nuclei_field(
    density: np.ndarray, pixel_size: float, nucleus_um: float, rng: np.random.Generator
) -> np.ndarray:
    """Hematoxylin concentration of nuclei scattered with a per-pixel density (per 1000 µm²)."""
    lam = density * (pixel_size**2 / 1000.0)
    centres = rng.poisson(lam).astype(np.float32)
    sigma_um = nucleus_um / 1.5
    sigma_px = max(sigma_um / pixel_size, 0.5)
    # A nucleus peaks at 1 when resolved; below a pixel it blends into its pixel's average.
    gain = 2 * math.pi * (sigma_um / pixel_size) ** 2
    field = cv2.GaussianBlur(centres, (0, 0), sigmaX=sigma_px) * gain
    return np.minimum(field, 1.5)


def synthesise_tissue(
    mask: np.ndarray,
    organ: str,
    pixel_size: float,
    thickness: float,
    stain: str,
    rng: np.random.Generator,
    thickness_gamma: float = 0.5,
) -> np.ndarray:
    """Render an RGB uint8 image whose FTUs (``mask``) carry ``organ``'s texture.

    ``stain`` is ``"hpa"`` (hematoxylin + DAB), ``"he"`` (hematoxylin + eosin) or ``"pas"``.
    """
    tex = ORGAN_TEXTURES[organ]
    shape = mask.shape
    um = 1.0 / pixel_size  # pixels per micrometre

    depth = cv2.distanceTransform(mask, cv2.DIST_L2, 5) * pixel_size
    nuclei = np.full(shape, tex.stroma.nuclei, dtype=np.float32)
    matrix = np.full(shape, tex.stroma.matrix, dtype=np.float32)
    cellular = np.zeros(shape, dtype=bool)  # FTU compartments with cells (where DAB can bind)
    inside = mask.astype(bool)
    top = 0.0
    for zone in tex.ftu:
        sel = inside & (depth > top) & (depth <= top + zone.depth_um)
        nuclei[sel] = zone.nuclei
        matrix[sel] = zone.matrix
        if zone.nuclei >= 2.0:
            cellular |= sel
        top += zone.depth_um
    # Soften compartment borders by ~1 µm so they are not pixel-sharp.
    soft = max(1.0 * um, 0.5)
    nuclei = cv2.GaussianBlur(nuclei, (0, 0), soft)
    matrix = cv2.GaussianBlur(matrix, (0, 0), soft)

    # Tissue gaps (tears, vessels) in the stroma; FTUs and their surroundings stay tissue.
    near_ftu = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=max(1, round(8 * um)))
    gaps = (smooth_noise(rng, shape, 25 * um) > 1.3) & ~near_ftu.astype(bool)
    tissue = (~gaps).astype(np.float32)
    tissue = cv2.GaussianBlur(tissue, (0, 0), max(2 * um, 0.5))

    fibres = 1.0 + 0.35 * smooth_noise(rng, shape, 1.5 * um)
    matrix = np.clip(matrix * fibres, 0, None) * tissue
    nuc = _nuclei_field(nuclei * tissue, pixel_size, tex.nucleus_um * rng.uniform(0.9, 1.1), rng)

    jitter = rng.uniform(0.85, 1.15, size=3)
    if stain == "hpa":
        # HPA: hematoxylin counterstain everywhere, DAB where the antibody binds (varies by image).
        dab_ftu, dab_stroma = rng.uniform(0.0, 0.6), rng.uniform(0.0, 0.2)
        dab_map = np.where(cellular, dab_ftu, dab_stroma * (matrix > 0.1)).astype(np.float32)
        dab_map = cv2.GaussianBlur(dab_map, (0, 0), soft) * (
            1.0 + 0.4 * smooth_noise(rng, shape, 3 * um)
        )
        conc = {
            "hematoxylin": 0.55 * nuc + 0.25 * matrix,
            "dab": np.clip(dab_map, 0, None) * tissue,
        }
    elif stain == "he":
        conc = {"hematoxylin": 0.80 * nuc + 0.05 * matrix, "eosin": 1.00 * matrix}
    elif stain == "pas":
        conc = {"hematoxylin": 0.70 * nuc + 0.05 * matrix, "pas": 0.90 * matrix}
    else:
        raise ValueError(f"unknown stain {stain!r}: expected 'hpa', 'he' or 'pas'")

    thick = (thickness / HPA_THICKNESS_UM) ** thickness_gamma
    od = np.full((*shape, 3), GLASS_OD, dtype=np.float32)
    for (name, c), j in zip(conc.items(), jitter, strict=False):
        od += (thick * j * c)[..., None] * STAIN_VECTORS[name].astype(np.float32)
    rgb = 255.0 * np.power(10.0, -od) + rng.normal(0.0, 2.0, size=od.shape).astype(np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
