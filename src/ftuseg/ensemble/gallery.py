"""Badcase gallery: the worst OOF images per organ, as overlays a person can read at a glance.

Colours follow the competition write-up: true positives yellow, false negatives red, false
positives green.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ftuseg.core.utils import atomic_path
from ftuseg.data.contract import image_path, read_image, read_metadata, row_mask
from ftuseg.ensemble.oof_maps import read_oof_map
from ftuseg.infer.maps import ensemble_prob, member_weights, postprocess

TP_COLOUR = (255, 255, 0)  # yellow
FN_COLOUR = (255, 0, 0)  # red
FP_COLOUR = (0, 255, 0)  # green


def overlay(
    image: np.ndarray, truth: np.ndarray, pred: np.ndarray, alpha: float = 0.45
) -> np.ndarray:
    """RGB image with TP/FN/FP pixels tinted; everything else unchanged."""
    out = image.astype(np.float32)
    t, p = truth.astype(bool), pred.astype(bool)
    for sel, colour in ((t & p, TP_COLOUR), (t & ~p, FN_COLOUR), (~t & p, FP_COLOUR)):
        out[sel] = (1 - alpha) * out[sel] + alpha * np.asarray(colour, np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_gallery(
    raw_dir: str | Path,
    oof_dir: str | Path,
    models: Sequence[str],
    weights: Sequence[float],
    thresholds: dict[str, float],
    per_image: pd.DataFrame,
    out_dir: str | Path,
    *,
    worst_k: int = 2,
    max_side: int = 768,
    min_component_um2: float = 0.0,
    coverage: Sequence[Sequence[str] | None] | None = None,
) -> list[Path]:
    """Write ``{organ}_{rank}_{id}_dice{d}.png`` for the ``worst_k`` images of each organ."""
    raw_dir = Path(raw_dir)
    csv_path = raw_dir / "train.csv"
    meta = read_metadata(csv_path, "train").set_index("id", drop=False)
    written = []
    with atomic_path(out_dir, is_dir=True) as tmp:
        for organ, group in per_image.groupby("organ"):
            worst = group.sort_values(["dice", "id"]).head(worst_k)
            for rank, row in enumerate(worst.itertuples(index=False), start=1):
                m = meta.loc[row.id]
                truth = row_mask(m, csv_path)
                shape = truth.shape
                image = read_image(image_path(raw_dir, "train", row.id), shape)
                w = member_weights(weights, coverage or [None] * len(models), organ)
                maps = [read_oof_map(oof_dir, n, row.id) for n in models]
                pred = postprocess(
                    ensemble_prob(maps, w, shape),
                    thresholds[organ],
                    m.pixel_size,
                    min_component_um2,
                )
                picture = overlay(image, truth, pred)
                scale = max_side / max(shape)
                if scale < 1:
                    size = (round(shape[1] * scale), round(shape[0] * scale))
                    picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
                name = f"{organ}_{rank}_{row.id}_dice{row.dice:.3f}.png"
                cv2.imwrite(str(tmp / name), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                written.append(Path(out_dir) / name)
    return written
