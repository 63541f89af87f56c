"""Packaging for Kaggle: the offline kernel folder, the kaggle CLI around it, runtime projection.

``kaggle_kernel/`` is laid out for ``kaggle kernels push -p kaggle_kernel``:

    kaggle_kernel/
      kernel-metadata.json        internet off, competition + model dataset attached
      ftuseg_kernel.py            the kernel: installs the wheels offline, calls ftuseg.kaggle.runtime.run
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

import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftuseg import __version__
from ftuseg.core.errors import DataError
from ftuseg.core.utils import atomic_path, write_json, write_yaml
from ftuseg.infer.engine import InferenceConfig
from ftuseg.infer.members import EnsembleConfig, ensemble_members
from ftuseg.kaggle.runtime import BUNDLE_MARKER, ENSEMBLE_NAME, INFERENCE_NAME

log = logging.getLogger(__name__)
COMPETITION = "hubmap-organ-segmentation"
KERNEL_FILE = "ftuseg_kernel.py"
DATASET_DIR = "dataset"
KAGGLE_LIMIT_S = 9 * 3600
WHEEL_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip file can hold

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
# Offline install into a private folder: no index, no dependency resolution. The Kaggle image
# provides torch, torchvision, numpy and pandas; everything else the kernel imports is bundled.
subprocess.run(
    [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
     "--target", target, *wheels],
    check=True,
)
sys.path.insert(0, target)

from ftuseg.kaggle.runtime import run  # noqa: E402

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
    # The wheels' target when Kaggle's interpreter differs from this one (e.g. "3.10",
    # "manylinux2014_x86_64"); null: this interpreter and platform.
    python_version: str | None = None
    platform: str | None = None

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
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--wheel-dir",
                str(out_dir),
                str(src),
            ],
            capture_output=True,
            text=True,
            # Fixed zip timestamps: the same sources give the same wheel bytes, so the kernel
            # folder's DVC hash is stable from run to run.
            env={**os.environ, "SOURCE_DATE_EPOCH": WHEEL_EPOCH},
        )
        if result.returncode:
            raise DataError(f"building the ftuseg wheel failed:\n{result.stderr.strip()}")
    wheels = sorted(out_dir.glob("ftuseg-*.whl"))
    if not wheels:
        raise DataError(f"{out_dir}: pip wheel produced no ftuseg wheel")
    return wheels[-1]


# What the Kaggle image is relied on to provide, with their own dependencies: the kernel bundles
# every other distribution it imports, as wheels, at the version of this environment.
KAGGLE_BASE = ("torch", "torchvision", "numpy", "pandas")

# Run in a fresh interpreter: the kernel's whole per-image path on a packaged bundle (load the
# checkpoints, predict, threshold, encode; read a TIFF and a csv), then every module it loaded.
_IMPORT_PROBE = """
import sys, tempfile, numpy as np
from pathlib import Path
from ftuseg.data import contract as data
from ftuseg.core import rle
from ftuseg.kaggle.runtime import load_bundle
from ftuseg.infer.maps import postprocess
predictor, config, _ = load_bundle(sys.argv[1])
prob = predictor.predict(np.full((64, 64, 3), 200, np.uint8), config.um_per_px, "kidney")
rle.encode(postprocess(prob, 0.5, config.um_per_px, 0.0))
import tifffile
with tempfile.TemporaryDirectory() as tmp:
    tifffile.imwrite(Path(tmp) / "probe.tiff", np.zeros((8, 8, 3), np.uint8))
    data.read_image(Path(tmp) / "probe.tiff")
print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))
"""


def _requires(name: str) -> list[str]:
    """The distributions ``name`` depends on (extras left out, markers evaluated here)."""
    from packaging.requirements import Requirement

    out = []
    for spec in importlib.metadata.requires(name) or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req.name)
    return out


def base_distributions(roots: Sequence[str] = KAGGLE_BASE) -> set[str]:
    """``roots`` and everything they depend on, as canonical distribution names."""
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    absent: list[str] = []
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += _requires(name)
        except importlib.metadata.PackageNotFoundError:
            absent.append(name)  # declared (markers hold here) but not installed: said below
    if absent:
        log.warning(
            "the Kaggle base's dependencies %s are not installed here: the kernel treats them as "
            "provided by the Kaggle image and bundles no wheel of them",
            sorted(absent),
        )
    return seen


def kernel_requirements(bundle: str | Path) -> list[str]:
    """``name==version`` of every distribution the kernel imports beyond the Kaggle base
    (torch, torchvision, numpy, pandas and their dependencies), found by running the kernel's
    per-image path on ``bundle`` in a fresh interpreter."""
    from packaging.utils import canonicalize_name

    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, str(bundle)], capture_output=True, text=True
    )
    if result.returncode:
        raise DataError(f"the kernel import probe failed:\n{result.stderr.strip()[-3000:]}")
    modules = set(result.stdout.split()) - set(sys.stdlib_module_names)
    owners = importlib.metadata.packages_distributions()
    dists = {canonicalize_name(d) for m in modules for d in owners.get(m, [])}
    needed = dists - base_distributions() - {"ftuseg"}
    return sorted(f"{name}=={importlib.metadata.version(name)}" for name in needed)


def download_wheels(
    requirements: Sequence[str],
    out_dir: str | Path,
    python_version: str | None = None,
    platform: str | None = None,
) -> None:
    """Fetch binary wheels for ``requirements`` (no dependencies) for the offline kernel; for
    another interpreter or platform than this one when given (Kaggle's image)."""
    if not requirements:
        return
    target = [
        *(["--python-version", python_version] if python_version else []),
        *(["--platform", platform] if platform else []),
    ]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            *target,
            "--dest",
            str(out_dir),
            *requirements,
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise DataError(f"kernel wheels: pip download failed:\n{result.stderr.strip()}")


def build_kernel(
    out_dir: str | Path,
    models_dir: Path,
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
        for src, weight in ensemble_members(models_dir, config, folds):
            rel = src.relative_to(models_dir)
            for file in ("model.safetensors", "model.json"):
                if not (src / file).is_file():
                    raise DataError(f"{src / file}: checkpoint missing (run the train stages)")
                (dataset / "models" / rel).mkdir(parents=True, exist_ok=True)
                shutil.copy(src / file, dataset / "models" / rel / file)
            members.append(
                {
                    "model": rel.parts[0],
                    "fold": int(rel.parts[1].removeprefix("fold")),
                    "path": (Path("models") / rel).as_posix(),
                    "weight": weight,
                }
            )
        config.save(dataset / ENSEMBLE_NAME)
        write_yaml(
            dataset / INFERENCE_NAME,
            {
                **inference.__dict__,
                "tta": list(inference.tta),
                "scales": list(inference.scales),
                "device": "auto",
            },
        )
        wheel = build_wheel(project_root, dataset / "wheels")
        manifest = {"format": 1, "ftuseg_version": __version__, "members": members}
        write_json(dataset / BUNDLE_MARKER, manifest)  # what the import probe loads
        requirements = kernel_requirements(dataset)
        download_wheels(
            [*requirements, *cfg.extra_wheels],
            dataset / "wheels",
            cfg.python_version,
            cfg.platform,
        )
        manifest = {
            **manifest,
            # The image's own packages, at the versions the models were trained with (the
            # kernel logs a warning where Kaggle's differ).
            "base": {name: importlib.metadata.version(name) for name in KAGGLE_BASE},
            "bundled": requirements,
            "wheels": sorted(p.name for p in (dataset / "wheels").glob("*.whl")),
        }
        write_json(dataset / BUNDLE_MARKER, manifest)
        write_json(dataset / "dataset-metadata.json", dataset_metadata(cfg))
        write_json(tmp / "kernel-metadata.json", kernel_metadata(cfg))
        (tmp / KERNEL_FILE).write_text(KERNEL_SCRIPT.format(marker=BUNDLE_MARKER))
    if wheel.name not in manifest["wheels"]:
        raise DataError(f"{wheel.name} is missing from the bundle's wheels")
    return manifest
