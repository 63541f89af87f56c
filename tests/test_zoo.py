"""The architecture zoo: every architecture's configs build, run at any size, train; losses,
heads, local weight files, and the Hydra-composed params."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ftuseg.core.errors import DataError
from ftuseg.core.metrics import dice
from ftuseg.core.params import options, write_params
from ftuseg.models import build_model, list_models
from ftuseg.models.checkpoint import load_checkpoint, save_checkpoint
from ftuseg.models.losses import LossWeights, SegmentationLoss
from ftuseg.train.resume import TrainingState, load_state, restore, save_state

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
ARCHITECTURES = sorted(p.name for p in (CONF / "models").iterdir() if p.is_dir())


def model_config(name: str, size: str = "sample", **changes) -> dict:
    cfg = yaml.safe_load((CONF / "models" / name / f"{size}.yaml").read_text())
    return {**cfg, **changes}


def test_every_registered_architecture_has_a_config_and_every_config_both_sizes():
    used = {model_config(n)["arch"] for n in ARCHITECTURES}
    assert used == set(list_models())
    for name in ARCHITECTURES:
        assert {"sample", "full"} <= set(options(f"models/{name}", CONF)), name


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_forward_backward_shapes_at_two_sizes(name):
    torch.manual_seed(0)
    model = build_model(
        model_config(name, deep_supervision=True, organ_head=True, pixel_size_head=True)
    )
    for h, w in [(64, 64), (90, 72)]:  # the second is not a multiple of any stride
        out = model(torch.rand(2, 3, h, w), heads=True)
        assert out["mask"].shape == (2, 1, h, w)
        assert out["aux"] and all(a.shape == (2, 1, h, w) for a in out["aux"])
        assert out["organ"].shape == (2, 5) and out["pixel_size"].shape == (2,)
        loss = out["mask"].mean() + sum(a.mean() for a in out["aux"])
        loss = loss + out["organ"].sum() + out["pixel_size"].sum()
        model.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.net.parameters() if p.requires_grad]
        assert grads[0] is not None and torch.isfinite(grads[0]).all()
        assert sum(int(g is not None) for g in grads) > 0.95 * len(grads)
    model.eval()
    with torch.no_grad():  # inference: logits only, same size as the input
        assert model(torch.rand(1, 3, 33, 47)).shape == (1, 1, 33, 47)


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_full_size_config_builds_and_runs(name):
    cfg = model_config(name, "full", pretrained=False)  # no downloads in tests
    model = build_model(cfg).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    assert sum(p.numel() for p in model.parameters()) > 3e6


def blobs(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pale tissue with darker discs; the mask is the discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        mask = np.zeros((size, size), bool)
        for _ in range(3):
            cy, cx, r = rng.integers(8, size - 8, 2).tolist() + [int(rng.integers(5, 10))]
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        image = np.where(mask[..., None], [0.55, 0.3, 0.45], [0.9, 0.75, 0.85])
        image = image + rng.normal(0, 0.05, image.shape)
        images.append(torch.from_numpy(image.transpose(2, 0, 1)).float().clamp(0, 1))
        masks.append(torch.from_numpy(mask).float()[None])
    return torch.stack(images), torch.stack(masks)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet", "swin"])
def test_overfits_a_few_images(name):
    """A CNN and a transformer (with deep supervision) each fit 4 images: Dice ≥ 0.9."""
    torch.manual_seed(0)
    model = build_model(model_config(name))
    images, masks = blobs(4, 64, seed=1)
    criterion = SegmentationLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(60):
        optimizer.zero_grad()
        loss, _ = criterion(model(images, heads=model.has_heads), masks)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = (model(images) > 0).numpy()
    scores = [dice(p[0], m[0].numpy().astype(bool)) for p, m in zip(pred, masks, strict=True)]
    assert np.mean(scores) >= 0.9, scores


def test_loss_adds_focal_deep_supervision_and_heads():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    base, parts = SegmentationLoss(LossWeights(focal=0.0))(logits, target)
    with_focal, _ = SegmentationLoss(LossWeights(focal=1.0))(logits, target)
    assert set(parts) == {"mask"} and with_focal > base
    output = {
        "mask": logits,
        "aux": [logits, logits],
        "organ": torch.randn(2, 5),
        "pixel_size": torch.zeros(2),
    }
    total, parts = SegmentationLoss(LossWeights(aux=0.5, organ=0.1, pixel_size=0.1))(
        output, target, torch.tensor([0, 4]), torch.log(torch.tensor([2.0, 2.0]))
    )
    assert set(parts) == {"mask", "aux", "organ", "pixel_size"}
    assert parts["aux"] == pytest.approx(2 * 0.5 * parts["mask"], rel=1e-5)
    assert parts["pixel_size"] == pytest.approx(0.1 * np.log(2.0) ** 2, rel=1e-5)
    assert float(total) == pytest.approx(sum(parts.values()), rel=1e-5)


@pytest.mark.parametrize("name", ["hrnet", "unet"])
def test_pretrained_weights_from_a_local_file(name, tmp_path):
    """Offline machines point `weights_file` at a local file; the encoder starts from it."""
    import timm
    from safetensors.torch import save_file

    cfg = model_config(name)
    timm_name = cfg["encoder"].removeprefix("tu-")
    source = timm.create_model(timm_name, pretrained=False)
    path = tmp_path / f"{timm_name}.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = build_model({**cfg, "weights_file": str(path)})
    loaded = dict(model.named_parameters())
    stem = next(k for k in loaded if "conv" in k and k.endswith("weight"))
    key = stem.rsplit("model.", 1)[1]  # the timm name under the wrappers
    torch.testing.assert_close(loaded[stem], source.state_dict()[key])
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        build_model({**cfg, "weights_file": str(tmp_path / "missing.safetensors")})


@pytest.mark.parametrize("name", ["unet", pytest.param("segformer", marks=pytest.mark.slow)])
def test_a_checkpoint_trained_from_pretrained_weights_loads_offline(name, tmp_path):
    """A model built with `pretrained: true` + `weights_file` is checkpointed; loading it with no
    hub access, an empty hub cache and the weights file deleted gives the same outputs (the
    Kaggle kernel has neither internet nor the training machine's files)."""
    import subprocess
    import sys

    import timm
    from safetensors.torch import save_file

    from ftuseg.models.checkpoint import save_checkpoint

    cfg = model_config(name)
    encoder = cfg["encoder"].removeprefix("tu-")
    if cfg["encoder"].startswith("tu-"):
        source = timm.create_model(encoder, pretrained=False).state_dict()
    else:  # smp's own encoder (MiT): its weights file holds the encoder's state dict
        source = build_model(cfg).net.model.encoder.state_dict()
    weights = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in source.items()}, str(weights))
    trained_cfg = {**cfg, "pretrained": True, "weights_file": str(weights)}
    model = build_model(trained_cfg).eval()  # pretrained from the file: no download either
    save_checkpoint(tmp_path / "ckpt", model, {"model_cfg": trained_cfg, "um_per_px": 2.0})
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.save(model(x), tmp_path / "expected.pt")
    torch.save(x, tmp_path / "x.pt")
    weights.unlink()
    probe = (
        "import sys, torch; from ftuseg.models.checkpoint import load_checkpoint; "
        f"m, meta = load_checkpoint({str(tmp_path / 'ckpt')!r}); "
        f"x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True); "
        f"e = torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True); "
        # float32 tolerances: another process may sum in another order; weights that were
        # not loaded would differ by orders of magnitude more
        "torch.testing.assert_close(m(x), e); "
        "assert meta['model_cfg']['pretrained'] is True; print('ok')"
    )
    hub = tmp_path / "empty-hub"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(hub),
        "TORCH_HOME": str(hub),
        "XDG_CACHE_HOME": str(hub),
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
    }
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


# ---------------------------------------------------------------------------- Hydra params


def test_committed_params_yaml_is_the_composed_conf(tmp_path):
    """params.yaml (what `dvc repro` reads) is exactly what `dvc exp run -S` would compose."""
    composed = write_params([], CONF, tmp_path / "params.yaml")
    assert (tmp_path / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()
    for member in composed["ensemble"]["models"]:
        assert member in composed["models"]


def test_model_group_selects_the_ensemble_and_sizes_are_groups(tmp_path):
    for choice in options("model", CONF):
        composed = write_params([f"model={choice}"], CONF, tmp_path / f"{choice}.yaml")
        assert composed["ensemble"]["models"], choice
        assert set(composed["ensemble"]["models"]) <= set(composed["models"]), choice
    swin = write_params(["model=swin", "models/swin=full"], CONF, tmp_path / "p.yaml")
    assert swin["ensemble"]["models"] == ["swin"]
    assert swin["models"]["swin"]["encoder_kwargs"]["drop_path_rate"] == 0.3
    kaggle = write_params(["profile=kaggle"], CONF, tmp_path / "k.yaml")
    assert all(m["pretrained"] for m in kaggle["models"].values())
    assert kaggle["data"]["raw_dir"] == "data/raw"
    sample = write_params([], CONF, tmp_path / "s.yaml")
    assert not any(m["pretrained"] for m in sample["models"].values())


def test_bad_override_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cannot compose"):
        write_params(["model=nosuchmodel"], CONF, tmp_path / "p.yaml")
    assert not (tmp_path / "p.yaml").exists()


# ---------------------------------------------------------------------------- training options


def test_a_model_config_overrides_its_training_params():
    from ftuseg.train.config import train_config

    base = {"lr": 2e-3, "epochs": 15, "organ_oversample": {}}
    cfg = train_config(base, model_config("lung"))
    assert cfg.organ_oversample == {"lung": 5} and cfg.lr == 2e-3
    assert train_config(base, model_config("swin")).lr == 1e-3
    with pytest.raises(ValueError, match="learning_rate"):
        train_config(base, {"train": {"learning_rate": 1}})


def test_lung_oversampling_multiplies_lung_crops(tmp_path):
    from ftuseg.data.prepare import PrepareConfig, prepare, read_index
    from ftuseg.data.sample import SampleConfig, generate
    from ftuseg.train.datasets import CropDataset

    generate(tmp_path / "raw", SampleConfig(train_per_organ=2, test_per_organ=0, field_um=120))
    prepare(tmp_path / "raw", tmp_path / "prep", PrepareConfig(um_per_px=3.0, n_folds=2))
    index = read_index(tmp_path / "prep")
    ids = index["id"].tolist()
    plain = CropDataset(tmp_path / "prep", ids, 32, samples_per_image=2)
    more = CropDataset(
        tmp_path / "prep", ids, 32, samples_per_image=2, organ_oversample={"lung": 5}
    )
    lung = set(index.loc[index["organ"] == "lung", "id"])
    assert len(plain) == 2 * len(ids)
    assert len(more) == len(plain) + 2 * 4 * len(lung)  # each lung image: 10 crops instead of 2
    organs = [more[i]["organ"].item() for i in range(len(more))]
    assert organs.count(4) == 10 * len(lung)  # ORGANS.index("lung") == 4
    with pytest.raises(DataError, match=r"train\.organ_oversample: unknown organ\(s\) \['lungs'\]"):
        CropDataset(tmp_path / "prep", ids, 32, organ_oversample={"lungs": 5})


# CoaT (tied modules) and the U-Net in the fast lane, every architecture in the slow one.
ROUND_TRIP = [
    a if a in ("coat", "unet") else pytest.param(a, marks=pytest.mark.slow) for a in ARCHITECTURES
]


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_checkpoint_and_resumable_state_round_trip(name, tmp_path):
    # Some encoders tie modules (CoaT shares its conv position encodings), which safetensors
    # refuses unless the aliases are stored separately.
    torch.manual_seed(0)
    cfg = model_config(name, deep_supervision=True, organ_head=True, pixel_size_head=True)
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(2, 3, 64, 64)).mean().backward()
    optimizer.step()
    model.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)

    save_checkpoint(tmp_path / "ckpt", model, {"model_cfg": cfg, "um_per_px": 0.4})
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)

    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_state(tmp_path / "state", TrainingState("run", epoch=1), model, optimizer, best)
    fresh = build_model(cfg)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    _, tensors, scalars = load_state(tmp_path / "state", "run")
    restore(tensors, scalars, fresh, fresh_optimizer)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)
    restored = fresh_optimizer.state_dict()["state"]
    original = optimizer.state_dict()["state"]
    assert restored.keys() == original.keys() and original
    assert all(torch.equal(restored[k]["exp_avg"], original[k]["exp_avg"]) for k in original)
