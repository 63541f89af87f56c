"""Optical-density standardisation (``stain.normalize.method: od``): thickness removed, hue and
glass kept, the same at any image size, tissue-free images named."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ftuseg.core.errors import DataError
from ftuseg.domain.normalize import NormalizeConfig, StainNormalizer
from ftuseg.domain.optics import (
    glass_corrected,
    glass_level,
    optical_density,
    scale_density,
    standardize_density,
    tissue_density_top,
)
from ftuseg.domain.references import reference_image


def thicker(image: np.ndarray, factor: float) -> np.ndarray:
    """The same section ``factor`` times as thick: optical density above the glass × factor."""
    od = optical_density(image)
    glass = np.percentile(od.reshape(-1, 3), 1.0, axis=0).astype(np.float32)
    out = glass + np.maximum(od - glass, 0) * np.float32(factor)
    return np.clip(np.rint(255.0 * np.exp(-out)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def he_crop() -> np.ndarray:
    # The bundled H&E reference: real stains, glass and tissue, small enough to be quick.
    return np.ascontiguousarray(reference_image("he")[:256, :256])


def od_direction(image: np.ndarray) -> np.ndarray:
    od = glass_corrected(optical_density(image))
    tissue = od.sum(axis=2) > 0.3
    v = od[tissue].mean(axis=0)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("factor", [0.6, 1.6])
def test_a_thicker_or_thinner_section_comes_out_as_the_original(he_crop, factor):
    target = 2.0
    base = standardize_density(he_crop, target)
    other = standardize_density(thicker(he_crop, factor), target)
    assert tissue_density_top(base) == pytest.approx(target, rel=0.03)
    assert tissue_density_top(other) == pytest.approx(target, rel=0.03)
    # Before: the two differ by tens of levels; after: by rounding (8-bit levels, both ways).
    before = np.abs(he_crop.astype(int) - thicker(he_crop, factor).astype(int)).mean()
    after = np.abs(base.astype(int) - other.astype(int)).mean()
    assert before > 8 and after < 1.5, (before, after)


def test_hue_and_glass_are_kept(he_crop):
    out = standardize_density(he_crop, 0.5 * tissue_density_top(he_crop))
    # One factor for all channels: the stains' optical-density direction does not turn.
    assert float(od_direction(out) @ od_direction(he_crop)) > 0.999
    assert out.mean() > he_crop.mean() + 10  # half the density: visibly lighter
    # A slide's glass (here a border at RGB ≈ 240) keeps its colour.
    slide = np.pad(he_crop, ((32, 32), (32, 32), (0, 0)), constant_values=0)
    border = np.ones(slide.shape[:2], bool)
    border[32:-32, 32:-32] = False
    slide[border] = (240, 238, 243)
    out = standardize_density(slide, 1.5)
    np.testing.assert_array_equal(out[:32], slide[:32])


def test_large_images_are_measured_on_a_grid_and_scaled_alike(he_crop):
    big = np.tile(he_crop, (5, 5, 1))  # 1280² px: statistics from every 2nd pixel
    out = standardize_density(big, 2.0)
    # The grid's percentiles differ from the full image's by a hair: one level at most.
    crop = standardize_density(he_crop, 2.0).astype(int)
    assert np.abs(out[:256, :256].astype(int) - crop).max() <= 1
    assert tissue_density_top(out) == pytest.approx(2.0, rel=0.03)


def test_the_normaliser_targets_the_reference_and_names_tissue_free_images(he_crop, caplog):
    normalizer = StainNormalizer(NormalizeConfig(method="od", reference="pas"))
    assert normalizer.enabled
    pas_top = tissue_density_top(reference_image("pas"))
    assert tissue_density_top(normalizer(he_crop)) == pytest.approx(pas_top, rel=0.05)
    np.testing.assert_array_equal(normalizer(he_crop), normalizer(he_crop))

    blank = np.full((64, 64, 3), 250, np.uint8)
    with pytest.raises(DataError, match=r"blank\.tiff: no tissue found"):
        normalizer(blank, "blank.tiff")
    keep = StainNormalizer(NormalizeConfig(method="od", no_tissue="keep"))
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(keep(blank, "blank.tiff"), blank)
    assert "blank.tiff" in caplog.text
    with pytest.raises(DataError, match="uint8"):
        standardize_density(he_crop.astype(np.float32), 2.0, "float.tiff")


@pytest.mark.parametrize("factor", [0.2, 0.5, 1.5])
def test_scale_density_makes_a_lighter_or_darker_lab_and_keeps_the_glass(he_crop, factor):
    """The stain-amount augmentation's primitive: the same as the section ``factor`` times as
    dense (this file's reference definition), every stain alike, glass untouched."""
    out = scale_density(he_crop, factor)
    od = optical_density(he_crop)
    glass = glass_level(od)  # this crop has no glass: the cap (no stain below RGB ≈ 226)
    # Levels brighter than the glass stay as they are (the glass is a floor, not a colour).
    expected = np.where(od > glass, glass + (od - glass) * np.float32(factor), od)
    expected = np.clip(np.rint(255.0 * np.exp(-expected)), 0, 255)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    ratio = tissue_density_top(out) / tissue_density_top(he_crop)
    assert ratio == pytest.approx(factor, rel=0.1)  # 8-bit levels weigh at low density
    if factor == 0.5:  # density changes, the stains' direction does not (at 0.2 too few
        # pixels pass od_direction's tissue threshold to compare the same set)
        assert float(od_direction(out) @ od_direction(he_crop)) > 0.999
    slide = np.pad(he_crop, ((16, 16), (16, 16), (0, 0)))
    slide[:16], slide[-16:] = (240, 238, 243), (240, 238, 243)
    np.testing.assert_array_equal(scale_density(slide, factor)[:16], slide[:16])
    np.testing.assert_array_equal(scale_density(he_crop[..., :3], 1.0)[he_crop > 0],
                                  he_crop[he_crop > 0])  # fmt: skip
