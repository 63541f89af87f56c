"""Recolouring HPA images (hematoxylin + DAB) into the test domain's stains (H&E or PAS), the
1st-place remedy for the stain shift.

staintools' augmentors perturb an image's *own* stains, so an HPA copy stays brown; here the
image is deconvolved into hematoxylin and DAB (Ruifrok & Johnston's fixed vectors, which is what
HPA's protocol uses) and recomposed with the *target's* stain vectors:

- hematoxylin keeps its concentration, rescaled to the target reference's range;
- the counterstain (eosin for H&E, the PAS magenta) has no HPA equivalent: eosin stains all
  cytoplasm and stroma while DAB marks one antibody's target, so it is the reference's typical
  amount wherever there is tissue (total optical density, saturating at the tissue's median),
  plus ``dab_share`` of the reference's headroom where the DAB map is.

Target vectors and concentration ranges come from the competition hosts' reference images
(Macenko, deterministic) and are computed once per process. Concentrations are jittered by
``U(1 - sigma, 1 + sigma)`` per stain and copy; glass (no optical density) stays white.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
from skimage.color import rgb_from_hdx

from ftuseg.core.errors import DataError
from ftuseg.domain.optics import (
    MIN_TISSUE_PIXELS,
    PERCENTILE,
    TISSUE_OD,
    NoTissueError,
    glass_corrected,
    optical_density,
    tissue_mask,
)
from ftuseg.domain.references import reference_image

TARGETS = ("he", "pas")
# A copy target with this suffix is the image reduced to its hematoxylin, drawn in that
# reference's hematoxylin (``pas-h``): no counterstain and no DAB, so a DAB pattern that marks
# the FTU (a cue no H&E or PAS image has) is absent from those crops.
HEMATOXYLIN_SUFFIX = "-h"
COPY_TARGETS = (*TARGETS, *(t + HEMATOXYLIN_SUFFIX for t in TARGETS))


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


# Hematoxylin and DAB optical-density directions (scikit-image's rgb_from_hdx rows 0 and 1).
HPA_STAINS = _unit_rows(rgb_from_hdx[:2].astype(np.float64))


def concentrations(od: np.ndarray, stains: np.ndarray) -> np.ndarray:
    """Least-squares, non-negative-clipped concentrations of ``stains`` (k, 3) for every pixel
    of ``od`` (H, W, 3) -> (H, W, k)."""
    unmix = np.ascontiguousarray(np.linalg.pinv(stains).T, dtype=np.float32)  # (k, 3)
    conc = cv2.transform(od, unmix)
    return np.maximum(conc, 0.0, out=conc)


def _percentiles(
    values: np.ndarray, tissue: np.ndarray, label: str, what: str = "recolour its stains"
) -> np.ndarray:
    """The 99th percentile of ``values`` over ``tissue`` (floored at 1e-3); a NoTissueError
    naming ``label`` (and what it cannot do) when there is too little tissue."""
    if np.count_nonzero(tissue) < MIN_TISSUE_PIXELS:
        raise NoTissueError(f"{label}: no tissue found (optical density), cannot {what}")
    top = np.percentile(values[tissue], PERCENTILE, axis=0)
    return np.maximum(top, 1e-3)


def _check_rgb(image: np.ndarray, label: str) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"{label}: expected an (H, W, 3) uint8 RGB image")


@dataclass(frozen=True)
class TargetStains:
    """A target stain pair: hematoxylin and counterstain OD vectors (2, 3), the reference's
    99th-percentile concentration of each (2,), and its median counterstain over tissue (what
    unremarkable cytoplasm and stroma carry)."""

    name: str
    matrix: np.ndarray
    max_conc: np.ndarray
    typical_counter: float


@functools.cache
def target_stains(name: str) -> TargetStains:
    """The H&E or PAS stains of the bundled reference image (Macenko: deterministic)."""
    if name not in TARGETS:
        raise DataError(f"recolour target must be one of {', '.join(TARGETS)}, not {name!r}")
    from staintools import MacenkoStainExtractor

    reference = reference_image(name)
    matrix = _unit_rows(MacenkoStainExtractor.get_stain_matrix(reference).astype(np.float64))
    od = glass_corrected(optical_density(reference))
    conc, tissue = concentrations(od, matrix), tissue_mask(od)
    top = _percentiles(conc, tissue, f"reference {name}")
    return TargetStains(name, matrix, top, float(np.median(conc[..., 1][tissue])))


@dataclass(frozen=True)
class RecolourConfig:
    """How HPA images are recomposed in the target stains (the stain stage's ``recolour``)."""

    targets: tuple[str, ...] = TARGETS
    dab_share: float = 0.5  # how much of the counterstain's headroom the DAB map fills
    sigma: float = 0.2  # each stain's concentration × U(1 - sigma, 1 + sigma) per copy

    def __post_init__(self) -> None:
        if not self.targets or any(t not in COPY_TARGETS for t in self.targets):
            raise DataError(f"stain.augment.targets must be a non-empty subset of {COPY_TARGETS}")
        if not 0.0 <= self.dab_share <= 1.0:
            raise DataError(f"stain.augment.dab_share must be in [0, 1], got {self.dab_share}")
        if not 0.0 <= self.sigma < 1.0:
            raise DataError(f"stain.augment.sigma must be in [0, 1), got {self.sigma}")


class Recolourer:
    """One HPA image, deconvolved once; :meth:`render` recomposes it in a target's stains."""

    def __init__(self, image: np.ndarray, dab_share: float, label: str = "image") -> None:
        _check_rgb(image, label)
        od = glass_corrected(optical_density(np.ascontiguousarray(image)))
        tissue = tissue_mask(od)
        conc = concentrations(od, HPA_STAINS)  # (H, W, 2): hematoxylin, DAB
        density = od.sum(axis=2)
        top = _percentiles(conc, tissue, label)
        # Eosin / PAS stain cytoplasm and stroma about evenly: tissue presence saturates at the
        # tissue's median density, so nuclei (dense in hematoxylin) get no extra counterstain.
        presence = np.clip(density / np.float32(np.median(density[tissue])), 0.0, 1.0)
        # Glass keeps no counterstain: a pink or magenta cast over it would be a cue no test
        # image has (linear ramp across TISSUE_OD).
        presence *= np.clip(density / np.float32(TISSUE_OD) - 0.5, 0.0, 1.0)
        # Relative amounts: hematoxylin and DAB at 1.0 = the image's own 99th percentile.
        self.relative = np.dstack(
            [conc[..., 0] / np.float32(top[0]), presence, conc[..., 1] / np.float32(top[1])]
        ).astype(np.float32)
        self.dab_share = dab_share

    def render(self, target: TargetStains, scale: np.ndarray | None = None) -> np.ndarray:
        """RGB uint8 in ``target``'s stains; ``scale`` (2,) multiplies each stain's amount.

        Hematoxylin maps to the reference's range; the counterstain is the reference's typical
        amount wherever there is tissue, plus ``dab_share`` of its headroom (99th percentile -
        typical) where DAB was."""
        s = np.ones(2) if scale is None else np.asarray(scale, np.float64)
        v_h, v_c = target.matrix
        headroom = max(target.max_conc[1] - target.typical_counter, 0.0)
        mixing = np.stack(
            [
                v_h * target.max_conc[0] * s[0],
                v_c * target.typical_counter * s[1],
                v_c * headroom * self.dab_share * s[1],
            ],
            axis=1,
        )  # (3 RGB, 3 inputs): OD = mixing @ (hematoxylin, presence, DAB)
        # RGB = 255 · exp(-OD), as one affine map and exp.
        affine = np.concatenate([-mixing, np.full((3, 1), np.log(255.0))], axis=1)
        return cv2.convertScaleAbs(cv2.exp(cv2.transform(self.relative, affine.astype(np.float32))))


def recolour_copies(
    image: np.ndarray,
    cfg: RecolourConfig,
    copies: int,
    rng: np.random.Generator,
    label: str = "image",
) -> list[np.ndarray]:
    """``copies`` recoloured versions: copy k in ``cfg.targets[k % len(targets)]``, each with its
    own concentration jitter drawn from ``rng`` (a ``-h`` target: :func:`hematoxylin_only`, its
    hematoxylin jittered alike)."""
    source = Recolourer(image, cfg.dab_share, label)
    out = []
    for k in range(copies):
        name = cfg.targets[k % len(cfg.targets)]
        scale = rng.uniform(1.0 - cfg.sigma, 1.0 + cfg.sigma, size=2)
        if name.endswith(HEMATOXYLIN_SUFFIX):
            target = target_stains(name.removesuffix(HEMATOXYLIN_SUFFIX))
            out.append(hematoxylin_only(image, target, label, float(scale[0])))
        else:
            out.append(source.render(target_stains(name), scale))
    return out


def hematoxylin_only(
    image: np.ndarray, target: TargetStains, label: str = "image", amount: float = 1.0
) -> np.ndarray:
    """``image`` reduced to its hematoxylin, drawn in ``target``'s hematoxylin at ``amount`` times
    the target's 99th-percentile concentration: one rendering whatever the counterstain (HPA's
    DAB, eosin, PAS), the lab's staining strength or the section's thickness.

    Every pixel's optical density is unmixed into the target's hematoxylin and counterstain and
    the HPA DAB (three directions span RGB optical density, so the split is exact for those
    stains); the counterstain and DAB are dropped. Nuclei and their density are what every
    stain of the competition shares; what only the counterstain shows (PAS basement membranes,
    eosin's cytoplasm) is given up for it. A NoTissueError names ``label`` when the image has
    no tissue."""
    _check_rgb(image, label)
    od = glass_corrected(optical_density(np.ascontiguousarray(image)))
    basis = np.stack([target.matrix[0], target.matrix[1], HPA_STAINS[1]])
    hematoxylin = concentrations(od, basis)[..., 0]
    top = float(_percentiles(hematoxylin, tissue_mask(od), label, "keep its hematoxylin"))
    # RGB = 255 · exp(-c · v_h), c rescaled so the image's 99th percentile is the target's.
    gain = -(target.matrix[0] * (amount * target.max_conc[0] / top)).astype(np.float32)
    affine = np.concatenate([gain[:, None], np.full((3, 1), np.log(255.0), np.float32)], axis=1)
    return cv2.convertScaleAbs(cv2.exp(cv2.transform(hematoxylin[..., None], affine)))
