"""Synthetic pyramidal OME-TIFF slides of any size, written tile by tile (never whole in
memory), for tests and benchmarks of whole-slide prediction (:mod:`ftuseg.infer.slide`).

The slide is a grid of square cells on glass; a seeded share of the cells holds tissue, whose
pixels repeat a given RGB ``patch`` (e.g. a sample image), so the tissue share, and with it the
share of work tissue detection saves, is known.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from ftuseg.core.utils import atomic_path

TILE = 512
GLASS = 245


def tissue_cells(side: int, cell: int, tissue_share: float, seed: int) -> np.ndarray:
    n = -(-side // cell)
    return np.random.default_rng(seed).random((n, n)) < tissue_share


def _tiles(
    side: int, step: int, patch: np.ndarray, cells: np.ndarray, cell: int
) -> Iterator[np.ndarray]:
    """Tiles of the level that samples every ``step``-th level-0 pixel."""
    size = -(-side // step)
    ph, pw = patch.shape[:2]
    for ty in range(0, size, TILE):
        for tx in range(0, size, TILE):
            ys = (np.arange(ty, ty + TILE) * step).clip(max=side - 1)
            xs = (np.arange(tx, tx + TILE) * step).clip(max=side - 1)
            tile = patch[(ys % ph)[:, None], (xs % pw)[None, :]]
            glass = ~cells[(ys // cell)[:, None], (xs // cell)[None, :]]
            tile[glass] = GLASS
            yield tile


def write_synthetic_slide(
    path: str | Path,
    side: int,
    pixel_size: float,
    patch: np.ndarray,
    tissue_share: float = 0.3,
    cell: int = 2048,
    seed: int = 0,
) -> float:
    """Write a ``side``² pyramidal OME-TIFF at ``pixel_size`` µm/px; returns the tissue share of
    its cells. Levels halve down to at most 1024 px."""
    cells = tissue_cells(side, cell, tissue_share, seed)
    steps = [1]
    while -(-side // steps[-1]) > 1024:
        steps.append(steps[-1] * 2)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
        for k, step in enumerate(steps):
            size = -(-side // step)
            tif.write(
                _tiles(side, step, patch, cells, cell),
                shape=(size, size, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                compression="zlib",
                compressionargs={"level": 1},
                photometric="rgb",
                **(
                    {
                        "subifds": len(steps) - 1,
                        "metadata": {
                            "axes": "YXS",
                            "PhysicalSizeX": pixel_size,
                            "PhysicalSizeY": pixel_size,
                        },
                    }
                    if k == 0
                    else {"subfiletype": 1, "metadata": None}
                ),
            )
    return float(cells.mean())
