"""Training augmentation: one seeded code path for image and mask.

Every transform takes an explicit ``numpy.random.Generator`` (so a crop is reproducible from
``(seed, epoch, index)`` alone) and moves image and mask together: geometric transforms warp both
with the same matrix (the mask by nearest neighbour), colour transforms touch only the image,
CutMix and CutOut edit the same box in both. Probabilities and ranges follow the competition
write-up's recipe (``conf/config.yaml``, group ``augment``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from skimage.color import hed_from_rgb, rgb_from_hed

from ftuseg.core.organs import HPA_THICKNESS_UM, HUBMAP
from ftuseg.domain.optics import scale_density


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


Pair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class AugmentConfig:
    """The ``augment`` group of params.yaml: a probability per transform, then its ranges."""

    dihedral: float = 1.0  # flips, rot90 and transpose (one of the 8 symmetries)
    rotate_scale: float = 0.0  # rotation ±rotate_deg and zoom within scale_range
    rotate_deg: float = 30.0
    scale_range: tuple[float, float] = (0.8, 1.25)
    contrast: float = 0.0
    contrast_limit: float = 0.3  # × (1 ± limit) around the mean
    hsv: float = 0.0
    hue: float = 0.15  # fraction of the hue circle
    saturation: float = 0.25  # × (1 ± saturation)
    value: float = 0.25
    noise: float = 0.0
    noise_limit: float = 0.1  # additive uniform noise on [0, 1] images
    hed: float = 0.0  # HED colour jitter (hematoxylin, eosin, DAB after deconvolution)
    hed_sigma: float = 0.05  # per-channel scale 1 ± sigma
    hed_bias: float = 0.01  # per-channel shift ± bias
    # Stain amount: the optical density above the glass × a factor log-uniform in
    # density_range (another lab's staining intensity or section thickness, every stain alike).
    density: float = 0.0
    density_range: tuple[float, float] = (0.2, 1.5)
    # A biopsy's edge: the crop beyond a ragged line is glass (glass_range of its area), with no
    # FTU under it; tiles cut from inside a section never show one, biopsies always do.
    glass: float = 0.0
    glass_range: tuple[float, float] = (0.1, 0.5)
    # Another scanner's colour response: each channel through its own gamma, 1 ± scanner_gamma.
    scanner: float = 0.0
    scanner_gamma: float = 0.1
    thickness: float = 0.0  # pixel-size/thickness adaptation toward the organ's HuBMAP target
    thickness_alpha: float = 0.15  # saturation × (1 + α·Δt), value × (1 − α·Δt)
    cutmix: float = 0.0
    cutmix_same_organ: bool = True
    cutout: float = 0.0
    cutout_range: tuple[float, float] = (0.2, 0.5)  # square side as a fraction of the crop


# ---------------------------------------------------------------------------- geometry


def rotate_scale(image: np.ndarray, mask: np.ndarray, angle: float, zoom: float) -> Pair:
    """Rotate by ``angle`` degrees and zoom by ``zoom`` about the centre; reflected borders.
    The mask keeps its dtype (a uint8 mask keeps its ignore value, see :mod:`ftuseg.train.pseudo`)."""
    h, w = mask.shape
    matrix = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, zoom)
    image = cv2.warpAffine(
        image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    warped = cv2.warpAffine(
        mask.astype(np.uint8),
        matrix,
        (w, h),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    return image, warped.astype(mask.dtype, copy=False)


def cutout(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, frac: tuple) -> Pair:
    """A random square (``frac`` of the side) set to 0 in image and mask."""
    h, w = mask.shape
    side = max(1, round(min(h, w) * rng.uniform(*frac)))
    y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    image, mask = image.copy(), mask.copy()
    image[y : y + side, x : x + side] = 0
    mask[y : y + side, x : x + side] = False
    return image, mask


def cutmix(image: np.ndarray, mask: np.ndarray, other: Pair, rng: np.random.Generator) -> Pair:
    """Paste a box of ``other`` (same size) into image and mask; area fraction ~ Beta(1, 1)."""
    h, w = mask.shape
    area = rng.beta(1.0, 1.0)
    bh, bw = max(1, round(h * math.sqrt(area))), max(1, round(w * math.sqrt(area)))
    y, x = int(rng.integers(h - bh + 1)), int(rng.integers(w - bw + 1))
    image, mask = image.copy(), mask.copy()
    image[y : y + bh, x : x + bw] = other[0][y : y + bh, x : x + bw]
    mask[y : y + bh, x : x + bw] = other[1][y : y + bh, x : x + bw]
    return image, mask


def glass_edge(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, frac: tuple[float, float]
) -> Pair:
    """The crop beyond a ragged line (any direction) turned into glass, ``frac`` of its area: the
    edge of a biopsy or a section. The line wobbles (three random waves along it) and blends
    into the glass over two pixels; the glass is a faintly tinted white (``augment.noise`` adds
    a sensor's noise to it like to the rest). The mask is cleared wherever the glass covers
    more than half a pixel (a uint8 mask's ignore value too: no FTU lies under glass)."""
    h, w = mask.shape
    # The line's signed distance is smooth: computed on a grid 4× coarser and resized up
    # (benchmarks/loader.py: 5× faster than at full resolution on a 768² crop).
    yy, xx = np.mgrid[: h // 4 + 2, : w // 4 + 2].astype(np.float32) * np.float32(4.0)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    across = xx * np.float32(math.cos(theta)) + yy * np.float32(math.sin(theta))
    along = yy * np.float32(math.cos(theta)) - xx * np.float32(math.sin(theta))
    side = float(min(h, w))
    for _ in range(3):
        period, amp = rng.uniform(0.2, 1.0) * side, rng.uniform(0.0, 0.03) * side
        phase = rng.uniform(0.0, 2.0 * math.pi)
        across += np.float32(amp) * np.sin(along * np.float32(2.0 * math.pi / period) + phase)
    edge = float(np.quantile(across[: h // 4 + 1, : w // 4 + 1], 1.0 - rng.uniform(*frac)))
    full = cv2.resize(across, (w + 8, h + 8), interpolation=cv2.INTER_LINEAR)[:h, :w]
    alpha = np.clip((full - np.float32(edge)) * np.float32(0.5) + np.float32(0.5), 0.0, 1.0)
    tint = np.clip(np.rint(rng.uniform(226.0, 246.0) + rng.uniform(-4.0, 4.0, 3)), 0, 255)
    glass = np.empty_like(image)
    glass[:] = tint.astype(np.uint8)
    out = cv2.blendLinear(np.ascontiguousarray(image), glass, 1.0 - alpha, alpha)
    return out, np.where(alpha > 0.5, 0, mask).astype(mask.dtype)


# ---------------------------------------------------------------------------- colour (image only)


# Colour transforms map each channel (or each HSV channel) through a 256-entry table with
# cv2.LUT instead of converting the crop to floats: bit-identical results at a fraction of the
# cost (benchmarks/loader.py: contrast 17.5 -> 1.6 ms, HSV 11.4 -> 3.0 ms per 768² crop).


def _lut3(table: np.ndarray) -> np.ndarray:
    """(256, 3) values -> a per-channel cv2.LUT table (uint8, clipped like the float path)."""
    return np.clip(table, 0, 255).astype(np.uint8).reshape(256, 1, 3)


_LEVELS = np.arange(256, dtype=np.float32)[:, None]


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Scale every channel's deviation from its mean by ``factor``."""
    mean = np.array(cv2.mean(image)[:3], np.float32)
    return cv2.LUT(image, _lut3((_LEVELS - mean) * np.float32(factor) + mean))


def scanner_response(image: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Each channel through its own gamma (255·(v/255)^γ): another scanner's colour response,
    which multiplies each channel's optical density, glass included, by its γ."""
    table = 255.0 * (_LEVELS / 255.0) ** gamma.astype(np.float32)[None, :]
    return cv2.LUT(image, _lut3(np.rint(table)))


def adjust_hsv(image: np.ndarray, hue: float, saturation: float, value: float) -> np.ndarray:
    """Shift hue by ``hue`` (fraction of the circle), scale saturation and value."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)
    x = _LEVELS[:, 0]
    table = np.stack(
        [
            (x + np.float32(hue * 256.0)) % np.float32(256.0),
            x * np.float32(saturation),
            x * np.float32(value),
        ],
        axis=-1,
    )
    return cv2.cvtColor(cv2.LUT(hsv, _lut3(table)), cv2.COLOR_HSV2RGB_FULL)


def add_noise(image: np.ndarray, limit: float, rng: np.random.Generator) -> np.ndarray:
    """Additive integer noise, uniform on ``[-L, L]`` with ``L = round(limit·255)``.

    One random byte per value mapped through two tables (the positive and the negative part)
    and two saturating OpenCV ops: 2 ms per 768² crop against 16 ms for float noise. A byte
    has 256 states, so the 2L+1 levels are equally likely only up to one state (each level
    has 4 or 5 of the 256 when L = 26)."""
    level = round(limit * 255.0)
    if level <= 0:
        return image
    noise = (np.arange(256) * (2 * level + 1)) // 256 - level
    raw = np.frombuffer(rng.bytes(image.size), np.uint8).reshape(image.shape)
    up = cv2.LUT(raw, np.maximum(noise, 0).astype(np.uint8))
    down = cv2.LUT(raw, np.maximum(-noise, 0).astype(np.uint8))
    return cv2.subtract(cv2.add(image, up), down)


# Ruifrok & Johnston's optical density, as scikit-image computes it (log of the [0, 1] value,
# floored at 1e-6, over log(1e-6)), tabulated for the 256 levels.
_LOG_ADJUST = math.log(1e-6)
_OD = np.repeat(
    (np.log(np.maximum(np.arange(256) / 255.0, 1e-6)) / _LOG_ADJUST).astype(np.float32)[:, None],
    3,
    axis=1,
).reshape(256, 1, 3)


def hed_jitter(image: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Colour deconvolution into hematoxylin, eosin and DAB (Ruifrok & Johnston), a per-stain
    scale and shift, and back to RGB: scikit-image's ``rgb2hed``/``hed2rgb`` arithmetic with
    the per-pixel steps as a table (optical density), two 3×3 (+bias) ``cv2.transform`` and
    ``cv2.exp``. Within one level of scikit-image (7 ms against 36 ms per 768² crop)."""
    od = cv2.LUT(image, _OD)
    stains = cv2.transform(od, hed_from_rgb.T.astype(np.float32))
    np.maximum(stains, 0.0, out=stains)  # rgb2hed clips negative concentrations
    # (s·scale + bias) @ rgb_from_hed, times log(1e-6), plus log(255): exp() is then 0..255.
    matrix = (np.diag(scale) @ rgb_from_hed) * _LOG_ADJUST
    offset = (np.asarray(bias) @ rgb_from_hed) * _LOG_ADJUST + math.log(255.0)
    affine = np.concatenate([matrix.T, offset[:, None]], axis=1).astype(np.float32)
    # convertScaleAbs rounds and saturates to uint8 (values are positive, abs changes nothing).
    return cv2.convertScaleAbs(cv2.exp(cv2.transform(stains, affine)))


def thickness_adapt(image: np.ndarray, organ: str, um_per_px: float, alpha: float) -> np.ndarray:
    """The write-up's adaptation of an HPA image toward the organ's HuBMAP section: thicker
    sections look more saturated and darker, saturation × (1 + αΔt) and value × (1 − αΔt), with
    Δt the thickness difference relative to the HPA section (kidney: (10 − 4) / 4 = 1.5; in raw
    µm the value factor would go negative for α = 0.15); a coarser target resolution is imitated
    by resampling down by the pixel-size ratio and back up (cubic)."""
    dt = (HUBMAP[organ].thickness - HPA_THICKNESS_UM) / HPA_THICKNESS_UM
    out = adjust_hsv(image, 0.0, 1.0 + alpha * dt, max(0.05, 1.0 - alpha * dt)) if dt else image
    ratio = um_per_px / HUBMAP[organ].pixel_size
    if ratio < 1.0:  # the target is coarser than the training scale: blur like it
        h, w = out.shape[:2]
        small = (max(1, round(w * ratio)), max(1, round(h * ratio)))
        out = cv2.resize(
            cv2.resize(out, small, interpolation=cv2.INTER_AREA),
            (w, h),
            interpolation=cv2.INTER_CUBIC,
        )
    return out


# ---------------------------------------------------------------------------- the recipe


def augment(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    organ: str,
    um_per_px: float,
    draw_other: Callable[[bool], Pair] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Apply the recipe to one (H, W, 3) uint8 crop and its (H, W) mask.

    ``draw_other(same_organ)`` returns another training crop of the same size, for CutMix.
    Returns the image, the mask and the crop's effective µm/px (zoom changes it; the pixel-size
    head learns it).
    """
    pixel_size = um_per_px
    if cfg.rotate_scale and rng.random() < cfg.rotate_scale:
        zoom = math.exp(rng.uniform(*np.log(cfg.scale_range)))
        image, mask = rotate_scale(image, mask, rng.uniform(-cfg.rotate_deg, cfg.rotate_deg), zoom)
        pixel_size = um_per_px / zoom
    if cfg.dihedral and rng.random() < cfg.dihedral:
        image, mask = random_dihedral(image, mask, rng)
    if cfg.cutmix and draw_other is not None and rng.random() < cfg.cutmix:
        image, mask = cutmix(image, mask, draw_other(cfg.cutmix_same_organ), rng)
    if cfg.thickness and rng.random() < cfg.thickness:
        image = thickness_adapt(image, organ, pixel_size, cfg.thickness_alpha)
    if cfg.density and rng.random() < cfg.density:
        image = scale_density(image, math.exp(rng.uniform(*np.log(cfg.density_range))))
    if cfg.glass and rng.random() < cfg.glass:
        image, mask = glass_edge(image, mask, rng, cfg.glass_range)
    if cfg.scanner and rng.random() < cfg.scanner:
        image = scanner_response(image, 1.0 + rng.uniform(-cfg.scanner_gamma, cfg.scanner_gamma, 3))
    if cfg.hed and rng.random() < cfg.hed:
        scale = 1.0 + rng.uniform(-cfg.hed_sigma, cfg.hed_sigma, 3)
        image = hed_jitter(image, scale, rng.uniform(-cfg.hed_bias, cfg.hed_bias, 3))
    if cfg.hsv and rng.random() < cfg.hsv:
        image = adjust_hsv(
            image,
            rng.uniform(-cfg.hue, cfg.hue),
            1.0 + rng.uniform(-cfg.saturation, cfg.saturation),
            1.0 + rng.uniform(-cfg.value, cfg.value),
        )
    if cfg.contrast and rng.random() < cfg.contrast:
        image = adjust_contrast(image, 1.0 + rng.uniform(-cfg.contrast_limit, cfg.contrast_limit))
    if cfg.noise and rng.random() < cfg.noise:
        image = add_noise(image, cfg.noise_limit, rng)
    if cfg.cutout and rng.random() < cfg.cutout:
        image, mask = cutout(image, mask, rng, cfg.cutout_range)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask), pixel_size
