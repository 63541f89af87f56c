"""Packaging for Kaggle: the offline kernel folder, the kaggle CLI around it, runtime projection.

``kaggle_kernel/`` is laid out for ``kaggle kernels push -p kaggle_kernel``:

    kaggle_kernel/
      kernel-metadata.json        internet off, competition + model dataset attached
      ftuseg_kernel.py            the kernel: installs the wheels offline, calls ftuseg.kernel.run
      dataset/                    the model dataset (``kaggle datasets version -p ... -r zip``)
        dataset-metadata.json
        ftuseg-bundle.json        marker + manifest (members, weights, wheels)
        ensemble.yaml             weights, per-organ thresholds, scale
        inference.yaml            tile / TTA / precision settings of the engine
        models/<model>/fold<k>/   model.safetensors + model.json
        wheels/                   ftuseg's own wheel (+ configured extra wheels)

Credentials are never read or written here: the kaggle CLI finds them itself (environment or
``~/.kaggle/kaggle.json``), and nothing that reaches an output or a log contains them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__, rle
from .errors import DataError
from .evaluation import EnsembleConfig, checkpoint_dir
from .inference import InferenceConfig, postprocess
from .kernel import BUNDLE_MARKER, ENSEMBLE_NAME, INFERENCE_NAME, load_bundle
from .organs import HPA_PIXEL_SIZE_UM, HUBMAP
from .utils import atomic_path, write_json, write_yaml

COMPETITION = "hubmap-organ-segmentation"
KERNEL_FILE = "ftuseg_kernel.py"
DATASET_DIR = "dataset"
KAGGLE_LIMIT_S = 9 * 3600

KERNEL_SCRIPT = '''"""ftuseg offline inference kernel for HuBMAP + HPA: Hacking the Human Body (generated)."""

import glob
import logging
import os
import subprocess
import sys

INPUT = os.environ.get("FTUSEG_KAGGLE_INPUT", "/kaggle/input")
WORKING = os.environ.get("FTUSEG_KAGGLE_WORKING", "/kaggle/working")

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
markers = sorted(glob.glob(os.path.join(INPUT, "**", "{marker}"), recursive=True))
if not markers:
    sys.exit(f"no {marker} under {{INPUT}}: attach the ftuseg model dataset")
wheels = sorted(glob.glob(os.path.join(os.path.dirname(markers[0]), "wheels", "*.whl")))
target = os.path.join(WORKING, "ftuseg-packages")
# Offline install into a private folder: no index, no dependency resolution (the Kaggle image
# provides torch, timm, opencv, pandas; anything else ships as an extra wheel).
subprocess.run(
    [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
     "--target", target, *wheels],
    check=True,
)
sys.path.insert(0, target)

from ftuseg.kernel import run  # noqa: E402

run(INPUT, WORKING)
'''


@dataclass(frozen=True)
class KernelConfig:
    """The ``kernel`` group of params.yaml."""

    kernel_id: str = "your-kaggle-username/ftuseg-hubmap-submission"
    kernel_title: str = "ftuseg HuBMAP submission"
    dataset_id: str = "your-kaggle-username/ftuseg-hubmap-models"
    dataset_title: str = "ftuseg HuBMAP models"
    enable_gpu: bool = True
    is_private: bool = True
    extra_wheels: list[str] = field(default_factory=list)  # pip requirements to bundle as wheels

    def __post_init__(self) -> None:
        for name in ("kernel_id", "dataset_id"):
            value = getattr(self, name)
            if value.count("/") != 1 or not all(value.split("/")):
                raise DataError(
                    f"params.yaml: kernel.{name} must look like 'username/slug', got {value!r}"
                )


def kernel_metadata(cfg: KernelConfig) -> dict[str, Any]:
    return {
        "id": cfg.kernel_id,
        "title": cfg.kernel_title,
        "code_file": KERNEL_FILE,
        "language": "python",
        "kernel_type": "script",
        "is_private": cfg.is_private,
        "enable_gpu": cfg.enable_gpu,
        # Written explicitly: the kaggle CLI defaults to internet on, which code competitions refuse.
        "enable_internet": False,
        "dataset_sources": [cfg.dataset_id],
        "competition_sources": [COMPETITION],
        "kernel_sources": [],
    }


def dataset_metadata(cfg: KernelConfig) -> dict[str, Any]:
    return {"id": cfg.dataset_id, "title": cfg.dataset_title, "licenses": [{"name": "CC0-1.0"}]}


def build_wheel(project_root: str | Path, out_dir: str | Path) -> Path:
    """Build ftuseg's wheel from a clean copy of the sources (nothing written into the tree)."""
    project_root, out_dir = Path(project_root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ftuseg-wheel-") as tmp:
        src = Path(tmp) / "src-copy"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(project_root / name, src / name)
        shutil.copytree(
            project_root / "src",
            src / "src",
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
        )
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "--wheel-dir", str(out_dir), str(src)],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode:
            raise DataError(f"building the ftuseg wheel failed:\n{result.stderr.strip()}")
    wheels = sorted(out_dir.glob("ftuseg-*.whl"))
    if not wheels:
        raise DataError(f"{out_dir}: pip wheel produced no ftuseg wheel")
    return wheels[-1]


def download_wheels(requirements: Sequence[str], out_dir: str | Path) -> None:
    """Fetch binary wheels for ``requirements`` (no dependencies) for the offline kernel."""
    if not requirements:
        return
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--dest", str(out_dir), *requirements],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode:
        raise DataError(f"kernel.extra_wheels: pip download failed:\n{result.stderr.strip()}")


def build_kernel(
    out_dir: str | Path,
    models_dir: str | Path,
    ensemble_yaml: str | Path,
    folds: Sequence[int],
    inference: InferenceConfig,
    cfg: KernelConfig,
    project_root: str | Path = ".",
) -> dict[str, Any]:
    """Write the kernel folder (atomically) and return the bundle manifest."""
    config = EnsembleConfig.load(ensemble_yaml)
    with atomic_path(out_dir, is_dir=True) as tmp:
        dataset = tmp / DATASET_DIR
        members = []
        for name, weight in config.members.items():
            for fold in folds:
                src = checkpoint_dir(models_dir, name, fold)
                rel = Path("models") / name / f"fold{fold}"
                for file in ("model.safetensors", "model.json"):
                    if not (src / file).is_file():
                        raise DataError(f"{src / file}: checkpoint missing (run the train stages)")
                    (dataset / rel).mkdir(parents=True, exist_ok=True)
                    shutil.copy(src / file, dataset / rel / file)
                members.append(
                    {
                        "model": name,
                        "fold": int(fold),
                        "path": rel.as_posix(),
                        "weight": weight / len(folds),
                    }
                )
        config.save(dataset / ENSEMBLE_NAME)
        write_yaml(
            dataset / INFERENCE_NAME,
            {**inference.__dict__, "tta": list(inference.tta), "device": "auto"},
        )
        wheel = build_wheel(project_root, dataset / "wheels")
        download_wheels(cfg.extra_wheels, dataset / "wheels")
        manifest = {
            "format": 1,
            "ftuseg_version": __version__,
            "members": members,
            "wheels": sorted(p.name for p in (dataset / "wheels").glob("*.whl")),
        }
        write_json(dataset / BUNDLE_MARKER, manifest)
        write_json(dataset / "dataset-metadata.json", dataset_metadata(cfg))
        write_json(tmp / "kernel-metadata.json", kernel_metadata(cfg))
        (tmp / KERNEL_FILE).write_text(KERNEL_SCRIPT.format(marker=BUNDLE_MARKER))
    if wheel.name not in manifest["wheels"]:
        raise DataError(f"{wheel.name} is missing from the bundle's wheels")
    return manifest


# ---------------------------------------------------------------------------- runtime projection

# Probe images: (side px, µm/px) spanning the test set's range, timed through the real bundle.
PROBES: tuple[tuple[int, float], ...] = (
    (3000, 0.4),
    (4500, 0.229),
    (2000, 0.4945),
    (1500, 0.7562),
    (160, 6.263),
)


def test_set_composition(um_per_px: float) -> list[dict[str, Any]]:
    """The hidden test set as the competition described it (≈550 images): 81 HPA at 3000² and
    448 HuBMAP images of 160² to 4500², assumed evenly split over the 5 organs with sides uniform
    in that range (mean area (a² + ab + b²) / 3)."""
    lo, hi = 160, 4500
    mean_area = (lo * lo + lo * hi + hi * hi) / 3
    groups = [{"group": "HPA 3000x3000", "count": 81, "mp": 9.0, "pixel_size": HPA_PIXEL_SIZE_UM}]
    for organ, domain in HUBMAP.items():
        groups.append(
            {
                "group": f"HuBMAP {organ}",
                "count": 448 / len(HUBMAP),
                "mp": mean_area / 1e6,
                "pixel_size": domain.pixel_size,
            }
        )
    for g in groups:
        g["model_mp"] = g["mp"] * (g["pixel_size"] / um_per_px) ** 2
    return groups


def measure_runtime(bundle: str | Path, seed: int = 0) -> dict[str, Any]:
    """Time the packaged ensemble on probe images and project the competition's test set.

    Each probe runs predict + threshold + RLE, exactly the kernel's per-image work; a least-squares
    fit ``seconds = a + b * MP(model scale) + c * MP(original)`` then projects the test set.
    """
    predictor, config, manifest = load_bundle(bundle)
    rng = np.random.default_rng(seed)
    predictor.predict(
        rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), config.um_per_px
    )  # warm-up
    probes = []
    for side, pixel_size in PROBES:
        image = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
        started = time.perf_counter()
        prob = predictor.predict(image, pixel_size)
        rle.encode(
            postprocess(
                prob, config.default_threshold, pixel_size, predictor.config.min_component_um2
            )
        )
        seconds = time.perf_counter() - started
        mp = side * side / 1e6
        probes.append({"side": side, "pixel_size": pixel_size, "mp": mp,
                       "model_mp": mp * (pixel_size / config.um_per_px) ** 2, "seconds": round(seconds, 4)})  # fmt: skip
    design = np.array([[1.0, p["model_mp"], p["mp"]] for p in probes])
    coef, *_ = np.linalg.lstsq(design, np.array([p["seconds"] for p in probes]), rcond=None)
    coef = np.maximum(coef, 0.0)  # costs cannot be negative; guards a noisy fit
    groups = test_set_composition(config.um_per_px)
    for g in groups:
        g["seconds_each"] = round(float(coef @ [1.0, g["model_mp"], g["mp"]]), 4)
        g["seconds_total"] = round(g["seconds_each"] * g["count"], 1)
    total = float(sum(g["seconds_total"] for g in groups))
    return {
        "device": str(predictor.device),
        "threads": torch.get_num_threads(),
        "members": len(manifest["members"]),
        "um_per_px": config.um_per_px,
        "seconds_per_megapixel_model_scale": round(float(coef[1]), 4),
        "seconds_per_megapixel_original": round(float(coef[2]), 4),
        "seconds_per_image_overhead": round(float(coef[0]), 4),
        "probes": probes,
        "projection": groups,
        "projected_total_hours": round(total / 3600, 3),
        "limit_hours": KAGGLE_LIMIT_S / 3600,
        "fits_limit": total < KAGGLE_LIMIT_S,
    }


# ---------------------------------------------------------------------------- kaggle CLI


def credentials_present() -> bool:
    """Whether the kaggle CLI will find credentials (checked by presence only, never read)."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    return (config_dir / "kaggle.json").is_file()


def _kaggle(args: Sequence[str], dry_run: bool, check: bool = True) -> int:
    cmd = ["kaggle", *args]
    print("$ " + shlex.join(cmd), flush=True)
    if dry_run:
        return 0
    if shutil.which("kaggle") is None:
        raise DataError("the kaggle CLI is not installed: pip install kaggle")
    code = subprocess.run(cmd).returncode  # credentials reach it through its own environment
    if check and code:
        raise DataError(f"`{shlex.join(cmd)}` failed with exit code {code}")
    return code


def download_competition(dest: str | Path, dry_run: bool = False) -> None:
    """``kaggle competitions download`` into ``dest`` and unzip it there."""
    dest = Path(dest)
    if not dry_run and not credentials_present():
        raise DataError(
            "no Kaggle credentials: set KAGGLE_USERNAME/KAGGLE_KEY or create ~/.kaggle/kaggle.json"
        )
    if not dry_run:
        dest.mkdir(parents=True, exist_ok=True)
    _kaggle(["competitions", "download", "-c", COMPETITION, "-p", str(dest)], dry_run)
    archive = dest / f"{COMPETITION}.zip"
    print(f"$ unzip {archive} -d {dest}", flush=True)
    if dry_run:
        return
    if not archive.is_file():
        raise DataError(f"{archive}: the download produced no archive")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest)
    archive.unlink()


def push(
    kernel_dir: str | Path, message: str, dry_run: bool = False, create: bool | None = None
) -> None:
    """Version (or create) the model dataset, then push the kernel."""
    kernel_dir = Path(kernel_dir)
    dataset = kernel_dir / DATASET_DIR
    for required in (kernel_dir / "kernel-metadata.json", dataset / "dataset-metadata.json"):
        if not required.is_file():
            raise DataError(f"{required}: missing; build the kernel first (dvc repro)")
    if not dry_run and not credentials_present():
        raise DataError(
            "no Kaggle credentials: set KAGGLE_USERNAME/KAGGLE_KEY or create ~/.kaggle/kaggle.json"
        )
    if create is None:
        dataset_id = json.loads((dataset / "dataset-metadata.json").read_text())["id"]
        create = _kaggle(["datasets", "status", dataset_id], dry_run, check=False) != 0
    if create:
        _kaggle(["datasets", "create", "-p", str(dataset), "-r", "zip"], dry_run)
    else:
        _kaggle(["datasets", "version", "-p", str(dataset), "-r", "zip", "-m", message], dry_run)
    _kaggle(["kernels", "push", "-p", str(kernel_dir)], dry_run)
