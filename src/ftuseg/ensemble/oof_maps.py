"""Readers of the OOF stage's folder, shared by the ensemble search and the gallery (no torch, so
the ensemble stage does not import the inference engine)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ftuseg.core.errors import DataError
from ftuseg.core.layout import COVERAGE_NAME, oof_path
from ftuseg.core.utils import read_yaml


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
