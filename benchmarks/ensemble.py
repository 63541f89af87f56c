"""Ensemble weight search at the real scale: 351 training images of 1500² (3000² HPA images at
the kaggle profile's 0.8 µm/px), 3 member models.

Baseline, measured in the same run: the per-pixel objective (what the search evaluated before
the LevelTable): for every image, combine the member maps (ftuseg.infer.maps.combine) and count every
pixel against every threshold (threshold_counts). Against it: building the LevelTable once
(distinct member-level tuples per image) and one objective evaluation on it; both give the same
value, which is checked. The table is evaluated one image at a time on one thread per core
(``threads`` in the output). Then a whole coordinate-ascent search on the table, and what it would
have cost per pixel.

Maps are synthetic but shaped like OOF output: a smooth probability field that agrees with a
blob-shaped truth mask, one noisy version per member, quantised to uint8 like the OOF stage
stores them. Distinct tuples per pixel are also reported for the pipeline's own OOF maps
(data/oof, the sample run) when they exist.

    python benchmarks/ensemble.py [--images 351] [--side 1500] [--members 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import cv2
import numpy as np

from ftuseg.core.metrics import dice_from_counts
from ftuseg.core.organs import ORGANS
from ftuseg.ensemble.level_table import LevelTable, best_thresholds, threshold_counts
from ftuseg.ensemble.search import search_weights
from ftuseg.infer.maps import combine, quantize

ROOT = Path(__file__).resolve().parents[1]
GRID = np.round(np.arange(0.1, 0.91, 0.05), 4)


def synthetic_image(
    rng: np.random.Generator, side: int, members: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """A blob truth mask and ``members`` quantised probability maps that mostly agree with it."""
    small = side // 16
    field = cv2.resize(rng.normal(size=(small, small)).astype(np.float32), (side, side),
                       interpolation=cv2.INTER_CUBIC)  # fmt: skip
    truth = field > 0.6
    signal = cv2.GaussianBlur(truth.astype(np.float32), (0, 0), 6) * 8 - 4
    maps = []
    for _ in range(members):
        noise = cv2.resize(rng.normal(size=(small, small)).astype(np.float32) * 1.5,
                           (side, side), interpolation=cv2.INTER_LINEAR)  # fmt: skip
        maps.append(quantize(1.0 / (1.0 + np.exp(-(signal + noise)))))
    return maps, truth


def per_pixel_objective(
    weights: list[float], maps: list[list[np.ndarray]], truths: list[np.ndarray], organs: np.ndarray
) -> float:
    """The baseline: every pixel of every image, every evaluation."""
    table = np.stack(
        [
            dice_from_counts(*threshold_counts(combine(m, weights) / np.float32(255.0), t, GRID))
            for m, t in zip(maps, truths, strict=True)
        ]
    )
    return best_thresholds(table, organs, GRID)[1]


def pipeline_oof_ratio() -> dict | None:
    """Distinct tuples per pixel over the pipeline's own OOF maps (sample run)."""
    oof = ROOT / "data/oof"
    models = sorted(p.name for p in oof.glob("*") if p.is_dir()) if oof.is_dir() else []
    if not models:
        return None
    from ftuseg.data.prepare import load_prepared, read_index
    from ftuseg.ensemble.oof_maps import read_oof_map

    index = read_index(ROOT / "data/prepared")
    table = LevelTable(len(models))
    for image_id in index["id"]:
        table.add(
            [read_oof_map(oof, n, image_id) for n in models],
            load_prepared(ROOT / "data/prepared", image_id)[1],
        )
    return {"models": models, "images": len(table), "tuples_per_pixel": table.tuples / table.pixels}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=351)
    parser.add_argument("--side", type=int, default=1500)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    organs = np.array([ORGANS[i % len(ORGANS)] for i in range(args.images)])
    print(f"synthesising {args.images} images of {args.side}² x {args.members} members ...")
    maps, truths = [], []
    for _ in range(args.images):
        m, t = synthetic_image(rng, args.side, args.members)
        maps.append(m)
        truths.append(t)
    weights = [1.0, 0.7, 1.3][: args.members] + [1.0] * max(0, args.members - 3)

    started = time.perf_counter()
    baseline = per_pixel_objective(weights, maps, truths, organs)
    baseline_s = time.perf_counter() - started

    started = time.perf_counter()
    table = LevelTable(args.members)
    for m, t in zip(maps, truths, strict=True):
        table.add(m, t)
    build_s = time.perf_counter() - started
    table.objective(weights, organs, GRID)  # first call concatenates the tuples
    started = time.perf_counter()
    value = table.objective(weights, organs, GRID)
    eval_s = time.perf_counter() - started
    if value != baseline:
        raise SystemExit(f"objective mismatch: table {value!r} vs per pixel {baseline!r}")

    calls = 0
    objective = table.objective

    def counted(*a, **k):
        nonlocal calls
        calls += 1
        return objective(*a, **k)

    table.objective = counted  # type: ignore[method-assign]
    started = time.perf_counter()
    found, score = search_weights(table, None, organs, GRID)
    search_s = time.perf_counter() - started
    results = {
        "images": args.images,
        "side": args.side,
        "members": args.members,
        "tuples_per_pixel": round(table.tuples / table.pixels, 4),
        "level_table_gib": round(table.nbytes / 2**30, 2),
        "maps_gib": round(sum(q.nbytes for m in maps for q in m) / 2**30, 2),
        "threads": table.workers,
        "baseline_per_pixel_objective_s": round(baseline_s, 2),
        "level_table_build_s": round(build_s, 2),
        "level_table_objective_s": round(eval_s, 3),
        "objective_speedup": round(baseline_s / eval_s, 1),
        "objective_equal": True,
        "search_evaluations": calls,
        "search_s": round(search_s, 1),
        "search_per_pixel_projected_s": round(calls * baseline_s, 1),
        "search_speedup_incl_build": round(calls * baseline_s / (search_s + build_s), 1),
        "found_weights": [round(float(w), 4) for w in found],
        "found_objective": round(score, 5),
        "pipeline_oof": pipeline_oof_ratio(),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
