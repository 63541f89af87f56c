"""Out-of-fold evaluation: every training image predicted by the model of the fold that did not
train on it, through the inference engine, scored as the competition scores (Dice per image at
the original resolution, averaged over images)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import pandas as pd
from rich.progress import track

from ftuseg.core.errors import DataError
from ftuseg.core.layout import COVERAGE_NAME, checkpoint_dir, oof_path
from ftuseg.core.metrics import dice, summarise
from ftuseg.core.utils import atomic_path, read_json, write_yaml
from ftuseg.data.contract import image_path, read_image, read_metadata, row_mask
from ftuseg.data.prepare import read_index
from ftuseg.infer.engine import InferenceConfig, Predictor
from ftuseg.infer.maps import postprocess, to_original


def run_oof(
    raw_dir: str | Path,
    prepared_dir: str | Path,
    models_dir: str | Path,
    model_names: Sequence[str],
    oof_dir: str | Path,
    config: InferenceConfig | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Predict every training image with the model of the fold that did not train on it.

    Writes the quantised probability at training scale (one PNG per model and image) under
    ``oof_dir`` and returns the metrics at threshold 0.5 per model and the per-image table.
    """
    config = config or InferenceConfig()
    raw_dir = Path(raw_dir)
    csv_path = raw_dir / "train.csv"
    meta = read_metadata(csv_path, "train").set_index("id", drop=False)
    index = read_index(prepared_dir)
    rows = []
    coverage: dict[str, list[str] | None] = {}
    with atomic_path(oof_dir, is_dir=True) as tmp:
        for name in model_names:
            (tmp / name).mkdir()
            for fold in sorted(index["fold"].unique()):
                predictor = Predictor.from_checkpoints(
                    [(checkpoint_dir(models_dir, name, fold), 1.0)], config
                )
                organs = predictor.members[0].organs
                coverage[name] = list(organs) if organs else None
                ids = index.loc[index["fold"] == fold, "id"].tolist()
                for image_id in track(ids, description=f"oof: {name} fold {fold}"):
                    row = meta.loc[image_id]
                    truth = row_mask(row, csv_path)
                    img = read_image(image_path(raw_dir, "train", image_id), truth.shape)
                    # The organ picks the stain reference only: a specialist's OOF is its own.
                    q = predictor.predict_at_scale(
                        predictor.scaled_input(img, row.pixel_size, row.organ)
                    )
                    cv2.imwrite(str(oof_path(tmp, name, image_id)), q)
                    pred = postprocess(
                        to_original(q, truth.shape), 0.5, row.pixel_size, config.min_component_um2
                    )
                    rows.append(
                        {
                            "model": name,
                            "id": image_id,
                            "organ": row.organ,
                            "fold": int(fold),
                            "dice": dice(pred, truth),
                        }
                    )
        write_yaml(tmp / COVERAGE_NAME, coverage)
    per_image = pd.DataFrame(rows)
    metrics = {name: summarise(per_image[per_image["model"] == name]) for name in model_names}
    return metrics, per_image


def selection_optimism(run_metrics: Sequence[Path]) -> dict[str, float]:
    """What choosing the best epoch on the validation fold adds to its own Dice: the mean over a
    model's folds of the validation Dice at the kept (best) epoch and at the last epoch, which
    nothing chose, from each train stage's dvclive ``metrics.json``."""
    best, last = [], []
    for path in run_metrics:
        if not Path(path).is_file():
            raise DataError(f"{path}: not found (re-run the train stage)")
        logged = read_json(path)
        try:
            best.append(float(logged["best_val_dice"]))
            last.append(float(logged["val"]["dice"]))
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"{path}: no best_val_dice and val.dice (re-run the train stage)"
            ) from None
    at_best, at_last = sum(best) / len(best), sum(last) / len(last)
    return {
        "val_dice_best_epoch": round(at_best, 5),
        "val_dice_last_epoch": round(at_last, 5),
        "selection_optimism": round(at_best - at_last, 5),
    }
