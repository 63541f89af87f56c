"""Cost of stain augmentation: offline copies (the `stain` stage) vs re-doing it online.

Per image at the training size of the sample profile (480 µm field at 2 µm/px: 240² px) and of
the full-sample profile (1200 µm at 0.8 µm/px: 1500² px): staintools fit time (stain matrix +
concentrations) and time per recoloured copy. Baseline, measured in the same run: the online
alternative, which must fit and recolour every time an image is drawn (every epoch), against the
offline stage, which fits once and writes `copies` copies (then reading a PNG is the only cost).

    python benchmarks/stain.py [--copies 4] [--epochs 15] [--method vahadane]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from ftuseg.data.prepare import PrepareConfig, load_prepared, prepare, read_index
from ftuseg.data.sample import SampleConfig, generate
from ftuseg.domain.stain import StainAugmentConfig, stain_copies

SIZES = {"sample (240² px)": (480, 2.0), "full-sample (1500² px)": (1200, 0.8)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--method", default="vahadane")
    parser.add_argument("--images", type=int, default=5, help="images per size (one per organ)")
    args = parser.parse_args()
    cfg = StainAugmentConfig(method=args.method, copies=args.copies)
    print(f"{args.method}, {args.copies} copies, {args.epochs} epochs; seconds per image\n")
    print(
        f"{'training size':<24} {'fit':>7} {'copy':>7} {'PNG read':>9} {'offline':>8} "
        f"{'online/ep':>9} {'online, all epochs ÷ offline':>29}"
    )
    for label, (field_um, um_per_px) in SIZES.items():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            generate(root / "raw", SampleConfig(train_per_organ=2, test_per_organ=0,
                                                field_um=field_um))  # fmt: skip
            prepare(root / "raw", root / "prep", PrepareConfig(um_per_px=um_per_px, n_folds=2))
            fits, copies, reads = [], [], []
            for i, image_id in enumerate(read_index(root / "prep")["id"][: args.images]):
                image, _ = load_prepared(root / "prep", image_id)
                out, fit_s, copy_s = stain_copies(image, cfg, seed=i)
                fits.append(fit_s)
                copies.append(copy_s)
                path = root / f"{image_id}.png"
                cv2.imwrite(str(path), out[0])
                started = time.perf_counter()
                cv2.imread(str(path), cv2.IMREAD_COLOR)
                reads.append(time.perf_counter() - started)
        fit, copy, read = np.mean(fits), np.mean(copies), np.mean(reads)
        offline = fit + args.copies * copy  # once, cached by DVC
        online = fit + copy  # per image per epoch
        print(
            f"{label:<24} {fit:>7.3f} {copy:>7.4f} {read:>9.4f} {offline:>8.3f} {online:>9.3f} "
            f"{online * args.epochs / offline:>28.1f}×"
        )


if __name__ == "__main__":
    main()
