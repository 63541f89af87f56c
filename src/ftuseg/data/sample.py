"""The embedded sample dataset: real FTU geometry, synthesised pixels, competition file format.

Its kidney test images can be real HuBMAP PAS tiles instead (``real_kidney_test``, the default's
20; :mod:`ftuseg.data.real_tiles`), and ``train_source: kidney_pas`` makes it the real kidney
tiles alone (the ``kidney-real`` profile).

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
from ftuseg.data.real_tiles import ORGAN as REAL_ORGAN
from ftuseg.data.real_tiles import load_real_tiles, write_real
from ftuseg.data.synthesis import synthesise_tissue

log = logging.getLogger(__name__)

TRAIN_SOURCES = ("synthetic", "kidney_pas")


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
    # Real HuBMAP PAS kidney tiles (ftuseg.data.real_tiles) standing in for the synthetic kidney
    # test images: this many (0 = synthetic kidney test images).
    real_kidney_test: int = 0
    # Training images: "synthetic" (HPA-like, every organ) | "kidney_pas" (the bundled real PAS
    # kidney training tiles only; the test split is then the real kidney tiles alone).
    train_source: str = "synthetic"


@dataclass(frozen=True)
class SourceImage:
    id: str
    organ: str
    age: float
    sex: str
    polygons: list[np.ndarray]  # each (N, 2) float [x=col, y=row] at 0.4 µm/px


def load_sources() -> list[SourceImage]:
    """The bundled real annotations (see ``assets/PROVENANCE.md``)."""
    meta_file = resources.files("ftuseg") / "assets" / "annotations_meta.csv"
    annotations = resources.files("ftuseg") / "assets" / "annotations"
    meta = pd.read_csv(str(meta_file), dtype={"id": str})
    sources = []
    for row in meta.itertuples(index=False):
        polys = json.loads((annotations / f"{row.id}.json").read_text())
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
    if cfg.train_source not in TRAIN_SOURCES:
        raise DataError(
            f"sample.train_source must be one of {TRAIN_SOURCES}, got {cfg.train_source!r}"
        )
    real_only = cfg.train_source == "kidney_pas"
    if real_only and cfg.real_kidney_test < 1:
        raise DataError("sample.train_source kidney_pas needs sample.real_kidney_test >= 1")
    train_src, test_src = split_sources(load_sources(), cfg)

    with atomic_path(out_dir, is_dir=True) as tmp:
        if real_only:
            train_rows, test_rows, labels = (
                write_real(tmp, load_real_tiles("train"), "train"),
                [],
                [],
            )
        else:
            train_rows = _write_synthetic_train(tmp, train_src, cfg)
            test_rows, labels = _write_synthetic_test(tmp, test_src, cfg)
        if cfg.real_kidney_test:
            real = write_real(tmp, load_real_tiles("test", cfg.real_kidney_test), "test")
            test_rows += [r[:7] for r in real]
            labels += [(r[0], r[7]) for r in real]
        pd.DataFrame(train_rows, columns=list(TRAIN_COLUMNS)).to_csv(tmp / "train.csv", index=False)
        pd.DataFrame(test_rows, columns=list(TEST_COLUMNS)).to_csv(tmp / "test.csv", index=False)
        pd.DataFrame(labels, columns=["id", "rle"]).to_csv(tmp / "test_labels.csv", index=False)
        pd.DataFrame({"id": [r[0] for r in test_rows], "rle": "1 1"}).to_csv(
            tmp / "sample_submission.csv", index=False
        )
        (tmp / "README.md").write_text(_README.format(cfg=cfg))
    return {"train": len(train_rows), "test": len(test_rows)}


def _write_synthetic_train(tmp: Path, sources: list[SourceImage], cfg: SampleConfig) -> list[tuple]:
    rows = []
    for src in track(sources, description="sample: train (HPA)"):
        rng = _image_rng(cfg.seed, src.id, "train")
        mask = render_ftu_mask(src, cfg.field_um, cfg.train_pixel_size, rng)
        img = synthesise_tissue(
            mask, src.organ, cfg.train_pixel_size, HPA_THICKNESS_UM, "hpa", rng, cfg.thickness_gamma
        )
        write_image(image_path(tmp, "train", src.id), img)
        h, w = mask.shape
        rows.append(
            (
                src.id,
                src.organ,
                "HPA",
                h,
                w,
                cfg.train_pixel_size,
                HPA_THICKNESS_UM,
                rle.encode(mask),
                src.age,
                src.sex,
            )
        )
    return rows


def _write_synthetic_test(
    tmp: Path, sources: list[SourceImage], cfg: SampleConfig
) -> tuple[list[tuple], list[tuple]]:
    stains = {**HUBMAP_STAIN, **(cfg.test_stains or {})}
    rows, labels = [], []
    for src in track(sources, description="sample: test (HuBMAP)"):
        if src.organ == REAL_ORGAN and (cfg.real_kidney_test or cfg.train_source != "synthetic"):
            continue  # the real tiles stand in for them
        rng = _image_rng(cfg.seed, src.id, "test")
        domain = HUBMAP[src.organ]
        mask = render_ftu_mask(src, cfg.test_field_um or cfg.field_um, domain.pixel_size, rng)
        img = synthesise_tissue(
            mask,
            src.organ,
            domain.pixel_size,
            domain.thickness,
            stains[src.organ],
            rng,
            cfg.thickness_gamma,
        )
        write_image(image_path(tmp, "test", src.id), img)
        h, w = mask.shape
        rows.append((src.id, src.organ, "Hubmap", h, w, domain.pixel_size, domain.thickness))
        labels.append((src.id, rle.encode(mask)))
    return rows, labels


_README = """# Embedded sample dataset

Generated by `ftuseg.data.sample` (seed {cfg.seed}, field of view {cfg.field_um} µm, training images:
{cfg.train_source}), in the competition's file layout. Synthetic images carry real competition FTU
geometry with synthesised pixels: `train_*` HPA-like (hematoxylin + DAB, {cfg.train_pixel_size} µm/px,
4 µm), `test_*` HuBMAP-like (H&E or PAS at each organ's real HuBMAP pixel size and thickness).
Images with ids `hubmap_pas_*` are **real** HuBMAP PAS kidney tiles with manual glomerulus masks
({cfg.real_kidney_test} test tiles at ≈1.0 µm/px; provenance and licence:
`ftuseg/assets/kidney_pas/README.md`). `test_labels.csv` holds the test truth (not part of the real
competition's files).
"""
