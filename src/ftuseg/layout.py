"""Where the pipeline's stages put what they write (the folders ``dvc.yaml`` declares), and the
readers of the OOF folder that the ensemble stage and the gallery share (no torch here)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .errors import DataError
from .utils import read_yaml


def checkpoint_dir(models_dir: str | Path, model: str, fold: int) -> Path:
    """``models/<model>/fold<k>``: one trained checkpoint (``model.safetensors`` + ``model.json``)."""
    return Path(models_dir) / model / f"fold{fold}"


def oof_path(oof_dir: str | Path, model: str, image_id: str) -> Path:
    """One model's quantised out-of-fold probability of one image, at training scale (PNG)."""
    return Path(oof_dir) / model / f"{image_id}.png"


COVERAGE_NAME = "coverage.yaml"  # in the OOF folder: model -> organs it covers (None = all)


def read_coverage(oof_dir: str | Path, models: Sequence[str]) -> list[list[str] | None]:
    """Each model's organ coverage (a specialist's ``organs``; None = all), as the OOF stage
    recorded it from the checkpoints."""
    path = Path(oof_dir) / COVERAGE_NAME
    if not path.is_file():
        raise DataError(f"{path}: not found (re-run the oof stage)")
    recorded = read_yaml(path) or {}
    missing = [m for m in models if m not in recorded]
    if missing:
        raise DataError(f"{path}: no OOF predictions of model(s) {missing} (re-run the oof stage)")
    return [recorded[m] for m in models]


def read_oof_map(oof_dir: str | Path, model: str, image_id: str) -> np.ndarray:
    path = oof_path(oof_dir, model, image_id)
    q = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if q is None:
        raise DataError(f"{path}: OOF map missing or unreadable (re-run the oof stage)")
    return q
