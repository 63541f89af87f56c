"""Whole-slide prediction speed and memory: megapixels per second and peak RSS on a 20k² and a
40k² px pyramidal OME-TIFF, and the share of time tissue detection saves.

The slides are synthetic (:mod:`ftuseg.data.synthetic_slide`): a grid of 4096 px cells on glass, 10 %
of them holding tissue that repeats the sample's kidney images; 0.5 µm/px (a HuBMAP kidney
slide's pixel size). The ensemble is the pipeline's own (``models/`` + ``data/ensemble.yaml``,
from ``make repro``), through ``ftuseg predict`` exactly as a user runs it. Each run is its own
process, so its peak RSS is its own. Baseline of the skip share: an 8192² slide of the same
kind predicted with and without ``--no-tissue`` (every chunk predicted), in the same run.

    python benchmarks/slide.py [--json benchmarks/results/slide.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ftuseg.data.contract import read_image  # noqa: E402
from ftuseg.data.synthetic_slide import write_synthetic_slide  # noqa: E402

PIXEL_SIZE = 0.5
TISSUE = 0.1  # share of 4096 px cells with tissue (whole slides are mostly glass)


def kidney_patch() -> np.ndarray:
    """The sample's kidney images side by side (2 × 2): the tissue the slides repeat."""
    sample = ROOT / "data/sample"
    table = pd.read_csv(sample / "train.csv", dtype={"id": str})
    ids = table.loc[table["organ"] == "kidney", "id"].tolist()
    images = [read_image(sample / "train_images" / f"{i}.tiff") for i in (ids * 4)[:4]]
    return np.concatenate([np.concatenate(images[:2], 1), np.concatenate(images[2:], 1)], 0)


def picture(path: Path, work: Path) -> None:
    """The README's overlay: an 8192² slide, 60 % of its 2048 px cells holding tissue."""
    slide = work / "picture.ome.tif"
    write_synthetic_slide(slide, 8192, PIXEL_SIZE, kidney_patch(), 0.6, cell=2048, seed=4)
    run_predict(slide, work / "picture")
    overlay = cv2.imread(str(work / "picture/picture.overlay.png"))
    small = cv2.resize(overlay, (1024, 1024), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), small, [cv2.IMWRITE_JPEG_QUALITY, 85])


# The child reports its own peak RSS (RUSAGE_CHILDREN would give the largest child so far).
CHILD = """
import resource, sys
from ftuseg.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exit:
    if exit.code:
        raise
print("PEAK_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def run_predict(slide: Path, out: Path, *flags: str) -> dict:
    """``ftuseg predict`` in a child process; its summary plus wall time and peak RSS."""
    started = time.perf_counter()
    cmd = [sys.executable, "-c", CHILD, "predict", str(slide), "--organ", "kidney",
           "--out", str(out), *flags]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"ftuseg predict failed:\n{proc.stderr[-3000:]}")
    wall = time.perf_counter() - started
    peak = float(proc.stdout.rsplit("PEAK_MB", 1)[1].split()[0])
    summary = json.loads((out / f"{slide.name.split('.')[0]}.json").read_text())
    megapixels = summary["megapixels"]
    return {
        "megapixels": megapixels,
        "chunks": summary["chunks"],
        "chunks_skipped": summary["chunks_skipped_no_tissue"],
        "ftu_polygons": summary["ftu_polygons"],
        "wall_s": round(wall, 1),
        "megapixels_per_s": round(megapixels / wall, 3),
        "peak_rss_mb": round(peak),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sides", nargs="+", type=int, default=[20_480, 40_960])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--picture", type=Path, help="also write the README's overlay here")
    parser.add_argument("--baseline-side", type=int, default=8192,
                        help="side of the slide run with and without tissue detection")  # fmt: skip
    args = parser.parse_args()
    for needed in (ROOT / "models", ROOT / "data/ensemble.yaml", ROOT / "data/sample"):
        if not needed.exists():
            sys.exit(f"{needed} missing: run `make repro` first (the benchmark uses its ensemble)")
    patch = kidney_patch()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        work = Path(tmp)
        for side in sorted(args.sides):
            slide = work / f"slide{side}.ome.tif"
            started = time.perf_counter()
            share = write_synthetic_slide(slide, side, PIXEL_SIZE, patch, TISSUE, cell=4096, seed=2)
            print(
                f"{side}²: written in {time.perf_counter() - started:.0f} s, tissue cells {share:.2f}"
            )
            results[f"{side}"] = {
                "tissue_cells": round(share, 3),
                **run_predict(slide, work / f"o{side}"),
            }
            print(f"{side}²: {results[f'{side}']}", flush=True)
        # The skip share's baseline: one slide with and without tissue detection (a smaller
        # one than the benchmark's: predicting every chunk of 20k² takes most of an hour here).
        side = args.baseline_side
        slide = work / f"base{side}.ome.tif"
        write_synthetic_slide(slide, side, PIXEL_SIZE, patch, TISSUE, cell=2048, seed=2)
        detected = run_predict(slide, work / "base")
        everything = run_predict(slide, work / "all", "--no-tissue")
        saved = 1 - detected["wall_s"] / everything["wall_s"]
        results[f"{side}_with_tissue_detection"] = detected
        results[f"{side}_without_tissue_detection"] = everything
        results["time_saved_by_tissue_detection"] = round(saved, 3)
        print(f"{side}²: {detected['wall_s']} s with, {everything['wall_s']} s without tissue "
              f"detection: {saved:.1%} of the time saved")  # fmt: skip
        if args.picture:
            picture(args.picture, work)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
