"""The submission: every ``test.csv`` row predicted by the ensemble, thresholded per organ and
run-length encoded. One loop, :func:`predict_test`, serves the submit stage and the Kaggle
kernel, so this module imports only what the kernel can run (no rich, no scikit-learn)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ftuseg.core import rle
from ftuseg.core.errors import DataError
from ftuseg.core.metrics import dice, summarise
from ftuseg.core.utils import write_csv
from ftuseg.data.contract import read_image, read_metadata, row_mask
from ftuseg.infer.engine import InferenceConfig, Predictor
from ftuseg.infer.maps import postprocess
from ftuseg.infer.members import EnsembleConfig, ensemble_members

Progress = Callable[[Iterable[Any]], Iterable[Any]]


def _no_progress(rows: Iterable[Any]) -> Iterable[Any]:
    return rows


def predict_test(
    test: pd.DataFrame,
    images_dir: str | Path,
    predictor: Predictor,
    config: EnsembleConfig,
    on_image: Callable[[Any, float], None] | None = None,
    progress: Progress = _no_progress,
) -> Iterator[tuple[str, np.ndarray]]:
    """Predict every row of a validated ``test.csv``, one image in memory at a time: yields
    ``(id, mask)``. ``on_image(row, seconds)`` is called after each image (the kernel logs its
    runtime with it); ``progress`` wraps the rows (the submit stage passes a progress bar)."""
    if abs(predictor.um_per_px - config.um_per_px) > 1e-9:
        raise DataError(
            f"ensemble config says {config.um_per_px} µm/px but the checkpoints were trained at "
            f"{predictor.um_per_px} µm/px"
        )
    min_um2 = predictor.config.min_component_um2
    for row in progress(list(test.itertuples(index=False))):
        started = time.perf_counter()
        img = read_image(Path(images_dir) / f"{row.id}.tiff", (row.img_height, row.img_width))
        prob = predictor.predict(img, row.pixel_size, row.organ)
        pred = postprocess(
            prob, config.threshold(row.organ, row.data_source), row.pixel_size, min_um2
        )
        if on_image is not None:
            on_image(row, time.perf_counter() - started)
        yield row.id, pred


def submission_table(masks: Iterable[tuple[str, np.ndarray]]) -> pd.DataFrame:
    """``(id, mask)`` pairs -> the submission (id, rle), encoding each mask as it arrives."""
    return pd.DataFrame([(i, rle.encode(m)) for i, m in masks], columns=["id", "rle"])


def make_submission(
    raw_dir: str | Path,
    models_dir: str | Path,
    config: EnsembleConfig,
    folds: list[int],
    out_csv: str | Path,
    inference: InferenceConfig | None = None,
    progress: Progress = _no_progress,
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame | None]:
    """Write ``submission.csv`` (id, rle) for ``test.csv``; score it when test labels exist.

    Returns the submission, the summary metrics and the Dice of each test image (id, organ,
    dice; None without labels)."""
    raw_dir = Path(raw_dir)
    test = read_metadata(raw_dir / "test.csv", "test")
    labels_path = raw_dir / "test_labels.csv"
    labels = (
        pd.read_csv(labels_path, dtype={"id": str, "rle": str}).set_index("id")
        if labels_path.is_file()
        else None
    )
    if labels is not None:
        missing = sorted(set(test["id"]) - set(labels.index))
        if missing:
            raise DataError(f"{labels_path}: no label for test id(s) {missing}")
    predictor = Predictor.from_checkpoints(ensemble_members(models_dir, config, folds), inference)
    rows = test.set_index("id", drop=False)
    scored = []

    def scoring(masks: Iterable[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray]]:
        for image_id, mask in masks:
            if labels is not None:
                row = rows.loc[image_id]
                truth = row_mask(row, labels_path, labels.loc[image_id, "rle"])
                scored.append({"id": image_id, "organ": row.organ, "dice": dice(mask, truth)})
            yield image_id, mask

    submission = submission_table(
        scoring(predict_test(test, raw_dir / "test_images", predictor, config, progress=progress))
    )
    write_csv(out_csv, submission)
    if labels is None:
        return submission, {"scored": False, "n_images": len(submission)}, None
    per_image = pd.DataFrame(scored, columns=["id", "organ", "dice"])
    return submission, {"scored": True, **summarise(per_image, intervals=True)}, per_image
