"""Models that ship inside the package, so ``ftuseg predict`` works without training first.

Each is a model bundle (the kernel's format: ``ftuseg-bundle.json``, ``ensemble.yaml``,
``inference.yaml``, fp16 safetensors checkpoints) under ``assets/models/<organ>/``, with a model
card (``MODEL_CARD.md``, numbers in ``card.json``) and the record of the run that trained it
(``run/``). :func:`ship` writes one from a finished pipeline run.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from ftuseg import __version__
from ftuseg.core.errors import DataError
from ftuseg.core.utils import atomic_path, write_json, write_yaml
from ftuseg.infer.members import BUNDLE_MARKER, ENSEMBLE_NAME, INFERENCE_NAME, EnsembleConfig
from ftuseg.models.checkpoint import META_NAME, WEIGHTS_NAME


def shipped_root() -> Path:
    with resources.as_file(resources.files("ftuseg") / "assets" / "models") as root:
        return Path(root)


def shipped_organs() -> list[str]:
    root = shipped_root()
    return sorted(p.name for p in root.iterdir() if (p / BUNDLE_MARKER).is_file())


def shipped_bundle(organ: str) -> Path:
    """The bundle of the model shipped for ``organ``; an error saying how to get one otherwise."""
    bundle = shipped_root() / organ
    if not (bundle / BUNDLE_MARKER).is_file():
        raise DataError(
            f"no model ships for organ {organ!r} (shipped: {', '.join(shipped_organs()) or 'none'}). "
            "Train one with the pipeline (`make repro`, or `dvc repro` on your data: docs/own-data.md) "
            "and pass --models models/ (with --ensemble data/ensemble.yaml), or pass --bundle "
            "kaggle_kernel/dataset"
        )
    return bundle


def half_precision(weights: Path, out: Path) -> None:
    """Floating-point tensors to fp16 (integer buffers such as BatchNorm's counters kept)."""
    tensors = load_file(str(weights))
    half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    with atomic_path(out) as tmp:
        save_file(half, str(tmp), metadata={"format": "pt"})


def ship(
    checkpoint: Path, config: EnsembleConfig, organ: str, inference: dict[str, Any], out: Path
) -> None:
    """A one-member bundle for ``organ`` from a checkpoint folder (``models/<model>/fold<k>``),
    its weights in fp16 and the run's threshold for the organ, written atomically to ``out``."""
    model, fold = checkpoint.parent.name, int(checkpoint.name.removeprefix("fold"))
    with atomic_path(out, is_dir=True) as tmp:
        dest = tmp / model / checkpoint.name
        dest.mkdir(parents=True)
        half_precision(checkpoint / WEIGHTS_NAME, dest / WEIGHTS_NAME)
        shutil.copy(checkpoint / META_NAME, dest / META_NAME)
        single = EnsembleConfig(
            members={model: 1.0},
            thresholds={organ: config.threshold(organ)},
            um_per_px=config.um_per_px,
        )
        single.save(tmp / ENSEMBLE_NAME)
        write_yaml(tmp / INFERENCE_NAME, {**inference, "device": "auto"})
        member = {"model": model, "fold": fold, "path": f"{model}/{checkpoint.name}", "weight": 1.0}
        write_json(
            tmp / BUNDLE_MARKER,
            {"format": 1, "ftuseg_version": __version__, "organ": organ, "members": [member]},
        )
