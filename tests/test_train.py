"""Training: deterministic on CPU for a seed, keeps the best epoch, logs for dvc plots."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ftuseg.prepare import PrepareConfig, prepare
from ftuseg.sample import SampleConfig, generate
from ftuseg.train import TrainConfig, train_fold

MODEL = {"arch": "smp_unet", "encoder": "resnet18", "decoder_channels": [16, 8, 8, 8, 8]}
CFG = TrainConfig(epochs=3, batch_size=4, crop_size=64, samples_per_image=2, threads=2, lr=3e-3)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    generate(root / "raw", SampleConfig(train_per_organ=2, test_per_organ=0, field_um=120))
    prepare(root / "raw", root / "prep", PrepareConfig(um_per_px=3.0, n_folds=2))
    return root / "prep"


def run(prepared, out, cfg=CFG):
    return train_fold(prepared, "unet", MODEL, 0, cfg, 3.0, out / "ckpt", out / "live")


@pytest.fixture(scope="module")
def first(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("first")
    return out, run(prepared, out)


def test_same_seed_gives_identical_weights_and_logs(prepared, first, tmp_path):
    out, summary = first
    second = run(prepared, tmp_path)
    assert (out / "ckpt/model.safetensors").read_bytes() == (
        tmp_path / "ckpt/model.safetensors"
    ).read_bytes()
    log = (out / "live/plots/metrics/train/loss.tsv").read_text()
    assert log == (tmp_path / "live/plots/metrics/train/loss.tsv").read_text()
    assert summary["best_val_dice"] == second["best_val_dice"]


def test_other_seed_gives_other_weights(prepared, first, tmp_path):
    out, _ = first
    run(prepared, tmp_path, TrainConfig(**{**CFG.__dict__, "seed": 1}))
    assert (out / "ckpt/model.safetensors").read_bytes() != (
        tmp_path / "ckpt/model.safetensors"
    ).read_bytes()


def test_best_epoch_is_kept_and_curves_are_logged(first):
    tmp_path, summary = first
    curve = pd.read_csv(tmp_path / "live/plots/metrics/val/dice.tsv", sep="\t")
    assert len(curve) == CFG.epochs
    assert summary["best_val_dice"] == pytest.approx(curve["dice"].max(), abs=1e-5)
    meta = json.loads((tmp_path / "ckpt/model.json").read_text())
    assert meta["epoch"] == int(curve["dice"].idxmax()) + 1
    assert meta["um_per_px"] == 3.0 and meta["fold"] == 0
    assert not set(meta["train_ids"]) & set(meta["val_ids"])
    metrics = json.loads((tmp_path / "live/metrics.json").read_text())
    assert metrics["best_epoch"] == meta["epoch"]
