"""The kernel rehearsed on this machine: its projected runtime on the hidden test set, and a full
offline run inside a Kaggle-like package site."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftuseg.core import rle
from ftuseg.core.organs import HPA_PIXEL_SIZE_UM, HUBMAP
from ftuseg.infer.maps import postprocess
from ftuseg.kaggle.bundle import (
    COMPETITION,
    DATASET_DIR,
    KAGGLE_LIMIT_S,
    KERNEL_FILE,
    base_distributions,
)
from ftuseg.kaggle.runtime import load_bundle

# The public HuBMAP test image (spleen, 2023x2023 at 0.4945 µm/px) spans 1 mm of tissue, and the
# stated HuBMAP size range, 160² to 4500², is exactly prostate at 6.263 µm/px and large intestine
# at 0.229 µm/px over that same field: HuBMAP images are modelled as 1 mm fields per organ.
HUBMAP_FIELD_UM = 1000.0
N_HPA_TEST, N_HUBMAP_TEST = 81, 448  # the hidden test set's images per source


TIMING_THRESHOLD = 0.5  # the probes time the per-image work; the threshold's value is irrelevant


def test_set_composition() -> list[dict[str, Any]]:
    """The hidden test set as the competition described it: 81 HPA images at 3000² and 448
    HuBMAP images, assumed evenly split over the 5 organs, each a 1 mm field at its organ's
    pixel size (clamped to the stated 160..4500 px)."""
    # The organ picks the stain reference where it is per organ (timing does not depend on
    # it); the HPA group spans every organ and is timed as the first.
    groups = [
        {
            "group": "HPA",
            "count": N_HPA_TEST,
            "side": 3000,
            "pixel_size": HPA_PIXEL_SIZE_UM,
            "organ": next(iter(HUBMAP)),
        }
    ]
    for organ, domain in HUBMAP.items():
        side = int(np.clip(round(HUBMAP_FIELD_UM / domain.pixel_size), 160, 4500))
        groups.append(
            {
                "group": f"HuBMAP {organ}",
                "count": N_HUBMAP_TEST / len(HUBMAP),
                "side": side,
                "pixel_size": domain.pixel_size,
                "organ": organ,
            }
        )
    return groups


def measure_runtime(bundle: str | Path, seed: int = 0) -> dict[str, Any]:
    """Time the packaged ensemble on one image per test-set group and project the whole test set.

    Each probe does the kernel's per-image work (predict, threshold, RLE) on an image of the
    group's size and pixel size; the projection multiplies by the group's image count.
    """
    predictor, config, manifest = load_bundle(bundle)
    rng = np.random.default_rng(seed)
    predictor.predict(
        rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), config.um_per_px, next(iter(HUBMAP))
    )  # warm-up
    groups = test_set_composition()
    for g in groups:
        image = rng.integers(0, 255, (g["side"], g["side"], 3), dtype=np.uint8)
        started = time.perf_counter()
        prob = predictor.predict(image, g["pixel_size"], g["organ"])
        rle.encode(
            postprocess(prob, TIMING_THRESHOLD, g["pixel_size"], predictor.config.min_component_um2)
        )
        g["seconds_each"] = round(time.perf_counter() - started, 4)
        g["megapixels"] = g["side"] ** 2 / 1e6
        g["model_megapixels"] = round(
            g["megapixels"] * (g["pixel_size"] / config.um_per_px) ** 2, 4
        )
        g["seconds_total"] = round(g["seconds_each"] * g["count"], 1)
    probe_seconds = sum(g["seconds_each"] for g in groups)
    total = float(sum(g["seconds_total"] for g in groups))
    return {
        "device": str(predictor.device),
        "threads": torch.get_num_threads(),
        "members": len(manifest["members"]),
        "um_per_px": config.um_per_px,
        "seconds_per_megapixel": round(probe_seconds / sum(g["megapixels"] for g in groups), 4),
        "seconds_per_megapixel_model_scale": round(
            probe_seconds / sum(g["model_megapixels"] for g in groups), 4
        ),
        "projection": groups,
        "projected_total_hours": round(total / 3600, 3),
        "limit_hours": KAGGLE_LIMIT_S / 3600,
        "fits_limit": total < KAGGLE_LIMIT_S,
    }


def kaggle_image_site(folder: str | Path) -> Path:
    """A site folder emulating what the kernel relies on the Kaggle image for: symlinks to the
    installed files of torch, torchvision, numpy, pandas and their dependencies, nothing else."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    for name in sorted(base_distributions()):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:  # warned of by base_distributions
            continue
        for file in dist.files or []:
            top = file.parts[0]
            if top == ".." or (folder / top).exists() or (folder / top).is_symlink():
                continue  # scripts outside site-packages; top-level folders already linked
            source = Path(str(dist.locate_file(top)))
            if source.exists():
                (folder / top).symlink_to(source)
    return folder


def _link_tree(src: Path, dest: Path) -> None:
    """Hard links where the filesystem allows (test images are large), copies elsewhere."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dest, copy_function=link)


def run_offline(
    kernel_dir: str | Path,
    competition_dir: str | Path,
    scratch: str | Path,
    timeout: float | None = None,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the packaged kernel as Kaggle does, on this machine: the competition's ``test.csv``
    and ``test_images/`` and the model dataset laid out under an input root, a fresh virtual
    environment holding only the Kaggle base (:func:`kaggle_image_site`), pip without an
    index, no network, no Hugging Face cache. Returns the finished process and the
    ``submission.csv`` path it was to write."""
    kernel_dir, competition_dir, scratch = Path(kernel_dir), Path(competition_dir), Path(scratch)
    comp = scratch / "input/competitions" / COMPETITION
    comp.mkdir(parents=True)
    shutil.copy(competition_dir / "test.csv", comp / "test.csv")
    _link_tree(competition_dir / "test_images", comp / "test_images")
    _link_tree(kernel_dir / DATASET_DIR, scratch / "input/datasets/user/ftuseg-models")
    working = scratch / "working"
    working.mkdir()
    env_dir = scratch / "kaggle-image"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    base = kaggle_image_site(scratch / "kaggle-base")
    (Path(site) / "kaggle_image.pth").write_text(f"{base}\n")
    offline = {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "FTUSEG_KAGGLE_INPUT": str(scratch / "input"),
        "FTUSEG_KAGGLE_WORKING": str(working),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(scratch / "empty-hf-home"),
        "TORCH_HOME": str(scratch / "empty-hf-home"),
        "PYTHONNOUSERSITE": "1",
    }
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(python), str(kernel_dir / KERNEL_FILE)],
        cwd=working,
        env={**env, **offline},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, working / "submission.csv"
