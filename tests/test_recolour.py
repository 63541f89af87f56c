"""Recolouring HPA images (hematoxylin + DAB) into H&E and PAS."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ftuseg.core.errors import DataError
from ftuseg.domain.normalize import NormalizeConfig, StainNormalizer
from ftuseg.domain.optics import glass_corrected, optical_density
from ftuseg.domain.recolour import (
    HPA_STAINS,
    RecolourConfig,
    Recolourer,
    concentrations,
    hematoxylin_only,
    recolour_copies,
    target_stains,
)
from ftuseg.domain.stain import StainAugmentConfig, stain_copies


def hpa_like(seed: int = 0, side: int = 256) -> np.ndarray:
    """Glass around a tissue disc: hematoxylin nuclei everywhere in the tissue, DAB on a blob
    (the antibody's target), glass at RGB ≈ 240 as HPA slides have it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    tissue = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (0.42 * side) ** 2
    nuclei = np.zeros((side, side), np.float32)
    for y, x in rng.integers(0, side, size=(120, 2)):
        cv2.circle(nuclei, (int(x), int(y)), 3, 1.0, -1)
    dab = np.zeros((side, side), np.float32)
    cv2.circle(dab, (side // 3, side // 3), side // 6, 1.0, -1)
    h = (0.15 + 0.9 * nuclei) * tissue
    d = 0.8 * dab * tissue
    od = h[..., None] * HPA_STAINS[0] + d[..., None] * HPA_STAINS[1] + 0.04
    return np.clip(255 * np.exp(-od), 0, 255).astype(np.uint8)


def stain_vectors(image: np.ndarray) -> np.ndarray:
    from staintools import MacenkoStainExtractor

    m = MacenkoStainExtractor.get_stain_matrix(image).astype(np.float64)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("target", ["he", "pas"])
def test_recoloured_copies_have_the_targets_stain_vectors_not_dab(target):
    image = hpa_like()
    source = stain_vectors(image)
    assert cos(source[1], HPA_STAINS[1]) > 0.98  # the input really is H + DAB
    ref = target_stains(target).matrix
    out = Recolourer(image, dab_share=0.5).render(target_stains(target))
    found = stain_vectors(out)
    for k in range(2):
        assert cos(found[k], ref[k]) > 0.98, (k, found[k], ref[k])
    # the counterstain is the target's, far from DAB's direction
    assert cos(found[1], HPA_STAINS[1]) < cos(found[1], ref[1]) - 0.05


def test_copies_are_deterministic_per_seed_and_alternate_targets():
    image, cfg = hpa_like(1), RecolourConfig(targets=("he", "pas"), sigma=0.2)
    a = recolour_copies(image, cfg, 4, np.random.default_rng(7))
    b = recolour_copies(image, cfg, 4, np.random.default_rng(7))
    c = recolour_copies(image, cfg, 4, np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    # even copies in H&E, odd ones in PAS: their counterstains differ in direction
    he, pas = target_stains("he").matrix[1], target_stains("pas").matrix[1]
    for k, copy in enumerate(a):
        v = stain_vectors(copy)[1]
        assert (cos(v, he) > cos(v, pas)) == (k % 2 == 0)
    cfg4 = StainAugmentConfig(method="recolour", copies=2, sigma1=0.2)
    first, _, _ = stain_copies(image, cfg4, seed=11)
    again, _, _ = stain_copies(image, cfg4, seed=11)
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))


def test_hematoxylin_copy_targets_drop_the_dab_and_leave_the_other_copies_unchanged():
    """``pas-h`` copies are the image's hematoxylin alone (the DAB blob gone), at the copy's
    jittered amount; mixing them in leaves the stream of the ``pas`` copies as it was."""
    image = hpa_like(3)
    cfg = RecolourConfig(targets=("pas", "pas-h"), sigma=0.2)
    pas, only_h = recolour_copies(image, cfg, 2, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    (same_pas,) = recolour_copies(image, RecolourConfig(("pas",), sigma=0.2), 1, rng)
    np.testing.assert_array_equal(pas, same_pas)
    amount = rng.uniform(0.8, 1.2, size=2)[0]  # the second copy's draw
    stains = target_stains("pas")
    np.testing.assert_array_equal(only_h, hematoxylin_only(image, stains, "x", amount))
    assert abs(amount - 1.0) > 0.1  # the jitter is applied, not the plain rendering
    assert not np.array_equal(only_h, hematoxylin_only(image, stains))
    # Where the DAB blob was, the copy shows only the nuclei's hematoxylin: no counterstain.
    od = glass_corrected(optical_density(only_h))
    dense = od.sum(axis=2) > 0.3
    assert cos(od[dense].mean(axis=0), stains.matrix[0]) > 0.995
    with pytest.raises(DataError, match="targets"):
        RecolourConfig(targets=("ihc-h",))


def test_copies_stay_aligned_with_the_image_and_its_mask():
    """Same geometry: glass stays glass, tissue stays tissue, nuclei stay where they were."""
    image = hpa_like(2)
    (copy,) = recolour_copies(image, RecolourConfig(("he",)), 1, np.random.default_rng(0))
    assert copy.shape == image.shape and copy.dtype == np.uint8
    od_in = glass_corrected(optical_density(image))
    od_out = glass_corrected(optical_density(copy))
    tissue_in, tissue_out = od_in.sum(2) > 0.15, od_out.sum(2) > 0.15
    assert np.mean(tissue_in == tissue_out) > 0.99
    assert copy[~tissue_in].min() >= 235  # glass is white, with no pink cast
    h_in = concentrations(od_in, HPA_STAINS)[..., 0]
    h_out = concentrations(od_out, target_stains("he").matrix)[..., 0]
    aligned = np.corrcoef(h_in.ravel(), h_out.ravel())[0, 1]
    shifted = np.corrcoef(h_in.ravel(), np.roll(h_out, 4, axis=1).ravel())[0, 1]
    assert aligned > 0.9 and shifted < aligned - 0.3


def test_bad_settings_and_images_without_tissue_are_named_errors():
    with pytest.raises(DataError, match="targets"):
        StainAugmentConfig(method="recolour", targets=("ihc",))
    with pytest.raises(DataError, match="dab_share"):
        RecolourConfig(dab_share=1.5)
    blank = np.full((64, 64, 3), 240, np.uint8)
    with pytest.raises(DataError, match="blank.tiff: no tissue"):
        Recolourer(blank, 0.5, label="blank.tiff")


def test_the_pas_target_has_the_stains_of_real_hubmap_pas_tiles():
    """The PAS reference against real HuBMAP PAS kidney tiles it was not chosen from (the
    held-out test tiles): every tile's Macenko hematoxylin and PAS vectors within cos 0.98."""
    from ftuseg.data.real_tiles import load_real_tiles

    ref = target_stains("pas").matrix
    for tile in load_real_tiles("test"):
        found = stain_vectors(tile.image)
        for k in range(2):
            assert cos(found[k], ref[k]) > 0.98, (tile.id, k, found[k], ref[k])


def thicker(image: np.ndarray, factor: float) -> np.ndarray:
    od = glass_corrected(optical_density(image)) * np.float32(factor) + 0.04
    return np.clip(np.rint(255 * np.exp(-od)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("target", ["he", "pas"])
def test_hematoxylin_only_is_one_image_whatever_the_counterstain_and_thickness(target):
    stains = target_stains(target)
    hpa = hpa_like()
    recoloured = Recolourer(hpa, dab_share=0.5).render(stains)  # same nuclei, eosin or PAS
    thick = thicker(recoloured, 1.6)
    # The inputs differ by tens of levels; their hematoxylin renderings by rounding.
    assert np.abs(hpa.astype(int) - recoloured).mean() > 15
    assert np.abs(recoloured.astype(int) - thick).mean() > 15
    out = [hematoxylin_only(x, stains).astype(int) for x in (hpa, recoloured, thick)]
    assert np.abs(out[0] - out[1]).mean() < 1.0 and np.abs(out[1] - out[2]).mean() < 1.0
    # Drawn in the target's hematoxylin alone, at its 99th-percentile concentration.
    od = glass_corrected(optical_density(out[1].astype(np.uint8)))
    dense = od.sum(axis=2) > 0.5
    assert cos(od[dense].mean(axis=0), stains.matrix[0]) > 0.995
    # A pure hematoxylin pixel's concentration is its density along the (unit) vector.
    conc = od @ stains.matrix[0]
    assert np.percentile(conc[od.sum(axis=2) > 0.15], 99) == pytest.approx(
        stains.max_conc[0], rel=0.05
    )


def test_the_hematoxylin_normaliser_needs_a_bundled_reference_and_names_blank_images(tmp_path):
    normalizer = StainNormalizer(NormalizeConfig(method="hematoxylin", reference="pas"))
    assert normalizer.enabled
    np.testing.assert_array_equal(
        normalizer(hpa_like()), hematoxylin_only(hpa_like(), target_stains("pas"))
    )
    blank = np.full((64, 64, 3), 245, np.uint8)
    with pytest.raises(DataError, match=r"blank\.tiff: no tissue found"):
        normalizer(blank, "blank.tiff")
    keep = StainNormalizer(NormalizeConfig(method="hematoxylin", no_tissue="keep"))
    np.testing.assert_array_equal(keep(blank, "blank.tiff"), blank)
    with pytest.raises(DataError, match="must be he or pas"):
        NormalizeConfig(method="hematoxylin", reference=str(tmp_path / "ref.png"))
