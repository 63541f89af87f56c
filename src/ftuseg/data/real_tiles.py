"""The bundled real HuBMAP PAS kidney tiles (``assets/kidney_pas/``, see its README).

110 Vanderbilt tiles with manual glomerulus masks, split once into 20 held-out test tiles at their
own ≈1.0 µm/px and 90 training tiles resampled to 2.0 µm/px (``research/kidney_bundle.py``). The
sample stage puts the test tiles in place of the synthetic kidney test images, so the default run
scores real pixels; the ``kidney-real`` profile trains on the training tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from rich.progress import track

from ftuseg.core import rle
from ftuseg.core.errors import DataError
from ftuseg.data.contract import image_path, write_image

ORGAN = "kidney"
THICKNESS_UM = 4.0  # not published with the tiles; the source README's suggested value
ID_PREFIX = "hubmap_pas_"  # sample ids: the prefix and the source tile number


@dataclass(frozen=True)
class RealTile:
    id: str
    pixel_size: float  # µm/px
    image: np.ndarray  # (H, W, 3) RGB uint8
    mask: np.ndarray  # (H, W) uint8, 1 = glomerulus


def tile_table() -> pd.DataFrame:
    """``tiles.csv``: id, split, pixel_size, img_height, img_width, one row per bundled tile."""
    with resources.as_file(resources.files("ftuseg") / "assets" / "kidney_pas") as root:
        return pd.read_csv(root / "tiles.csv", dtype={"id": str})


def load_real_tiles(split: str, count: int | None = None) -> list[RealTile]:
    """The first ``count`` tiles of ``split`` ("train" | "test") in the table's order (all: None)."""
    table = tile_table()
    rows = table[table["split"] == split]
    if count is not None:
        if not 0 <= count <= len(rows):
            raise DataError(f"{count} real kidney {split} tiles asked, {len(rows)} bundled")
        rows = rows.iloc[:count]
    return [_read_tile(split, row) for row in rows.itertuples(index=False)]


def _read_tile(split: str, row) -> RealTile:
    with resources.as_file(resources.files("ftuseg") / "assets" / "kidney_pas" / split) as root:
        image_file, mask_file = root / "images" / f"{row.id}.jpg", root / "masks" / f"{row.id}.png"
        bgr = cv2.imread(str(image_file), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(mask_file), cv2.IMREAD_GRAYSCALE)
    if bgr is None or mask is None:
        raise DataError(f"{image_file}: bundled tile or its mask unreadable")
    if bgr.shape[:2] != (row.img_height, row.img_width) or mask.shape != bgr.shape[:2]:
        raise DataError(f"{image_file}: size differs from tiles.csv or from its mask")
    tile_id = ID_PREFIX + row.id.rsplit("_", 1)[-1]
    return RealTile(
        tile_id, float(row.pixel_size), bgr[..., ::-1].copy(), (mask > 0).astype(np.uint8)
    )


def write_real(tmp: Path, tiles: list[RealTile], split: str) -> list[tuple]:
    """Write real tiles as ``split`` images; rows as train.csv's (id ... rle, age, sex)."""
    rows = []
    for tile in track(tiles, description=f"sample: {split} (real PAS kidney)"):
        write_image(image_path(tmp, split, tile.id), tile.image)
        h, w = tile.mask.shape
        rows.append(
            (
                tile.id,
                ORGAN,
                "Hubmap",
                h,
                w,
                tile.pixel_size,
                THICKNESS_UM,
                rle.encode(tile.mask),
                np.nan,
                "",
            )
        )
    return rows
