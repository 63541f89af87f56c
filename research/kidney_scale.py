"""Does the physical-scale pipeline give the same Dice whatever pixel size a slide comes at?

The 20 held-out real PAS kidney tiles (bundled, ≈1.0 µm/px) are presented at 0.5, 1.0 and
2.0 µm/px (resampled: cubic up, area down; the mask by nearest neighbour up, area + half
threshold down, as the bundle's tiles were made) with the pixel size given to the model as a
user's csv would say it. The shipped kidney model (trained at 4 µm/px) predicts each through
the product's runtime (``ftuseg.kaggle.runtime.load_bundle``: the kernel's path), scored at the
presentation's own resolution. Writes ``results/kidney_scale.json``.

    python research/kidney_scale.py
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from glas_gap import bootstrap, bootstrap_of

from ftuseg.core.metrics import dice
from ftuseg.data.real_tiles import load_real_tiles
from ftuseg.infer.shipped import shipped_bundle
from ftuseg.kaggle.runtime import load_bundle

OUT = Path(__file__).resolve().parent / "results" / "kidney_scale.json"
PRESENTATIONS = (0.5, 1.0, 2.0)  # µm/px


def present(image: np.ndarray, mask: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """The tile and its mask resampled by ``factor`` (2 = twice the pixels per side)."""
    if factor == 1.0:
        return image, mask
    h, w = mask.shape
    size = (round(w * factor), round(h * factor))
    if factor > 1:
        return (cv2.resize(image, size, interpolation=cv2.INTER_CUBIC),
                cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0)  # fmt: skip
    small = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), small >= 0.5


def main() -> None:
    predictor, ensemble, _ = load_bundle(shipped_bundle("kidney"))
    threshold = ensemble.threshold("kidney")
    tiles = load_real_tiles("test")
    scores = {p: [] for p in PRESENTATIONS}
    for k, tile in enumerate(tiles, 1):
        for p in PRESENTATIONS:
            image, mask = present(tile.image, tile.mask, tile.pixel_size / p)
            prob = predictor.predict(image, p, "kidney")
            scores[p].append(dice(prob >= threshold, mask))
        print(f"[{k}/{len(tiles)}] {tile.id}: " + ", ".join(
            f"{p:g} µm/px {scores[p][-1]:.4f}" for p in PRESENTATIONS), flush=True)  # fmt: skip
    arrays = {p: np.array(v) for p, v in scores.items()}
    means = {p: float(a.mean()) for p, a in arrays.items()}
    ref = arrays[1.0]
    result = {
        "model": "shipped kidney model (src/ftuseg/assets/models/kidney)",
        "tiles": len(tiles),
        "dice": {f"{p:g}": [round(v, 4) for v in bootstrap(a)] for p, a in arrays.items()},
        "vs_1um": {
            f"{p:g}": [round(v, 4) for v in bootstrap_of(np.subtract, a, ref)]
            for p, a in arrays.items()
            if p != 1.0
        },  # fmt: skip
        "spread": round(max(means.values()) - min(means.values()), 4),
        "per_tile": {
            t.id: {f"{p:g}": round(float(arrays[p][i]), 4) for p in PRESENTATIONS}
            for i, t in enumerate(tiles)
        },  # fmt: skip
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("dice", "vs_1um", "spread")}, indent=2))


if __name__ == "__main__":
    main()
