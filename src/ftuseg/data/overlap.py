"""Which images share pixels: tiles cut from one slide by a sliding window with overlap.

Folds drawn image by image put such tiles on both sides of a split, and a model is then scored
on pixels it trained on (on the bundled kidney tiles, cut at half a tile's stride: 210 pairs of
110 tiles, research/results/kidney_overlap.md). Every pair of images is cross-correlated at a
reduced scale, zero-padded so that any partial overlap is found; the peak is kept when the
normalised correlation (NCC) of the shared area reaches ``min_ncc`` over at least
``min_shared`` of the smaller image. Overlapping images form groups (connected components),
which :func:`ftuseg.data.prepare.assign_folds` keeps in one fold.

Cost: one FFT per image and one inverse FFT per pair, O(n²): 110 tiles of 1600×1200 take
≈ 15 s on 2 cores at a quarter of their resolution.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
from rich.progress import track
from scipy import fft, sparse
from scipy.sparse.csgraph import connected_components

PAIR_COLUMNS = ["a", "b", "dy", "dx", "shared", "ncc"]


@dataclass(frozen=True)
class OverlapConfig:
    scale: float = 0.25  # images searched at this fraction of their resolution
    min_ncc: float = 0.95  # the same pixels give ≈ 1.0; serial sections ≈ 0.85 (kidney tiles)
    min_shared: float = 0.05  # of the smaller image's area


def thumbnail(image: np.ndarray, scale: float) -> np.ndarray:
    """Grey, resized by ``scale``, mean-subtracted (the correlation then peaks on structure,
    not on brightness)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    h, w = grey.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    return small - small.mean()


def peak_shift(corr: np.ndarray, pad: tuple[int, int], limit: tuple[int, int]) -> tuple[int, int]:
    """b's origin in a's frame at the correlation's peak (the padded, circular lags unwrapped)."""
    y, x = np.unravel_index(np.argmax(corr), corr.shape)
    return (int(y) if y < limit[0] else int(y) - pad[0]), (
        int(x) if x < limit[1] else int(x) - pad[1]
    )


def shared_slices(
    a: tuple[int, int], b: tuple[int, int], dy: int, dx: int
) -> tuple[slice, slice, slice, slice] | None:
    """Slices of a and of b over what they share when b's origin lies at (dy, dx) in a's frame;
    None when they share nothing."""
    y0, y1 = max(0, dy), min(a[0], dy + b[0])
    x0, x1 = max(0, dx), min(a[1], dx + b[1])
    if y1 <= y0 or x1 <= x0:
        return None
    return slice(y0, y1), slice(x0, x1), slice(y0 - dy, y1 - dy), slice(x0 - dx, x1 - dx)


def find_overlaps(thumbs: Mapping[str, np.ndarray], cfg: OverlapConfig) -> pd.DataFrame:
    """Pairs of images that share pixels: ``a``, ``b``, b's origin (``dy``, ``dx``) in a's frame
    in full-resolution pixels, the ``shared`` share of the smaller image and the ``ncc``."""
    limit = tuple(max(t.shape[k] for t in thumbs.values()) for k in (0, 1))
    pad = (2 * limit[0], 2 * limit[1])
    # One FFT per image rather than two per pair.
    spectra = {i: fft.rfft2(t, s=pad) for i, t in thumbs.items()}
    rows = []
    for a, b in track(list(itertools.combinations(thumbs, 2)), description="overlap: pairs"):
        corr = fft.irfft2(spectra[a] * np.conj(spectra[b]), s=pad)
        dy, dx = peak_shift(corr, pad, limit)
        ta, tb = thumbs[a], thumbs[b]
        area = shared_slices(ta.shape, tb.shape, dy, dx)
        if area is None:
            continue
        pa, pb = ta[area[0], area[1]], tb[area[2], area[3]]
        shared = pa.size / min(ta.size, tb.size)
        if shared < cfg.min_shared or pa.std() == 0 or pb.std() == 0:
            continue
        ncc = float(np.corrcoef(pa.ravel(), pb.ravel())[0, 1])
        if ncc >= cfg.min_ncc:
            full = (round(dy / cfg.scale), round(dx / cfg.scale))
            rows.append((a, b, *full, round(shared, 4), round(ncc, 4)))
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def overlap_groups(pairs: pd.DataFrame, ids: list[str]) -> pd.Series:
    """Group number per image, largest group first: the connected components of the pairs."""
    index = {t: k for k, t in enumerate(ids)}
    graph = sparse.coo_matrix(
        (np.ones(len(pairs)), (pairs["a"].map(index), pairs["b"].map(index))),
        shape=(len(ids), len(ids)),
    )
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    # Largest first; among equal sizes, in the order of their first image.
    order = {g: k for k, g in enumerate(sorted(range(len(sizes)), key=lambda g: -sizes[g]))}
    return pd.Series([order[g] for g in labels], index=ids, name="group")
