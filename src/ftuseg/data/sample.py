"""The embedded sample dataset: real FTU geometry, synthesised pixels, competition file format.

Real competition images cannot be bundled, so the default pipeline runs on images synthesised
around the real polygon annotations in ``assets/``. Each image is a square field of view of
``field_um`` micrometres cut from a real 3000×3000 annotation frame (0.4 µm/px):

- the **train** split is HPA-like: hematoxylin + DAB on white, rendered at 0.4 µm/px, 4 µm thick;
- the **test** split is HuBMAP-like: H&E or PAS, rendered at each organ's real HuBMAP pixel size
  and section thickness, with its truth in a separate ``test_labels.csv``, so the HPA→HuBMAP
  domain shift can be scored locally.

Pixels are rendered physically: per-stain concentration maps are turned into optical density
with published stain vectors (Beer–Lambert), scaled by section thickness. Inside the FTUs the
tissue follows an organ-specific texture (e.g. a glomerulus' dense tuft inside Bowman's space,
a crypt's nuclear rim around a pale lumen), so a model can learn the FTUs from structure, while
the DAB signal varies per image as antibodies do in HPA.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from rich.progress import track

from ftuseg.core import rle
from ftuseg.core.errors import DataError
from ftuseg.core.organs import (
    HPA_IMAGE_SIDE,
    HPA_PIXEL_SIZE_UM,
    HPA_THICKNESS_UM,
    HUBMAP,
    HUBMAP_STAIN,
    ORGANS,
)
from ftuseg.core.utils import atomic_path
from ftuseg.data.contract import TEST_COLUMNS, TRAIN_COLUMNS, image_path, write_image

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class SampleConfig:
    """Parameters of the sample dataset (``sample`` group of params.yaml)."""

    seed: int = 2022
    train_per_organ: int = 4
    test_per_organ: int = 2
    field_um: float = 480.0  # physical side of each image; 1200 µm = full 3000×3000 HPA images
    thickness_gamma: float = 0.5  # OD grows as (thickness / 4 µm) ** gamma
    test_stains: dict[str, str] | None = None  # organ -> "he" | "pas"; default: HUBMAP_STAIN
    # µm/px of the HPA-like training images (the competition's are 0.4); another value stands
    # for a user's own data at another resolution.
    train_pixel_size: float = HPA_PIXEL_SIZE_UM
    # Field of the test images (µm); null: field_um. The real HuBMAP test images span about
    # 1 mm (160² px of prostate at 6.263 µm/px to 4500² of large intestine at 0.229 µm/px).
    test_field_um: float | None = None
    # Each bundled annotation used up to this many times (the k-th use rotated/flipped by the k-th
    # of the 8 square symmetries, with its own pixels): more images than the 10 annotations per
    # organ. Train and test never share an annotation. 1: each annotation once.
    repeat: int = 1


@dataclass(frozen=True)
class SourceImage:
    id: str
    organ: str
    age: float
    sex: str
    polygons: list[np.ndarray]  # each (N, 2) float [x=col, y=row] at 0.4 µm/px


def load_sources() -> list[SourceImage]:
    """The bundled real annotations (see ``assets/PROVENANCE.md``)."""
    assets = resources.files("ftuseg") / "assets"
    meta = pd.read_csv(str(assets / "annotations_meta.csv"), dtype={"id": str})
    sources = []
    for row in meta.itertuples(index=False):
        polys = json.loads((assets / "annotations" / f"{row.id}.json").read_text())
        polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polys if len(p) >= 3]
        sources.append(SourceImage(row.id, row.organ, row.age, row.sex, polygons))
    return sources


def repeated(src: SourceImage, k: int) -> SourceImage:
    """The ``k``-th use of an annotation: its frame turned by square symmetry ``k % 8`` (k = 0:
    the annotation itself), under its own id (the source id followed by two digits)."""
    if k == 0:
        return src
    side = float(HPA_IMAGE_SIDE)

    def turn(p: np.ndarray) -> np.ndarray:
        x, y = p[:, 0], p[:, 1]
        for _ in range(k % 4):  # 90° rotations of the frame
            x, y = y, side - x
        return np.stack([y, x] if k % 8 >= 4 else [x, y], axis=1)

    return replace(src, id=f"{src.id}{k:02d}", polygons=[turn(p) for p in src.polygons])


def split_sources(
    sources: Iterable[SourceImage], cfg: SampleConfig
) -> tuple[list[SourceImage], list[SourceImage]]:
    """Pick ``train_per_organ`` and ``test_per_organ`` source images per organ (seeded). The
    split is by annotation: the turned uses of one annotation (``cfg.repeat`` > 1) all fall on
    one side, so no test image shares its FTU geometry with a training image. Each side uses its
    annotations once before using any of them again."""
    if cfg.repeat < 1 or cfg.repeat > 99:
        raise DataError(f"sample.repeat must be in 1..99, got {cfg.repeat}")
    rng = np.random.default_rng(cfg.seed)
    sources = list(sources)
    ids = {s.id for s in sources}
    train, test = [], []
    for organ in ORGANS:
        pool = sorted((s for s in sources if s.organ == organ), key=lambda s: int(s.id))
        test_bases = -(-cfg.test_per_organ // cfg.repeat)  # ceil: annotations the test needs
        n_train = min(cfg.train_per_organ, len(pool) - test_bases)
        if n_train * cfg.repeat < cfg.train_per_organ or test_bases > len(pool) - n_train:
            raise DataError(
                f"sample: {organ} has {len(pool)} bundled annotations, too few for "
                f"train_per_organ {cfg.train_per_organ} and test_per_organ "
                f"{cfg.test_per_organ} on separate annotations with sample.repeat {cfg.repeat}"
            )
        order = [pool[i] for i in rng.permutation(len(pool))]
        train += _uses(order[:n_train], cfg.train_per_organ, ids)
        test += _uses(order[n_train:], cfg.test_per_organ, ids)
    return train, test


def _uses(bases: list[SourceImage], count: int, ids: set[str]) -> list[SourceImage]:
    """``count`` images from ``bases``: each annotation as it is, then each turned once, ..."""
    out = []
    for k in range(-(-count // len(bases)) if count else 0):
        for src in bases:
            copy = repeated(src, k)
            if k and copy.id in ids:
                raise DataError(f"sample.repeat: id {copy.id} already belongs to an annotation")
            out.append(copy)
    return out[:count]


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


def rasterise(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Fill polygons (``[x, y]`` pixel coordinates, sub-pixel precise) into a uint8 0/1 mask."""
    mask = np.zeros(shape, dtype=np.uint8)
    shift = 4
    pts = [np.round(p * (1 << shift)).astype(np.int32) for p in polygons]
    if pts:
        cv2.fillPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=shift)
    return mask


def choose_window(
    src: SourceImage, side_src: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Top-left corner (x0, y0) of a window of ``side_src`` source pixels that holds an FTU."""
    limit = HPA_IMAGE_SIDE - side_src
    if limit <= 0:
        return 0.0, 0.0
    poly = src.polygons[rng.integers(len(src.polygons))]
    cx, cy = poly.mean(axis=0) + rng.uniform(-side_src / 4, side_src / 4, size=2)
    return float(np.clip(cx - side_src / 2, 0, limit)), float(np.clip(cy - side_src / 2, 0, limit))


def render_ftu_mask(
    src: SourceImage, field_um: float, pixel_size: float, rng: np.random.Generator
) -> np.ndarray:
    """The truth mask of one sample image: a window of the source frame at ``pixel_size``."""
    side_src = field_um / HPA_PIXEL_SIZE_UM
    side = round(field_um / pixel_size)
    scale = HPA_PIXEL_SIZE_UM / pixel_size
    for _ in range(50):
        x0, y0 = choose_window(src, side_src, rng)
        offset = np.array([x0, y0])
        mask = rasterise([(p - offset) * scale for p in src.polygons], (side, side))
        if mask.any():
            return mask
    raise DataError(f"sample: no FTU of source image {src.id} is visible at {field_um} µm")


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


def _image_rng(seed: int, image_id: str, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(image_id), 0 if split == "train" else 1])


def generate(out_dir: str | Path, cfg: SampleConfig) -> dict[str, int]:
    """Write the sample dataset in the competition's layout under ``out_dir``, atomically.

    Layout: ``train.csv``, ``train_images/{id}.tiff``, ``test.csv``, ``test_images/{id}.tiff``,
    ``test_labels.csv`` (id, rle: the test truth, which the real competition never publishes)
    and ``sample_submission.csv``.
    """
    if not 0 < cfg.field_um <= HPA_IMAGE_SIDE * HPA_PIXEL_SIZE_UM:
        raise DataError(
            f"sample.field_um must be in (0, {HPA_IMAGE_SIDE * HPA_PIXEL_SIZE_UM:g}] µm, got {cfg.field_um}"
        )
    if (
        cfg.test_field_um is not None
        and not 0 < cfg.test_field_um <= HPA_IMAGE_SIDE * HPA_PIXEL_SIZE_UM
    ):
        raise DataError(
            f"sample.test_field_um must be in (0, {HPA_IMAGE_SIDE * HPA_PIXEL_SIZE_UM:g}] µm"
        )
    if cfg.train_pixel_size <= 0:
        raise DataError(f"sample.train_pixel_size must be positive, got {cfg.train_pixel_size}")
    if cfg.train_per_organ < 1 or cfg.test_per_organ < 0:
        raise DataError("sample.train_per_organ must be >= 1 and sample.test_per_organ >= 0")
    stains = {**HUBMAP_STAIN, **(cfg.test_stains or {})}
    train_src, test_src = split_sources(load_sources(), cfg)

    with atomic_path(out_dir, is_dir=True) as tmp:
        train_rows = []
        for src in track(train_src, description="sample: train (HPA)"):
            rng = _image_rng(cfg.seed, src.id, "train")
            mask = render_ftu_mask(src, cfg.field_um, cfg.train_pixel_size, rng)
            img = synthesise_tissue(
                mask,
                src.organ,
                cfg.train_pixel_size,
                HPA_THICKNESS_UM,
                "hpa",
                rng,
                cfg.thickness_gamma,
            )
            write_image(image_path(tmp, "train", src.id), img)
            h, w = mask.shape
            train_rows.append(
                (src.id, src.organ, "HPA", h, w, cfg.train_pixel_size, HPA_THICKNESS_UM,
                 rle.encode(mask), src.age, src.sex)
            )  # fmt: skip
        pd.DataFrame(train_rows, columns=list(TRAIN_COLUMNS)).to_csv(tmp / "train.csv", index=False)

        test_rows, labels = [], []
        for src in track(test_src, description="sample: test (HuBMAP)"):
            rng = _image_rng(cfg.seed, src.id, "test")
            domain = HUBMAP[src.organ]
            mask = render_ftu_mask(src, cfg.test_field_um or cfg.field_um, domain.pixel_size, rng)
            img = synthesise_tissue(
                mask, src.organ, domain.pixel_size, domain.thickness, stains[src.organ], rng,
                cfg.thickness_gamma,
            )  # fmt: skip
            write_image(image_path(tmp, "test", src.id), img)
            h, w = mask.shape
            test_rows.append(
                (src.id, src.organ, "Hubmap", h, w, domain.pixel_size, domain.thickness)
            )
            labels.append((src.id, rle.encode(mask)))
        pd.DataFrame(test_rows, columns=list(TEST_COLUMNS)).to_csv(tmp / "test.csv", index=False)
        pd.DataFrame(labels, columns=["id", "rle"]).to_csv(tmp / "test_labels.csv", index=False)
        pd.DataFrame({"id": [r[0] for r in test_rows], "rle": "1 1"}).to_csv(
            tmp / "sample_submission.csv", index=False
        )
        (tmp / "README.md").write_text(_README.format(cfg=cfg))
    return {"train": len(train_rows), "test": len(test_rows)}


_README = """# Embedded sample dataset (synthesised)

Generated by `ftuseg.data.sample` (seed {cfg.seed}, field of view {cfg.field_um} µm): real competition
FTU geometry with synthesised pixels, in the competition's file layout. `train_*` is HPA-like
(hematoxylin + DAB, {cfg.train_pixel_size} µm/px, 4 µm); `test_*` is HuBMAP-like (H&E or PAS at each organ's real
HuBMAP pixel size and thickness). `test_labels.csv` holds the test truth (not part of the real
competition's files). These are not real tissue images.
"""
