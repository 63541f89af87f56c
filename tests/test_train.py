"""Training: deterministic on CPU for a seed, keeps the best epoch, logs for dvc plots."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from timm.utils import ModelEmaV3

from ftuseg.core.errors import DataError
from ftuseg.core.layout import checkpoint_dir, prepared_path
from ftuseg.data.sample import SampleConfig, generate
from ftuseg.data.unlabeled import prepare_unlabeled
from ftuseg.domain.normalize import NormalizeConfig
from ftuseg.ensemble.oof import run_oof
from ftuseg.models import build_model
from ftuseg.models.checkpoint import load_checkpoint
from ftuseg.train.config import RunDirs, Runtime, TrainConfig, split_ids
from ftuseg.train.distributed import DistInfo
from ftuseg.train.inputs import TrainData, image_files, input_files
from ftuseg.train.loop import train_fold, validated
from ftuseg.train.optimisation import prepare_model
from ftuseg.train.resume import TrainingState, inputs_digest, load_state, restore, save_state
from ftuseg.train.warm_start import warm_start

MODEL = {"arch": "smp_unet", "encoder": "resnet18", "decoder_channels": [16, 8, 8, 8, 8]}
CFG = TrainConfig(epochs=3, batch_size=4, crop_size=64, samples_per_image=2, threads=2, lr=3e-3)


@pytest.fixture(scope="module")
def prepared(sample_prepared):
    return sample_prepared(120, 3.0) / "prep"


def data_of(prepared):
    """The fixture's TrainData: its prepared folder, its raw train.csv, 3 µm/px."""
    return TrainData(prepared, prepared.parent / "raw/train.csv", 3.0)


def dirs(out, state=False):
    return RunDirs(out / "ckpt", out / "live", out / "state" if state else None)


def run(prepared, out, cfg=CFG, **kwargs):
    return train_fold(data_of(prepared), "unet", MODEL, 0, cfg, dirs(out), **kwargs)


def oof_of(checkpoint, prepared, tmp_path):
    """The OOF stage's per-image Dice with ``checkpoint`` as every fold's model (OOF predicts
    every fold; callers compare fold 0's images)."""
    models = tmp_path / "models"
    for fold in (0, 1):
        shutil.copytree(checkpoint, checkpoint_dir(models, "unet", fold))
    _, per_image = run_oof(prepared.parent / "raw", prepared, models, ["unet"], tmp_path / "oof")
    return per_image


@pytest.fixture(scope="module")
def first(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("first")
    return out, run(prepared, out)


@pytest.mark.slow
def test_same_seed_gives_identical_weights_and_logs(prepared, first, tmp_path):
    out, summary = first
    second = run(prepared, tmp_path)
    assert (out / "ckpt/model.safetensors").read_bytes() == (
        tmp_path / "ckpt/model.safetensors"
    ).read_bytes()
    log = (out / "live/plots/metrics/train/loss.tsv").read_text()
    assert log == (tmp_path / "live/plots/metrics/train/loss.tsv").read_text()
    assert summary["best_val_dice"] == second["best_val_dice"]


@pytest.mark.slow
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


@pytest.mark.slow
def test_data_loader_workers_change_nothing(prepared, first, tmp_path):
    """Two persistent workers (each re-opening the memory maps it reads) produce the very
    batches of the in-process loader: same weights, same curves."""
    out, _ = first
    run(prepared, tmp_path, TrainConfig(**{**CFG.__dict__, "num_workers": 2}))
    for rel in ("ckpt/model.safetensors", "live/plots/metrics/train/loss.tsv"):
        assert (out / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


@pytest.mark.slow
def test_nchw_training_follows_the_nhwc_run_up_to_float_rounding(prepared, first, tmp_path):
    """``channels_last`` (the default, CPU too) changes the convolutions' memory layout, not
    what is learnt: the NCHW run's losses stay within rounding of the NHWC run's, and both
    checkpoints hold plain contiguous tensors."""
    cpu = Runtime(torch.device("cpu"), DistInfo())
    for channels_last in (True, False):
        model, _ = prepare_model(MODEL, replace(CFG, channels_last=channels_last), cpu)
        weight = next(m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    out, summary = first
    nchw = run(prepared, tmp_path, replace(CFG, channels_last=False))
    losses = [
        pd.read_csv(d / "live/plots/metrics/train/loss.tsv", sep="\t")["loss"]
        for d in (out, tmp_path)
    ]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-3)
    assert nchw["best_val_dice"] == pytest.approx(summary["best_val_dice"], abs=0.01)
    nhwc_model, _ = load_checkpoint(out / "ckpt")
    nchw_model, _ = load_checkpoint(tmp_path / "ckpt")
    for a, b in zip(
        nhwc_model.state_dict().values(), nchw_model.state_dict().values(), strict=True
    ):
        assert a.is_contiguous() and b.is_contiguous()


@pytest.mark.slow
def test_max_steps_caps_the_optimiser_updates(prepared, tmp_path):
    """`train.max_steps` (the rehearsal's cap) stops after that many updates, mid-epoch if need
    be, and the epoch it falls in is validated and logged like any other."""

    from ftuseg.train.datasets import CropDataset

    n_train = len(split_ids(pd.read_csv(prepared / "index.csv", dtype={"id": str}), 0)[0])
    per_epoch = n_train * CFG.samples_per_image // CFG.batch_size  # full batches only
    capped = TrainConfig(**{**CFG.__dict__, "max_steps": per_epoch + 1, "epochs": 5})
    counted = []
    original = CropDataset.__getitem__
    CropDataset.__getitem__ = lambda self, key: counted.append(key) or original(self, key)
    try:
        summary = run(prepared, tmp_path, capped)
    finally:
        CropDataset.__getitem__ = original
    assert summary["epochs_run"] == 2
    assert len(counted) == (per_epoch + 1) * CFG.batch_size  # one batch per update, no more
    curve = pd.read_csv(tmp_path / "live/plots/metrics/val/dice.tsv", sep="\t")
    assert len(curve) == 2


def test_validation_scores_what_oof_scores(prepared, first, tmp_path):
    """The best epoch's validation Dice is the OOF stage's Dice of that checkpoint on the same
    images: same engine, same tiles, original resolution."""
    out, _ = first
    meta = json.loads((out / "ckpt/model.json").read_text())
    per_image = oof_of(out / "ckpt", prepared, tmp_path)
    fold0 = per_image[per_image["fold"] == 0]
    assert sorted(fold0["id"]) == sorted(meta["val_ids"])
    assert fold0["dice"].mean() == pytest.approx(meta["val_dice"], abs=1e-5)
    assert meta["crop_size"] == CFG.crop_size  # the tile size both used


@pytest.mark.slow
def test_the_weight_average_is_what_validation_scores_and_the_checkpoint_holds(
    prepared, first, tmp_path
):
    """With ``train.ema_decay`` the averaged weights are validated and saved: OOF of the
    checkpoint gives the logged validation Dice, and the weights are not the plain run's."""
    out = tmp_path / "ema"
    run(prepared, out, replace(CFG, ema_decay=0.9))
    meta = json.loads((out / "ckpt/model.json").read_text())
    per_image = oof_of(out / "ckpt", prepared, tmp_path)
    assert per_image[per_image["fold"] == 0]["dice"].mean() == pytest.approx(
        meta["val_dice"], abs=1e-5
    )
    averaged, _ = load_checkpoint(out / "ckpt")
    plain, _ = load_checkpoint(first[0] / "ckpt")
    assert not all(
        torch.equal(a, b) for a, b in zip(averaged.state_dict().values(),
                                          plain.state_dict().values(), strict=True)
    )  # fmt: skip


def test_train_config_refuses_a_weight_average_decay_out_of_range():
    for decay in (-0.1, 1.0):
        with pytest.raises(ValueError, match="ema_decay"):
            replace(CFG, ema_decay=decay)
    with pytest.raises(ValueError, match="val_every"):
        replace(CFG, val_every=0)
    for start in (-1, CFG.epochs + 1):
        with pytest.raises(ValueError, match="val_start"):
            replace(CFG, val_start=start)


def test_validation_from_val_start_on_the_val_every_grid():
    """`kidney-real`: 110 epochs, every 5th validated from the 55th: 55, 60, ..., 110."""
    cfg = replace(CFG, epochs=110, val_every=5, val_start=55)
    assert [e + 1 for e in range(110) if validated(cfg, e)] == list(range(55, 111, 5))
    assert [e + 1 for e in range(10) if validated(replace(cfg, val_start=0), e)] == [5, 10]


def test_no_validation_before_val_start_and_the_same_training(prepared, first, tmp_path):
    """`train.val_start: 3` over 3 epochs validates the last alone, with the score an
    every-epoch run gives it, and trains exactly as that run (the same losses)."""
    out, _ = first
    summary = run(prepared, tmp_path, replace(CFG, val_start=3))
    every = pd.read_csv(out / "live/plots/metrics/val/dice.tsv", sep="\t").set_index("step")
    curve = pd.read_csv(tmp_path / "live/plots/metrics/val/dice.tsv", sep="\t").set_index("step")
    assert curve.index.tolist() == [2]
    assert curve["dice"].tolist() == pytest.approx(every.loc[[2], "dice"].tolist(), abs=1e-6)
    assert summary["best_epoch"] == 3
    loss = (tmp_path / "live/plots/metrics/train/loss.tsv").read_text()
    assert loss == (out / "live/plots/metrics/train/loss.tsv").read_text()


def test_validating_every_other_epoch_keeps_the_best_of_those_validated(prepared, first, tmp_path):
    """`train.val_every: 2` over 3 epochs validates epochs 2 and 3 (the last always) with the
    scores an every-epoch run gives them (validation draws nothing from the training RNG) and
    keeps the better of the two."""
    out, _ = first
    summary = run(prepared, tmp_path, replace(CFG, val_every=2))
    every = pd.read_csv(out / "live/plots/metrics/val/dice.tsv", sep="\t").set_index("step")
    curve = pd.read_csv(tmp_path / "live/plots/metrics/val/dice.tsv", sep="\t").set_index("step")
    assert curve.index.tolist() == [1, 2]
    assert curve["dice"].tolist() == pytest.approx(every.loc[[1, 2], "dice"].tolist(), abs=1e-6)
    meta = json.loads((tmp_path / "ckpt/model.json").read_text())
    assert meta["epoch"] == int(curve["dice"].idxmax()) + 1 == summary["best_epoch"]
    loss = (tmp_path / "live/plots/metrics/train/loss.tsv").read_text()
    assert loss == (out / "live/plots/metrics/train/loss.tsv").read_text()


# The weight average on: a resumed run must restore it as well (``ema.`` tensors of the state).
RESUME_CFG = TrainConfig(
    epochs=6, batch_size=4, crop_size=64, samples_per_image=8, threads=2, lr=3e-3,
    ema_decay=0.9,
)  # fmt: skip


@pytest.mark.slow
def test_training_killed_mid_run_resumes_to_identical_weights_and_logs(prepared, tmp_path):
    ref = tmp_path / "ref"
    train_fold(data_of(prepared), "unet", MODEL, 0, RESUME_CFG, dirs(ref, state=True))

    run = tmp_path / "run"
    args = (str(prepared), MODEL, RESUME_CFG.__dict__, str(run))
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from ftuseg.train.loop import RunDirs, TrainConfig, TrainData, train_fold\n"
        "p, model, cfg, out = json.loads(sys.argv[1])\n"
        "p, out = Path(p), Path(out)\n"
        "data = TrainData(p, p.parent / 'raw/train.csv', 3.0)\n"
        "dirs = RunDirs(out / 'ckpt', out / 'live', out / 'state')\n"
        "train_fold(data, 'unet', model, 0, TrainConfig(**cfg), dirs)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state_file = run / "state" / "state.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if state_file.is_file() and json.loads(state_file.read_text())["epoch"] >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = json.loads(state_file.read_text())["epoch"]
    assert 2 <= killed_at < RESUME_CFG.epochs

    # As `dvc repro` does: the stage's ordinary outputs are cleared, the persisted state is kept.
    shutil.rmtree(run / "ckpt", ignore_errors=True)
    shutil.rmtree(run / "live", ignore_errors=True)
    summary = train_fold(data_of(prepared), "unet", MODEL, 0, RESUME_CFG, dirs(run, state=True))
    assert summary["resumed_from_epoch"] >= killed_at

    for rel in ("ckpt/model.safetensors", "ckpt/model.json", "live/metrics.json",
                "live/plots/metrics/train/loss.tsv", "live/plots/metrics/val/dice.tsv"):  # fmt: skip
        assert (run / rel).read_bytes() == (ref / rel).read_bytes(), rel
    final = json.loads(state_file.read_text())
    assert final["complete"] and final["epoch"] == RESUME_CFG.epochs
    assert not (run / "state/state.safetensors").exists()


@pytest.mark.slow
def test_changed_params_never_resume_a_stale_state(prepared, tmp_path):
    state = tmp_path / "state"
    short = TrainConfig(**{**RESUME_CFG.__dict__, "epochs": 3, "samples_per_image": 2})
    data = data_of(prepared)
    train_fold(data, "unet", MODEL, 0, short, RunDirs(tmp_path / "a", tmp_path / "la", state))
    # Plant the state of an unfinished run with other params: it must be ignored.
    model = build_model(MODEL)
    optimizer = torch.optim.AdamW(model.parameters())
    save_state(state, TrainingState("some-other-run", epoch=2), model, optimizer, None)
    other = TrainConfig(**{**short.__dict__, "lr": 1e-3})
    summary = train_fold(
        data, "unet", MODEL, 0, other, RunDirs(tmp_path / "b", tmp_path / "lb", state)
    )
    assert summary["resumed_from_epoch"] == 0 and summary["epochs_run"] == 3


def test_resume_restores_the_grad_scaler_or_refuses(tmp_path):
    """A GPU run's mixed-precision loss scale survives a kill (exercised with the CPU scaler);
    a state that cannot be restored completely is an error, never a partial resume."""
    model, optimizer = build_model(MODEL), None
    optimizer = torch.optim.AdamW(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=512.0)
    scaler.scale(torch.tensor(1.0))  # the scale tensor exists from the first scaled loss
    scaler.update(new_scale=64.0)
    save_state(tmp_path, TrainingState("run", epoch=1), model, optimizer, None, scaler)
    state, tensors, meta = load_state(tmp_path, "run")
    fresh = torch.amp.GradScaler("cpu", init_scale=512.0)
    restore(tensors, meta, build_model(MODEL), torch.optim.AdamW(model.parameters()), fresh)
    assert fresh.get_scale() == 64.0 and state.epoch == 1
    with pytest.raises(DataError, match="GradScaler"):
        restore(tensors, meta, build_model(MODEL), torch.optim.AdamW(model.parameters()), None)


def test_resume_restores_the_weight_average_or_refuses(tmp_path):
    """The moving average of the weights is part of the state: restored exactly, and a state
    with and a run without one (or the reverse) is an error, never a partial resume."""
    model = build_model(MODEL)
    average = ModelEmaV3(model, decay=0.9)
    with torch.no_grad():
        for value in average.module.parameters():
            value.add_(1.0)  # the average now differs from the model
    optimizer = torch.optim.AdamW(model.parameters())
    save_state(tmp_path / "ema", TrainingState("run", epoch=1), model, optimizer, None, None,
               average)  # fmt: skip
    _, tensors, meta = load_state(tmp_path / "ema", "run")
    fresh = ModelEmaV3(build_model(MODEL), decay=0.9)
    restore(tensors, meta, build_model(MODEL), torch.optim.AdamW(model.parameters()), None, fresh)
    for a, b in zip(fresh.state_dict().values(), average.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(DataError, match="moving average"):
        restore(tensors, meta, build_model(MODEL), torch.optim.AdamW(model.parameters()))
    save_state(tmp_path / "plain", TrainingState("run", epoch=1), model, optimizer, None)
    _, tensors, meta = load_state(tmp_path / "plain", "run")
    with pytest.raises(DataError, match="moving average"):
        restore(tensors, meta, build_model(MODEL), torch.optim.AdamW(model.parameters()), None,
                ModelEmaV3(build_model(MODEL), decay=0.9))  # fmt: skip


def test_the_run_fingerprint_covers_the_content_of_its_inputs(prepared, tmp_path):
    """Re-prepared data under the same ids never resumes a state trained on the old data."""
    index = pd.read_csv(prepared / "index.csv", dtype={"id": str})
    train_ids, val_ids = split_ids(index, 0)
    ids = [*train_ids, *val_ids]

    def inputs(prep):
        data = TrainData(prep, prepared.parent / "raw/train.csv", 3.0)
        return input_files(data, ids, image_files(data, NormalizeConfig(), ids, CFG), CFG)

    files = inputs(prepared)
    assert len(files) == 2 + 3 * len(index)  # index, train.csv, image/mask/ftu per image
    copy = tmp_path / prepared.name
    shutil.copytree(prepared, copy)
    moved = inputs(copy)
    assert inputs_digest(moved) == inputs_digest(files)  # same bytes elsewhere: same run
    image = prepared_path(copy, val_ids[0], "image")
    changed = np.load(image)
    changed[0, 0, 0] ^= 1  # one bit of one pixel
    np.save(image, changed)
    assert inputs_digest(moved) != inputs_digest(files)


@pytest.mark.slow
def test_domain_adversarial_training_on_unlabeled_images(prepared, tmp_path):
    """`train.domain_weight > 0`: target crops join every batch, the domain loss is logged, the
    run stays deterministic and its checkpoint (domain head included) loads for inference."""
    raw = tmp_path / "target"
    generate(raw, SampleConfig(train_per_organ=2, test_per_organ=1, field_um=120, seed=7))
    assert prepare_unlabeled(raw, tmp_path / "off", 3.0, enabled=False).empty
    assert not any((tmp_path / "off/images").iterdir())  # disabled: nothing read or written
    index = prepare_unlabeled(raw, tmp_path / "unl", 3.0, enabled=True)
    assert len(index) == 5 and (index["height"] == 40).all()  # 120 µm at 3 µm/px
    cfg = replace(CFG, epochs=2, domain_weight=0.5)
    data = replace(data_of(prepared), unlabeled=tmp_path / "unl")
    for out in ("a", "b"):
        train_fold(data, "unet", MODEL, 0, cfg, dirs(tmp_path / out))
    weights = [(tmp_path / o / "ckpt/model.safetensors").read_bytes() for o in ("a", "b")]
    assert weights[0] == weights[1]
    domain_loss = pd.read_csv(tmp_path / "a/live/plots/metrics/train/loss_domain.tsv", sep="\t")
    assert len(domain_loss) == 2 and (domain_loss["loss_domain"] > 0).all()
    model, meta = load_checkpoint(tmp_path / "a/ckpt")
    assert meta["model_cfg"]["domain_head"] is True and model.domain_head is not None
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    # Against a run without it: the target crops change what the encoder learns.
    run(prepared, tmp_path / "plain", replace(CFG, epochs=2))
    assert (tmp_path / "plain/ckpt/model.safetensors").read_bytes() != weights[0]
    with pytest.raises(DataError, match="no images"):
        train_fold(
            replace(data, unlabeled=tmp_path / "off"), "unet", MODEL, 0, cfg, dirs(tmp_path / "c")
        )


DDP_CFG = TrainConfig(epochs=3, batch_size=4, crop_size=64, samples_per_image=4, threads=1, lr=3e-3)
# Tolerance of the 2-process loss trajectory against 1 process with the same global batch. They
# are not bit-equal on CPU: BatchNorm normalises over each process's half batch (SyncBatchNorm is
# GPU-only) and the soft Dice term is computed per process before gradients are averaged.
DDP_LOSS_RTOL = 0.05


@pytest.mark.slow
def test_two_gloo_processes_follow_the_single_process_loss(prepared, tmp_path):
    train_fold(data_of(prepared), "unet", MODEL, 0, DDP_CFG, dirs(tmp_path / "one"))
    script = tmp_path / "ddp_train.py"
    script.write_text(
        "import json, sys\n"
        "from pathlib import Path\n"
        "from ftuseg.train.loop import RunDirs, TrainConfig, TrainData, train_fold\n"
        "p, model, cfg, out = json.loads(sys.argv[1])\n"
        "p, out = Path(p), Path(out)\n"
        "data = TrainData(p, p.parent / 'raw/train.csv', 3.0)\n"
        "train_fold(data, 'unet', model, 0, TrainConfig(**cfg), RunDirs(out / 'ckpt', out / 'live'))\n"
    )
    args = json.dumps([str(prepared), MODEL, DDP_CFG.__dict__, str(tmp_path / "two")])
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    one = pd.read_csv(tmp_path / "one/live/plots/metrics/train/loss.tsv", sep="\t")["loss"]
    two = pd.read_csv(tmp_path / "two/live/plots/metrics/train/loss.tsv", sep="\t")["loss"]
    assert len(one) == len(two) == DDP_CFG.epochs
    rel = ((two - one).abs() / one).max()
    print(f"max relative difference of the per-epoch loss, 2 vs 1 process: {rel:.4f}")
    assert rel < DDP_LOSS_RTOL
    assert (tmp_path / "two/ckpt/model.safetensors").is_file()
    assert not (tmp_path / "two/live/rank1").exists()


# ---------------------------------------------------------------------------- warm start


def test_a_warm_start_begins_from_the_checkpoint_and_records_it(prepared, first, tmp_path):
    """``train.init`` = a finished run's checkpoint: the new run's first epoch starts from its
    weights (its loss is the trained model's, far below a fresh start's) and the new
    checkpoint names its origin and the weights' digest."""
    source, _ = first
    fresh = pd.read_csv(source / "live/plots/metrics/train/loss.tsv", sep="\t")["loss"]
    run(prepared, tmp_path, replace(CFG, epochs=1, init=str(source / "ckpt")))
    warm = pd.read_csv(tmp_path / "live/plots/metrics/train/loss.tsv", sep="\t")["loss"]
    assert warm.iloc[0] < fresh.iloc[0] - 0.1
    assert warm.iloc[0] <= fresh.iloc[-1] + 0.05  # where the source run ended, not where it began
    meta = json.loads((tmp_path / "ckpt/model.json").read_text())
    digest = hashlib.sha256((source / "ckpt/model.safetensors").read_bytes()).hexdigest()
    assert meta["init"] == {"source": str(source / "ckpt"), "sha256": digest}
    assert "init" not in json.loads((source / "ckpt/model.json").read_text())


def test_warm_start_loads_every_tensor_and_casts_fp16(first, tmp_path):
    source, _ = first
    tensors = load_file(str(source / "ckpt/model.safetensors"))
    half = tmp_path / "half"
    half.mkdir()
    halved = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(halved, str(half / "model.safetensors"))
    shutil.copy(source / "ckpt/model.json", half / "model.json")
    model = build_model(MODEL)
    record = warm_start(model, MODEL, str(half), 3.0)
    for name, value in model.state_dict().items():
        expected = (
            tensors[name].half().to(value.dtype) if value.is_floating_point() else tensors[name]
        )
        assert value.dtype == tensors[name].dtype and torch.equal(value, expected), name
    assert record["source"] == str(half)


def test_the_shipped_model_is_a_warm_start_for_the_own_data_profile():
    from ftuseg.core.params import write_params

    own = write_params(["profile=own-data"], out=Path(tempfile.mkdtemp()) / "p.yaml")
    model_cfg = own["models"]["unet"]
    record = warm_start(build_model(model_cfg), model_cfg, "shipped:kidney", 4.0)
    assert record["source"] == "shipped:kidney" and len(record["sha256"]) == 64


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("shipped:lung", "no model ships for organ 'lung'"),
        ("nowhere", r"nowhere/model\.safetensors not found"),
    ],
)
def test_a_warm_start_that_cannot_be_had_is_an_error_naming_it(source, message):
    with pytest.raises(DataError, match=message):
        warm_start(build_model(MODEL), MODEL, source, 3.0)


def test_a_warm_start_from_another_architecture_is_refused(first):
    source, _ = first
    other = {**MODEL, "decoder_channels": [32, 16, 8, 8, 8]}
    with pytest.raises(DataError, match=r"another architecture \(decoder_channels: \[16, 8"):
        warm_start(build_model(other), other, str(source / "ckpt"), 3.0)
