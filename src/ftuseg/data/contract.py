"""The competition's data contract: metadata tables, images and masks, validated on read.

Every error names the file and, for table problems, the row id, so a user can fix the input.
Images in unusual layouts (RGBA, grayscale, 16-bit, channels-first) are converted to uint8 RGB
with a logged warning; layouts that cannot be read unambiguously are refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
from pandas._libs.parsers import STR_NA_VALUES

from ftuseg.core import rle as rle_codec
from ftuseg.core.errors import DataError
from ftuseg.core.organs import ORGANS
from ftuseg.core.utils import atomic_path

log = logging.getLogger(__name__)

TEST_COLUMNS: tuple[str, ...] = (
    "id",
    "organ",
    "data_source",
    "img_height",
    "img_width",
    "pixel_size",
    "tissue_thickness",
)
TRAIN_COLUMNS: tuple[str, ...] = (*TEST_COLUMNS, "rle", "age", "sex")
# Optional train column: images of one group never fall in different folds (prepare).
GROUP = "group"
# Columns the pipeline cannot work without (age/sex are carried along when present).
_REQUIRED = {"train": (*TEST_COLUMNS, "rle"), "test": TEST_COLUMNS}


def read_metadata(path: str | Path, kind: str) -> pd.DataFrame:
    """Read and validate ``train.csv`` (``kind="train"``) or ``test.csv`` (``kind="test"``).

    Checks: required columns, unique ids, known organs, positive integer image sizes, positive
    pixel sizes and, for train, that every RLE parses and fits its image. An optional ``group``
    column (train) is read as text, an empty cell standing for the image's own group.
    """
    path = Path(path)
    if kind not in _REQUIRED:
        raise ValueError(f"kind must be 'train' or 'test', got {kind!r}")
    if not path.is_file():
        raise DataError(f"{path}: metadata file not found")
    try:
        # An empty rle cell is an image without FTUs (a negative tile), not a missing value: it
        # is read as "" while every other column keeps pandas' missing-value markers.
        header = pd.read_csv(path, nrows=0).columns
        markers = {c: sorted(STR_NA_VALUES) for c in header if c != "rle"}
        df = pd.read_csv(
            path,
            dtype={"id": str, "rle": str, GROUP: str},
            keep_default_na=False,
            na_values=markers,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV ({err})") from None
    missing = [c for c in _REQUIRED[kind] if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise DataError(f"{path}: no rows")

    df["id"] = df["id"].astype(str).str.strip()
    dup = df.loc[df["id"].duplicated(keep=False), "id"].unique().tolist()
    if dup:
        raise DataError(f"{path}: duplicate id(s) {', '.join(dup[:10])}")

    bad_organ = df.loc[~df["organ"].isin(ORGANS)]
    if len(bad_organ):
        row = bad_organ.iloc[0]
        raise DataError(
            f"{path}: row id={row['id']}: unknown organ {row['organ']!r} "
            f"(expected one of {', '.join(ORGANS)})"
        )

    for col in ("img_height", "img_width"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = df.loc[~(values > 0) | (values % 1 != 0)]
        if len(bad):
            row = bad.iloc[0]
            raise DataError(
                f"{path}: row id={row['id']}: {col} must be a positive integer, got {row[col]!r}"
            )
        df[col] = values.astype(np.int64)

    for col in ("pixel_size", "tissue_thickness"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = df.loc[~(values > 0)]  # NaN (missing or non-numeric) fails this comparison too
        if len(bad):
            row = bad.iloc[0]
            raise DataError(
                f"{path}: row id={row['id']}: {col} must be a positive number, got {row[col]!r}"
            )
        df[col] = values.astype(np.float64)

    if kind == "train" and GROUP in df.columns:
        # Images that share pixels (tiles of one slide cut with overlap) or a patient: the
        # folds keep a group together. An empty cell: the image is a group of its own.
        names = df[GROUP].str.strip()
        df[GROUP] = names.where(names.notna() & (names != ""), "id:" + df["id"])
    if kind == "train":
        for row in df.itertuples(index=False):
            validate_rle(row.rle, (row.img_height, row.img_width), where=f"{path}: row id={row.id}")
    return df.reset_index(drop=True)


def validate_rle(rle: object, shape: tuple[int, int], where: str) -> None:
    """Check that ``rle`` parses and fits an image of ``shape``; errors are prefixed by ``where``."""
    if not isinstance(rle, str):
        raise DataError(f"{where}: missing rle")
    try:
        starts, lengths = rle_codec.parse_runs(rle)
    except DataError as err:
        raise DataError(f"{where}: {err}") from None
    n = int(shape[0]) * int(shape[1])
    if starts.size and int(starts[-1] + lengths[-1]) > n:
        raise DataError(
            f"{where}: RLE run ends at pixel {int(starts[-1] + lengths[-1])}, past the image area "
            f"{shape[0]}x{shape[1]}={n}"
        )


def decode_mask(rle: object, shape: tuple[int, int], where: str) -> np.ndarray:
    """Decode an RLE into a C-contiguous (H, W) uint8 mask; errors are prefixed by ``where``."""
    validate_rle(rle, shape, where)
    return np.ascontiguousarray(rle_codec.decode(rle, (int(shape[0]), int(shape[1]))))


def row_mask(row: Any, csv_path: str | Path, rle: object = None) -> np.ndarray:
    """The truth mask of one validated csv row (``rle`` overrides the row's own, e.g. from a
    labels file); errors name the file and the row."""
    return decode_mask(
        row.rle if rle is None else rle,
        (int(row.img_height), int(row.img_width)),
        f"{csv_path}: row id={row.id}",
    )


def image_path(raw_dir: str | Path, split: str, image_id: str) -> Path:
    return Path(raw_dir) / f"{split}_images" / f"{image_id}.tiff"


def read_image(path: str | Path, expected_shape: Sequence[int] | None = None) -> np.ndarray:
    """Read a TIFF as a C-contiguous (H, W, 3) uint8 RGB array.

    Converted with a warning: channels-first layout, RGBA (alpha dropped), grayscale (replicated
    to RGB), 16-bit (scaled to 8 bit). Refused: floating point data, other channel counts,
    missing or unreadable files, and a size that disagrees with ``expected_shape`` (H, W).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        img = tifffile.imread(path)
    except Exception as err:  # tifffile raises many types for corrupt input
        raise DataError(f"{path}: unreadable image ({type(err).__name__}: {err})") from None
    img = to_rgb_uint8(img, str(path))
    if expected_shape is not None and tuple(img.shape[:2]) != tuple(int(s) for s in expected_shape):
        raise DataError(
            f"{path}: image is {img.shape[0]}x{img.shape[1]} (HxW) but the metadata says "
            f"{int(expected_shape[0])}x{int(expected_shape[1])}"
        )
    return img


def to_rgb_uint8(img: np.ndarray, name: str = "image") -> np.ndarray:
    """Bring an image array to (H, W, 3) uint8, converting known layouts and refusing the rest."""
    img = np.asarray(img)
    # Channels-first only when unambiguous: 3 or 4 planes and a last axis too long to be channels.
    if img.ndim == 3 and img.shape[0] in (3, 4) and img.shape[-1] > 4:
        log.warning("%s: channels-first layout %s, transposed to channels-last", name, img.shape)
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        log.warning("%s: grayscale image, replicated to RGB", name)
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise DataError(f"{name}: unsupported image shape {img.shape}; expected (H, W, 3) RGB")
    if img.shape[-1] == 4:
        log.warning("%s: RGBA image, alpha channel dropped", name)
        img = img[..., :3]
    if img.dtype == np.uint16:
        log.warning("%s: 16-bit image, scaled to 8 bit", name)
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DataError(
            f"{name}: unsupported pixel type {img.dtype}; expected 8- or 16-bit unsigned integers"
        )
    return np.ascontiguousarray(img)


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Write an RGB uint8 image as a zlib-compressed TIFF, atomically."""
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, img, photometric="rgb", compression="zlib")
