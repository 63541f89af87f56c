"""Augmentation and stain handling: image and mask stay aligned, runs are seeded, the stain
stage is deterministic, normalisation moves colours toward the reference."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace

import cv2
import numpy as np
import pytest

from ftuseg.core.errors import DataError
from ftuseg.data.prepare import load_prepared
from ftuseg.domain.augment import (
    AugmentConfig,
    adjust_hsv,
    augment,
    cutmix,
    cutout,
    dihedral,
    glass_edge,
    hed_jitter,
    rotate_scale,
    scanner_response,
    thickness_adapt,
)
from ftuseg.domain.normalize import (
    NormalizeConfig,
    StainNormalizer,
    normalized_files,
    run_normalize_stage,
)
from ftuseg.domain.optics import tissue_density_top
from ftuseg.domain.recolour import RecolourConfig
from ftuseg.domain.references import reference_image
from ftuseg.domain.stain import StainAugmentConfig, copy_files, run_stain_stage
from ftuseg.train.datasets import CropDataset

GEOMETRY_ONLY = AugmentConfig(
    dihedral=1.0, rotate_scale=1.0, cutmix=1.0, cutmix_same_organ=False, cutout=1.0
)
ALL_ON = replace(
    GEOMETRY_ONLY, contrast=1.0, hsv=1.0, noise=1.0, hed=1.0, thickness=1.0, density=1.0,
    glass=1.0, scanner=1.0,
)  # fmt: skip


def content_pair(seed: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """An image whose red channel says where the mask is: red > 128 exactly on the mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for _ in range(4):
        cy, cx, r = rng.integers(10, size - 10, 2).tolist() + [int(rng.integers(6, 14))]
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    image[..., 0] = np.where(mask, 220, 30)
    return image, mask


def agreement(image: np.ndarray, mask: np.ndarray) -> float:
    return float(((image[..., 0] > 128) == mask).mean())


def test_content_rule_detects_misalignment():
    image, mask = content_pair(0)
    assert agreement(image, mask) == 1.0
    assert agreement(dihedral(image, 1), mask) < 0.9  # the check can fail


@pytest.mark.parametrize("k", range(8))
def test_dihedral_keeps_alignment(k):
    image, mask = content_pair(k)
    assert agreement(dihedral(image, k), dihedral(mask, k)) == 1.0


@pytest.mark.parametrize(("angle", "zoom"), [(30.0, 1.0), (-17.0, 0.8), (5.0, 1.25)])
def test_rotate_scale_keeps_alignment(angle, zoom):
    image, mask = content_pair(1)
    out_image, out_mask = rotate_scale(image, mask, angle, zoom)
    assert agreement(out_image, out_mask) > 0.98  # interpolation blurs only blob edges
    assert agreement(out_image, mask) < 0.95  # the content did move


def test_cutmix_and_cutout_edit_the_same_box_in_both():
    rng = np.random.default_rng(0)
    image, mask = content_pair(2)
    other = content_pair(3)
    mixed = cutmix(image, mask, other, rng)
    assert agreement(*mixed) == 1.0
    assert not np.array_equal(mixed[1], mask)
    cut = cutout(image, mask, rng, (0.3, 0.3))
    assert agreement(*cut) == 1.0 and (cut[0] == 0).all(axis=2).sum() >= 28 * 28


def test_whole_recipe_keeps_alignment_and_is_seeded():
    image, mask = content_pair(4)
    other = content_pair(5)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        out_image, out_mask, px = augment(
            image, mask, rng, GEOMETRY_ONLY, "kidney", 2.0, lambda same: other
        )
        assert out_image.shape == image.shape and out_mask.shape == mask.shape
        assert agreement(out_image, out_mask) > 0.98, seed
        assert 2.0 / 1.25 - 1e-9 <= px <= 2.0 / 0.8 + 1e-9
    runs = [
        augment(image, mask, np.random.default_rng(7), ALL_ON, "lung", 2.0, lambda s: other)
        for _ in range(2)
    ]
    for a, b in zip(runs[0][:2], runs[1][:2], strict=True):
        np.testing.assert_array_equal(a, b)
    third = augment(image, mask, np.random.default_rng(8), ALL_ON, "lung", 2.0, lambda s: other)
    assert not np.array_equal(runs[0][0], third[0])


def test_colour_transforms_leave_masks_and_geometry_alone():
    image, mask = content_pair(6)
    cfg = AugmentConfig(
        dihedral=0.0, contrast=1.0, hsv=1.0, noise=1.0, hed=1.0, thickness=1.0, density=1.0,
        scanner=1.0,
    )  # fmt: skip
    out_image, out_mask, _ = augment(image, mask, np.random.default_rng(0), cfg, "kidney", 0.4)
    np.testing.assert_array_equal(out_mask, mask)
    assert out_image.dtype == np.uint8 and not np.array_equal(out_image, image)
    # identity parameters are (nearly) the identity
    tissue = np.full((32, 32, 3), (180, 120, 160), np.uint8)
    assert np.abs(hed_jitter(tissue, np.ones(3), np.zeros(3)).astype(int) - tissue).max() <= 2
    assert np.abs(adjust_hsv(tissue, 0.0, 1.0, 1.0).astype(int) - tissue).max() <= 2


def test_stain_amount_augmentation_spans_its_range_of_labs():
    """``augment.density``: each crop's stain × a factor drawn log-uniformly in
    ``density_range``; both ends of the range are reached and nothing outside it."""
    crop = np.ascontiguousarray(reference_image("pas")[:128, :128])
    mask = np.zeros(crop.shape[:2], bool)
    cfg = AugmentConfig(dihedral=0.0, density=1.0, density_range=(0.2, 1.5))
    top = tissue_density_top(crop)
    ratios = [
        tissue_density_top(augment(crop, mask, np.random.default_rng(s), cfg, "kidney", 2.0)[0])
        / top
        for s in range(40)
    ]
    assert 0.18 < min(ratios) < 0.3 and 1.0 < max(ratios) < 1.6, (min(ratios), max(ratios))
    off = augment(crop, mask, np.random.default_rng(0), replace(cfg, density=0.0), "kidney", 2.0)
    np.testing.assert_array_equal(off[0], crop)


@pytest.mark.parametrize("seed", range(6))
def test_a_biopsy_edge_turns_a_share_of_the_crop_into_glass_without_ftus(seed):
    """``augment.glass``: the glass covers a share of the crop within ``glass_range``, is as
    bright as scanned glass, and no mask pixel is left under it; the tissue side is untouched
    (bar the two-pixel seam)."""
    image, mask = content_pair(seed, size=128)
    image[..., 1:] = 100  # no pixel brighter than 220 before: the glass is recognisable
    out, out_mask = glass_edge(image, mask, np.random.default_rng(seed), (0.2, 0.4))
    glass = out.min(axis=2) > 215
    assert 0.17 < glass.mean() < 0.43, glass.mean()
    assert not out_mask[glass].any()
    kept = (out == image).all(axis=2)
    assert kept.mean() > 1.0 - glass.mean() - 0.06
    np.testing.assert_array_equal(out_mask[kept], mask[kept])


def test_a_scanner_response_scales_each_channels_optical_density_by_its_gamma():
    tissue = np.random.default_rng(0).integers(60, 230, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(scanner_response(tissue, np.ones(3)), tissue)
    gamma = np.array([0.9, 1.0, 1.1])
    out = scanner_response(tissue, gamma)
    od_in = -np.log(tissue.reshape(-1, 3) / 255.0)
    od_out = -np.log(np.maximum(out.reshape(-1, 3), 1) / 255.0)
    ratio = np.median(od_out / od_in, axis=0)
    np.testing.assert_allclose(ratio, gamma, atol=0.01)


def test_thickness_adaptation_darkens_thick_and_blurs_coarse_targets():
    rng = np.random.default_rng(0)
    tissue = rng.integers(90, 230, (64, 64, 3), dtype=np.uint8)
    kidney = thickness_adapt(tissue, "kidney", 0.4, 0.15)  # 10 µm vs 4 µm sections
    assert kidney.mean() < tissue.mean() - 5
    spleen = thickness_adapt(tissue, "spleen", 0.5, 0.15)  # same thickness, target is finer
    np.testing.assert_array_equal(spleen, tissue)
    prostate = thickness_adapt(tissue, "prostate", 2.0, 0.15)  # 6.263 µm/px target: blurred
    assert (
        np.abs(np.diff(prostate.astype(float), axis=1)).mean()
        < 0.5 * np.abs(np.diff(tissue.astype(float), axis=1)).mean()
    )


# ---------------------------------------------------------------------------- stain


@pytest.fixture(scope="module")
def prepared(sample_prepared):
    return sample_prepared(240, 2.0) / "prep"


def test_stain_stage_is_deterministic_for_a_seed(prepared, tmp_path):
    cfg = StainAugmentConfig(copies=2)
    first = run_stain_stage(prepared, tmp_path / "a", cfg)
    run_stain_stage(prepared, tmp_path / "b", cfg)
    run_stain_stage(prepared, tmp_path / "c", replace(cfg, seed=1))
    assert len(first) == 2 * 10
    assert (first["fit_s"] > 0).all()
    for f in first["file"]:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert any(
        (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes()
        for f in first["file"]
    )
    # copies are recoloured versions of the same tissue: same size, different colours
    copies = [np.load(f) for f in copy_files(tmp_path / "a", [first["id"][0]])[first["id"][0]]]
    original, _ = load_prepared(prepared, first["id"][0])
    assert len(copies) == 2 and copies[0].shape == original.shape
    assert not np.array_equal(copies[0], copies[1])


def test_stain_stage_recolours_each_organ_into_its_own_targets(prepared, tmp_path):
    """With organ_targets the kidney images' copies are all PAS, the others' all H&E: each copy
    is exactly what recolouring into that organ's targets alone gives."""
    from ftuseg.data.prepare import read_index
    from ftuseg.domain.recolour import recolour_copies
    from ftuseg.domain.references import seed_for

    base = StainAugmentConfig(method="recolour", copies=2, targets=("he",))
    cfg = replace(base, organ_targets={"kidney": ("pas",)})
    table = run_stain_stage(prepared, tmp_path / "s", cfg)
    organs = read_index(prepared).set_index("id")["organ"]
    assert {"kidney", "spleen"} <= set(organs)  # both kinds checked
    for image_id, rows in table.groupby("id"):
        image, _ = load_prepared(prepared, image_id)
        organ = organs[image_id]
        target = RecolourConfig(("pas",) if organ == "kidney" else ("he",), base.dab_share, 0.4)
        rng = np.random.default_rng(seed_for(cfg.seed, image_id))
        expected = recolour_copies(image, target, 2, rng)
        for row, want in zip(rows.sort_values("copy").itertuples(), expected, strict=True):
            np.testing.assert_array_equal(np.load(tmp_path / "s" / row.file), want)
    with pytest.raises(DataError, match="unknown organ"):
        replace(base, organ_targets={"kidny": ("pas",)})
    with pytest.raises(DataError, match="needs stain.augment.method recolour"):
        StainAugmentConfig(method="vahadane", organ_targets={"kidney": ("pas",)})
    with pytest.raises(DataError, match="targets"):
        replace(base, organ_targets={"kidney": ("ihc",)})


def test_dataset_draws_stain_copies_with_their_probability(prepared, tmp_path):
    table = run_stain_stage(prepared, tmp_path / "s", StainAugmentConfig(copies=1))
    ids = sorted(set(table["id"]))[:2]
    copies = copy_files(tmp_path / "s", ids)
    plain = AugmentConfig(dihedral=0.0)
    kwargs = dict(crop_size=400, samples_per_image=1, ftu_prob=0.0, augment=plain)
    originals = CropDataset(prepared, ids, **kwargs)
    always = CropDataset(prepared, ids, stain_copies=copies, stain_copy_prob=1.0, **kwargs)
    for i in range(2):  # crops larger than the image: the whole (padded) image
        a, b = originals[i]["image"], always[i]["image"]
        copy = np.load(copies[ids[i]][0])
        h, w = copy.shape[:2]
        np.testing.assert_array_equal(b[:h, :w].numpy(), copy)
        assert not np.array_equal(a[:h, :w].numpy(), copy)


def test_normalisation_moves_colours_toward_the_reference(prepared):
    image, _ = load_prepared(prepared, _first_id(prepared))
    reference = reference_image("he")
    ref_tissue = reference[reference.mean(axis=2) < 200].mean(axis=0)

    def distance(img: np.ndarray) -> float:
        tissue = img[img.mean(axis=2) < 200]
        return float(np.linalg.norm(tissue.mean(axis=0) - ref_tissue))

    for method in ("vahadane", "macenko", "reinhard"):
        # staintools' Macenko fails on the luminosity-standardised reference (negative optical
        # density); without standardisation it fits
        normalizer = StainNormalizer(NormalizeConfig(method, luminosity=method != "macenko"))
        out = normalizer(image)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert distance(out) < 0.7 * distance(image), method
        np.testing.assert_array_equal(out, normalizer(image))  # deterministic


def test_a_tissue_free_image_is_an_error_unless_the_policy_keeps_it(caplog):
    blank = np.full((64, 64, 3), 250, np.uint8)
    with pytest.raises(DataError, match=r"blank\.tiff: no tissue found"):
        StainNormalizer(NormalizeConfig(method="vahadane"))(blank, "blank.tiff")
    with caplog.at_level(logging.WARNING):
        out = StainNormalizer(NormalizeConfig(method="vahadane", no_tissue="keep"))(
            blank, "blank.tiff"
        )
    np.testing.assert_array_equal(out, blank)
    assert "blank.tiff" in caplog.text and "un-normalised" in caplog.text
    with pytest.raises(DataError, match="no_tissue"):
        NormalizeConfig(method="vahadane", no_tissue="ignore")


def test_images_without_stain_copies_are_an_error(prepared, tmp_path):
    table = run_stain_stage(prepared, tmp_path / "s", StainAugmentConfig(copies=1))
    ids = sorted(set(table["id"]))
    (tmp_path / "s/index.csv").write_text(table[table["id"] != ids[0]].to_csv(index=False))
    with pytest.raises(DataError, match=f"no stain copies of image.*{ids[0]}"):
        copy_files(tmp_path / "s", ids)


def test_bad_stain_settings_are_clear_errors(tmp_path):
    from ftuseg.core.errors import DataError

    with pytest.raises(DataError, match="stain.normalize.method"):
        NormalizeConfig(method="magic")
    blank = tmp_path / "blank.png"  # a reference without tissue: no stains to fit
    cv2.imwrite(str(blank), np.full((64, 64, 3), 245, np.uint8))
    with pytest.raises(DataError, match="cannot fit macenko"):
        StainNormalizer(NormalizeConfig(method="macenko", reference=str(blank)))
    with pytest.raises(DataError, match="missing.png"):
        reference_image(str(tmp_path / "missing.png"))


def _first_id(prepared) -> str:
    from ftuseg.data.prepare import read_index

    return str(read_index(prepared)["id"].iloc[0])


def test_inference_repeats_the_normalisation_recorded_in_the_checkpoint(prepared, tmp_path):
    from ftuseg.infer.engine import InferenceConfig, Predictor
    from ftuseg.models import build_model
    from ftuseg.models.checkpoint import save_checkpoint

    model = build_model({"arch": "smp_unet", "encoder": "resnet18", "decoder_channels": [8] * 5})
    meta = {
        "model_cfg": {"arch": "smp_unet", "encoder": "resnet18", "decoder_channels": [8] * 5},
        "crop_size": 96,
    }
    save_checkpoint(tmp_path / "plain", model, {**meta, "um_per_px": 2.0})
    normalize = {"method": "vahadane", "reference": "he", "luminosity": True}
    save_checkpoint(
        tmp_path / "norm", model, {**meta, "um_per_px": 2.0, "stain_normalize": normalize}
    )
    image, _ = load_prepared(prepared, _first_id(prepared))
    plain = Predictor.from_checkpoints([(tmp_path / "plain", 1.0)])
    normed = Predictor.from_checkpoints([(tmp_path / "norm", 1.0)])
    assert plain.normalize is None and normed.normalize is not None
    assert not np.array_equal(plain.predict_scaled(image, 2.0), normed.predict_scaled(image, 2.0))
    with pytest.raises(ValueError, match="different stain normalisations"):
        Predictor.from_checkpoints([(tmp_path / "plain", 1.0), (tmp_path / "norm", 1.0)])
    # the scale ablation switch: every image treated as the training images' pixel size (0.4
    # µm/px here) whatever its csv says
    save_checkpoint(tmp_path / "hpa", model, {**meta, "um_per_px": 2.0, "train_pixel_sizes": [0.4]})
    naive = Predictor.from_checkpoints(
        [(tmp_path / "hpa", 1.0)], InferenceConfig(scale_handling=False)
    )
    h, w = image.shape[:2]
    assert plain.predict_scaled(image, 1.0).shape == (h // 2, w // 2)
    assert naive.predict_scaled(image, 1.0).shape == (round(h * 0.2), round(w * 0.2))
    # the same switch on a user's data at 0.62 µm/px: treated as 0.62, not as HPA's 0.4
    save_checkpoint(
        tmp_path / "own", model, {**meta, "um_per_px": 2.0, "train_pixel_sizes": [0.62]}
    )
    own = Predictor.from_checkpoints(
        [(tmp_path / "own", 1.0)], InferenceConfig(scale_handling=False)
    )
    assert own.predict_scaled(image, 1.0).shape == (round(h * 0.31), round(w * 0.31))
    # ... which needs the one training pixel size recorded: a clear error otherwise
    unknown = Predictor.from_checkpoints(
        [(tmp_path / "plain", 1.0)], InferenceConfig(scale_handling=False)
    )
    with pytest.raises(DataError, match="scale_handling: false"):
        unknown.predict_scaled(image, 1.0)


def test_normalize_stage_caches_exactly_what_inference_applies(prepared, tmp_path):
    """The cached normalised image is the normaliser's output on the prepared image (what the
    engine computes after resampling), copies included; other settings are refused; `none`
    writes no pixels."""
    copies = run_stain_stage(prepared, tmp_path / "stain", StainAugmentConfig(copies=1))
    cfg = NormalizeConfig(method="reinhard")
    table = run_normalize_stage(prepared, tmp_path / "stain", tmp_path / "norm", cfg)
    ids = sorted(set(copies["id"]))
    assert len(table) == 2 * len(ids)  # each image and its one copy
    images, normed_copies = normalized_files(tmp_path / "norm", cfg, ids, with_copies=True)
    image, _ = load_prepared(prepared, ids[0])
    np.testing.assert_array_equal(np.load(images[ids[0]]), StainNormalizer(cfg)(image))
    copy = np.load(tmp_path / "stain" / copies.loc[copies["id"] == ids[0], "file"].iloc[0])
    np.testing.assert_array_equal(np.load(normed_copies[ids[0]][0]), StainNormalizer(cfg)(copy))
    with pytest.raises(DataError, match="other stain.normalize settings"):
        normalized_files(tmp_path / "norm", NormalizeConfig(method="vahadane"), ids, False)
    none = run_normalize_stage(prepared, tmp_path / "stain", tmp_path / "none", NormalizeConfig())
    assert none.empty and not (tmp_path / "none" / "normalized").exists()


def test_table_based_colour_transforms_match_their_float_definitions():
    """The cv2.LUT / cv2.transform versions compute what the float formulas define: HSV and
    contrast bit for bit, HED within one level of scikit-image's rgb2hed/hed2rgb."""
    from skimage.color import hed2rgb, rgb2hed

    from ftuseg.domain.augment import add_noise, adjust_contrast

    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur((rng.random((96, 80, 3)) * 255).astype(np.uint8), (5, 5), 2)
    image[:8] = 255  # glass
    image[-8:] = 0  # saturated stain: log(0) is floored like scikit-image floors it

    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + 0.07 * 256.0) % 256.0
    hsv[..., 1] *= 1.2
    hsv[..., 2] *= 0.85
    expected = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB_FULL)
    np.testing.assert_array_equal(adjust_hsv(image, 0.07, 1.2, 0.85), expected)

    f = image.astype(np.float32)
    mean = f.mean(axis=(0, 1), keepdims=True)
    expected = np.clip((f - mean) * 1.3 + mean, 0, 255).astype(np.uint8)
    assert np.abs(adjust_contrast(image, 1.3).astype(int) - expected).max() <= 1

    scale, bias = np.array([1.04, 0.96, 1.03]), np.array([0.01, -0.01, 0.005])
    reference = (np.clip(hed2rgb(rgb2hed(image) * scale + bias), 0, 1) * 255.0 + 0.5).astype(
        np.uint8
    )
    assert np.abs(hed_jitter(image, scale, bias).astype(int) - reference).max() <= 1

    grey = np.full((200, 200, 3), 128, np.uint8)
    noisy = add_noise(grey, 0.1, np.random.default_rng(0)).astype(int) - 128
    assert noisy.min() == -26 and noisy.max() == 26  # L = round(0.1 · 255)
    assert abs(noisy.mean()) < 0.5 and noisy.std() > 14  # centred, spread like U[-26, 26]
    np.testing.assert_array_equal(  # seeded
        add_noise(grey, 0.1, np.random.default_rng(0)),
        add_noise(grey, 0.1, np.random.default_rng(0)),
    )
    edges = add_noise(np.array([[[0, 255, 5]]], np.uint8).repeat(50, 1), 0.1, rng)
    assert edges[..., 1].min() >= 229 and edges[..., 0].max() <= 26  # saturates, never wraps


def test_per_organ_references_in_the_stage_and_at_inference(prepared, tmp_path):
    """With ``organ_references`` each image is normalised with its organ's reference, in the
    normalize stage (organ from the prepared index) and at inference (organ given); an image of
    unknown organ is refused rather than given the default reference."""
    from ftuseg.data.prepare import read_index
    from ftuseg.infer.engine import Predictor
    from ftuseg.models import build_model
    from ftuseg.models.checkpoint import save_checkpoint

    index = read_index(prepared)
    kidney = str(index["organ"].iloc[0])
    cfg = NormalizeConfig(method="hematoxylin", reference="he", organ_references={kidney: "pas"})
    run_normalize_stage(prepared, None, tmp_path / "norm", cfg)
    images, _ = normalized_files(tmp_path / "norm", cfg, index["id"].tolist(), False)
    by_ref = {r: StainNormalizer(NormalizeConfig(method="hematoxylin", reference=r)) for r in ("he", "pas")}  # fmt: skip
    assert index["organ"].nunique() > 1
    for row in index.itertuples():
        image, _ = load_prepared(prepared, row.id)
        expected = by_ref["pas" if row.organ == kidney else "he"](image)
        np.testing.assert_array_equal(np.load(images[row.id]), expected)
    image, _ = load_prepared(prepared, index["id"].iloc[0])
    # The two references' hematoxylin differ in colour: the test can tell them apart.
    assert np.abs(by_ref["he"](image).astype(int) - by_ref["pas"](image)).mean() > 2

    arch = {"arch": "smp_unet", "encoder": "resnet18", "decoder_channels": [8] * 5}
    meta = {"model_cfg": arch, "crop_size": 96, "um_per_px": 2.0}
    save_checkpoint(tmp_path / "ckpt", build_model(arch), {**meta, "stain_normalize": asdict(cfg)})
    predictor = Predictor.from_checkpoints([(tmp_path / "ckpt", 1.0)])
    np.testing.assert_array_equal(predictor.scaled_input(image, 2.0, kidney), by_ref["pas"](image))
    np.testing.assert_array_equal(predictor.scaled_input(image, 2.0, "lung"), by_ref["he"](image))
    with pytest.raises(DataError, match="organ is needed"):
        predictor.predict_scaled(image, 2.0)


def test_an_organ_reference_of_none_leaves_that_organs_images_and_copies_as_they_are(
    prepared, tmp_path
):
    """``organ_references: {kidney: none}``: the organ's images and stain copies pass the stage
    and inference byte for byte, the other organs' are reduced to their hematoxylin; ``none``
    as the default reference and unknown organs are named errors."""
    from ftuseg.data.prepare import read_index
    from ftuseg.domain.stain import StainAugmentConfig, copy_files, run_stain_stage

    index = read_index(prepared)
    kidney = str(index["organ"].iloc[0])
    run_stain_stage(prepared, tmp_path / "stain", StainAugmentConfig(method="recolour", copies=2))
    cfg = NormalizeConfig(method="hematoxylin", reference="he", organ_references={kidney: "none"})
    run_normalize_stage(prepared, tmp_path / "stain", tmp_path / "norm", cfg)
    images, copies = normalized_files(tmp_path / "norm", cfg, index["id"].tolist(), True)
    made = copy_files(tmp_path / "stain", index["id"].tolist())
    he = StainNormalizer(NormalizeConfig(method="hematoxylin", reference="he"))
    normalizer = StainNormalizer(cfg)
    for row in index.itertuples():
        image, _ = load_prepared(prepared, row.id)
        stored = np.load(images[row.id])
        if row.organ == kidney:
            np.testing.assert_array_equal(stored, image)
            np.testing.assert_array_equal(np.load(copies[row.id][0]), np.load(made[row.id][0]))
            np.testing.assert_array_equal(normalizer(image, "x", kidney), image)
        else:
            np.testing.assert_array_equal(stored, he(image))
            assert np.abs(stored.astype(int) - image).mean() > 5
    assert set(index["organ"]) - {kidney}
    with pytest.raises(DataError, match="reference none"):
        NormalizeConfig(method="hematoxylin", reference="none")
    with pytest.raises(DataError, match="unknown organ"):
        NormalizeConfig(method="hematoxylin", organ_references={"liver": "none"})
