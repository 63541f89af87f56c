"""RLE encode/decode speed: ftuseg.core.rle against the classic Kaggle implementation.

Baseline ("classic"), measured in the same run on the same real 3000x3000 masks:
  decode: split the string, loop over runs filling a flat array, reshape, transpose;
  encode: transpose-flatten, concatenate zeros, ``np.where(p[1:] != p[:-1])``.
Masks: the real competition rows bundled in tests/data (all 141 shared rows when
../shared/hubmap-labels is beside the checkout). Prints per-call times and speed-up ratios.

    python benchmarks/rle.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ftuseg.core import rle

ROOT = Path(__file__).resolve().parents[1]


def classic_decode(mask_rle: str, shape: tuple[int, int]) -> np.ndarray:
    s = mask_rle.split()
    starts, lengths = [np.asarray(x, dtype=int) for x in (s[0:][::2], s[1:][::2])]
    starts -= 1
    ends = starts + lengths
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, hi in zip(starts, ends, strict=True):
        img[lo:hi] = 1
    return img.reshape(shape[1], shape[0]).T


def classic_encode(img: np.ndarray) -> str:
    pixels = img.T.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def best_time(func: Callable[[object], object], items: list, repeats: int) -> float:
    """Best-of-``repeats`` mean seconds per call over ``items``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            func(item)
        best = min(best, (time.perf_counter() - start) / len(items))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    shared = ROOT.parent / "shared" / "hubmap-labels" / "train_rows.csv"
    source = shared if shared.is_file() else ROOT / "tests" / "data" / "real_rows.csv"
    rows = pd.read_csv(source, dtype={"id": str})
    rows = rows[(rows.img_height == 3000) & (rows.img_width == 3000)]
    shape = (3000, 3000)
    texts = rows["rle"].tolist()
    masks = [np.ascontiguousarray(rle.decode(t, shape)) for t in texts]
    for text, mask in zip(texts, masks, strict=True):  # both implementations agree before timing
        assert classic_encode(mask) == text == rle.encode(mask)
        np.testing.assert_array_equal(classic_decode(text, shape), mask)

    runs = np.array([len(t.split()) // 2 for t in texts])
    print(f"masks: {len(masks)} real 3000x3000 rows from {source.relative_to(ROOT.parent)}")
    print(f"runs per mask: median {int(np.median(runs))}, max {runs.max()}; best of {args.repeats}")
    results = {}
    for op, ours, classic, items in (
        ("decode", lambda t: rle.decode(t, shape), lambda t: classic_decode(t, shape), texts),
        ("encode", rle.encode, classic_encode, masks),
    ):
        t_classic = best_time(classic, items, args.repeats)
        t_ours = best_time(ours, items, args.repeats)
        results[op] = t_classic / t_ours
        print(
            f"{op}: classic {t_classic * 1e3:7.2f} ms  ftuseg {t_ours * 1e3:7.2f} ms  ratio {results[op]:5.1f}x"
        )
    print(f"goal: decode >= 3x ({'met' if results['decode'] >= 3 else 'NOT met'}), "
          f"encode >= 2x ({'met' if results['encode'] >= 2 else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
