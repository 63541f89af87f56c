"""Pseudo-labels: confident pixels only, ignored pixels cost nothing, and a fold's pseudo-labels
never depend on that fold's validation masks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from ftuseg.data.prepare import read_index
from ftuseg.data.sample import SampleConfig, generate
from ftuseg.data.unlabeled import prepare_unlabeled
from ftuseg.domain.augment import AugmentConfig, augment
from ftuseg.models.losses import IGNORE, LossWeights, SegmentationLoss
from ftuseg.train.config import RunDirs, TrainConfig
from ftuseg.train.datasets import CropDataset
from ftuseg.train.inputs import TrainData
from ftuseg.train.loop import train_fold
from ftuseg.train.pseudo import PseudoImage, pseudo_label, unlabeled_index

MODEL = {"arch": "smp_unet", "encoder": "resnet18", "decoder_channels": [16, 8, 8, 8, 8]}
CFG = TrainConfig(
    epochs=2, batch_size=4, crop_size=64, samples_per_image=2, threads=2, lr=3e-3,
    pseudo_start=1, pseudo_share=0.5, pseudo_confidence=0.6,
)  # fmt: skip


def test_only_confident_pixels_get_a_label():
    prob = np.array([[0, 102, 103, 152, 153, 255]], np.uint8)  # 0.4 = 102/255, 0.6 = 153/255
    label = pseudo_label(prob, 0.6)
    assert label.tolist() == [[0, 0, IGNORE, IGNORE, 1, 1]]
    with pytest.raises(ValueError, match="confidence"):
        pseudo_label(prob, 0.5)


def test_ignored_pixels_get_no_gradient_and_plain_targets_no_change():
    weights = LossWeights(bce=1.0, dice=1.0, focal=1.0, aux=0.0, organ=0.0, pixel_size=0.0)
    criterion = SegmentationLoss(weights)
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    target = (torch.rand(2, 1, 16, 16) > 0.7).float()
    target[:, :, :8] = IGNORE
    loss, _ = criterion(logits, target)
    loss.backward()
    grad = logits.grad
    assert torch.all(grad[:, :, :8] == 0) and torch.all(grad[:, :, 8:].abs() > 0)
    # Without ignored pixels the loss is the one of plain 0/1 targets (smp's losses as before).
    plain = (torch.rand(2, 1, 16, 16) > 0.7).float()
    from segmentation_models_pytorch.losses import DiceLoss, FocalLoss, SoftBCEWithLogitsLoss

    expected = (
        SoftBCEWithLogitsLoss()(logits, plain)
        + DiceLoss("binary")(logits, plain)
        + FocalLoss("binary")(logits, plain)
    )
    assert torch.allclose(criterion(logits, plain)[0], expected)


def test_augmentation_keeps_the_ignore_value():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = IGNORE
    mask[10:20, 10:20] = 1
    cfg = AugmentConfig(rotate_scale=1.0, cutmix=0.0, cutout=0.0)
    for seed in range(10):
        _, out, _ = augment(image, mask, np.random.default_rng(seed), cfg, "kidney", 1.0)
        assert set(np.unique(out)) <= {0, 1, IGNORE} and (out == IGNORE).mean() > 0.25


@pytest.fixture(scope="module")
def prepared(sample_prepared, tmp_path_factory):
    """The shared small sample (raw/, prep/) beside this module's unlabeled target images."""
    shared, root = sample_prepared(120, 3.0), tmp_path_factory.mktemp("pseudo")
    for name in ("raw", "prep"):
        (root / name).symlink_to(shared / name, target_is_directory=True)
    generate(
        root / "target", SampleConfig(train_per_organ=1, test_per_organ=1, field_um=120, seed=7)
    )
    # Fresh ids: the generator reuses the competition's ids, which the training images hold too.
    test = pd.read_csv(root / "target/test.csv", dtype={"id": str})
    for image_id in test["id"]:
        (root / f"target/test_images/{image_id}.tiff").rename(
            root / f"target/test_images/9{image_id}.tiff"
        )
    test.assign(id="9" + test["id"]).to_csv(root / "target/test.csv", index=False)
    prepare_unlabeled(root / "target", root / "unl", 3.0, enabled=True)
    return root


def test_pseudo_crops_replace_the_given_share_and_carry_ignored_pixels(prepared, tmp_path):
    index = pd.read_csv(prepared / "unl/index.csv", dtype={"id": str})
    row = index.iloc[0]
    label = np.full((row.height, row.width), IGNORE, np.uint8)
    np.save(tmp_path / "l.npy", label)
    np.save(tmp_path / "f.npy", np.zeros(0, np.int64))
    pseudo = [PseudoImage(row.id, row.organ, prepared / f"unl/images/{row.id}.image.npy",
                          tmp_path / "l.npy", tmp_path / "f.npy")]  # fmt: skip
    ids = read_index(prepared / "prep")["id"].tolist()
    data = CropDataset(prepared / "prep", ids, 32, samples_per_image=20, seed=1, pseudo=pseudo,
                       pseudo_share=0.3, um_per_px=3.0)  # fmt: skip
    from_pseudo = [bool((data[i]["mask"] == IGNORE).any()) for i in range(len(data))]
    assert len(data) == 20 * len(ids)  # the epoch length does not change
    assert 0.22 < np.mean(from_pseudo) < 0.38
    plain = CropDataset(prepared / "prep", ids, 32, samples_per_image=20, seed=1, um_per_px=3.0)
    assert not any((plain[i]["mask"] == IGNORE).any() for i in range(len(plain)))


def run(prepared, out, train_csv=None, cfg=CFG):
    data = TrainData(prepared / "prep", train_csv or prepared / "raw/train.csv", 3.0,
                     unlabeled=prepared / "unl")  # fmt: skip
    summary = train_fold(
        data, "unet", MODEL, 0, cfg, RunDirs(out / "ckpt", out / "live", out / "state")
    )
    (labels,) = (out / "state").glob("pseudo-*")
    return summary, labels


@pytest.mark.slow
def test_a_folds_pseudo_labels_never_see_its_validation_masks(prepared, tmp_path):
    summary, labels = run(prepared, tmp_path / "a")
    assert summary["pseudo_confident"] > 0.01  # the labels carry information (4 % here)
    again, labels_again = run(prepared, tmp_path / "b")  # deterministic on CPU
    assert (tmp_path / "a/ckpt/model.safetensors").read_bytes() == (
        tmp_path / "b/ckpt/model.safetensors"
    ).read_bytes()
    # Blank every validation mask of fold 0: the validation scores change, its pseudo-labels not.
    table = pd.read_csv(prepared / "raw/train.csv", dtype={"id": str})
    val = read_index(prepared / "prep").query("fold == 0")["id"]
    table.loc[table["id"].isin(val), "rle"] = "1 1"  # one FTU pixel in the corner
    blanked = tmp_path / "train.csv"
    table.to_csv(blanked, index=False)
    changed, labels_changed = run(prepared, tmp_path / "c", blanked)
    assert changed["best_val_dice"] != summary["best_val_dice"]
    files = sorted(p.name for p in labels.glob("*.npy"))
    assert files and files == sorted(p.name for p in labels_changed.glob("*.npy"))
    for name in files:
        assert np.array_equal(np.load(labels / name), np.load(labels_changed / name))
    # And the self-training epochs do change what is learnt.
    plain = tmp_path / "plain"
    train_fold(TrainData(prepared / "prep", prepared / "raw/train.csv", 3.0), "unet", MODEL, 0,
               replace(CFG, pseudo_start=0), RunDirs(plain / "ckpt", plain / "live"))  # fmt: skip
    assert (plain / "ckpt/model.safetensors").read_bytes() != (
        tmp_path / "a/ckpt/model.safetensors"
    ).read_bytes()


def test_unlabeled_images_sharing_ids_with_labelled_ones_are_named(prepared, caplog):
    ids = pd.read_csv(prepared / "unl/index.csv", dtype={"id": str})["id"].tolist()
    with caplog.at_level("WARNING"):
        assert len(unlabeled_index(prepared / "unl", ["x", ids[1]])) == len(ids)
    assert f"1 unlabeled image(s) share an id with labelled images ({ids[1]}" in caplog.text
    with pytest.raises(ValueError, match="pseudo_start"):
        replace(CFG, pseudo_start=2)
