"""Whole-slide input and output: lazy tile reads of (pyramidal, OME-) TIFF and plain images with
their pixel size, tissue detection on a thumbnail, and the predicted mask as a tiled pyramidal
TIFF with an overlay."""

from __future__ import annotations

import logging
import math
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile
import zarr

from ftuseg.core.errors import DataError
from ftuseg.core.scale import resize_image
from ftuseg.core.utils import atomic_path
from ftuseg.data.contract import to_rgb_uint8
from ftuseg.data.importer import read_any_image

BLOCK = 512  # zarr chunk and TIFF tile side of the mask; slide chunks are multiples of it


class _AbandonedZarrReads(logging.Filter):
    """zarr decodes a region's chunks as concurrent asyncio tasks. When one chunk is corrupt the
    read raises (a DataError naming the file and region, below) and the other tasks are
    abandoned; at exit asyncio reports each one ("Task was destroyed but it is pending") and
    Python warns that its coroutine was never awaited. The error has already said what is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Task was destroyed but it is pending") and "zarr" in message
        )


logging.getLogger("asyncio").addFilter(_AbandonedZarrReads())
warnings.filterwarnings(
    "ignore", r"coroutine 'concurrent_map\.<locals>\.run' was never awaited", RuntimeWarning
)


THUMBNAIL_MAX = 2048  # longest side of the thumbnail (tissue detection, overlay)


UNITS_UM = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


@dataclass
class Slide:
    """A lazily read RGB image: ``levels`` are (array, downsample) pairs, level 0 first."""

    path: Path
    levels: list[tuple[Any, float]]
    pixel_size: float | None  # µm/px from the file's metadata, if it has any
    _file: Any = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.levels[0][0].shape[:2])  # type: ignore[return-value]

    def read(self, y0: int, x0: int, h: int, w: int, level: int = 0) -> np.ndarray:
        """(h, w, 3) uint8 of ``level`` at (y0, x0); white beyond the image (glass)."""
        arr = self.levels[level][0]
        H, W = arr.shape[:2]
        out = np.full((h, w, 3), 255, np.uint8)
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + h, H), min(x0 + w, W)
        if ye > ys and xe > xs:
            try:
                raw = np.asarray(arr[ys:ye, xs:xe])
            except Exception as err:  # codecs and zarr raise many types on corrupt tiles
                raise DataError(
                    f"{self.path}: cannot read level {level}, rows {ys}:{ye}, columns {xs}:{xe} "
                    f"({type(err).__name__}: {err})"
                ) from None
            block = to_rgb_uint8(raw, str(self.path))
            out[ys - y0 : ye - y0, xs - x0 : xe - x0] = block
        return out

    def thumbnail(self, downsample: float) -> np.ndarray:
        """The slide at 1/``downsample``, from the finest pyramid level coarse enough, read in
        blocks (a slide without a pyramid is never read whole)."""
        H, W = self.shape
        out_shape = (max(1, round(H / downsample)), max(1, round(W / downsample)))
        level = max(
            (k for k, (_, f) in enumerate(self.levels) if f <= downsample),
            key=lambda k: self.levels[k][1],
        )
        arr, f = self.levels[level]
        out = np.empty((*out_shape, 3), np.uint8)
        step = BLOCK * 8
        lh, lw = arr.shape[:2]
        for y in range(0, lh, step):
            for x in range(0, lw, step):
                block = self.read(y, x, min(step, lh - y), min(step, lw - x), level)
                oy0, ox0 = round(y * f / downsample), round(x * f / downsample)
                oy1 = min(out_shape[0], round((y + block.shape[0]) * f / downsample))
                ox1 = min(out_shape[1], round((x + block.shape[1]) * f / downsample))
                if oy1 > oy0 and ox1 > ox0:
                    out[oy0:oy1, ox0:ox1] = resize_image(block, (oy1 - oy0, ox1 - ox0))
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def tiff_pixel_size(tf: tifffile.TiffFile) -> float | None:
    """µm/px from OME-XML, an Aperio description (``MPP = ...``) or the resolution tags."""
    if tf.is_ome and tf.ome_metadata:
        root = ET.fromstring(tf.ome_metadata)
        for pixels in root.iter():
            if pixels.tag.endswith("Pixels") and pixels.get("PhysicalSizeX"):
                unit = pixels.get("PhysicalSizeXUnit", "µm")
                if unit not in UNITS_UM:
                    raise DataError(f"{tf.filehandle.path}: unknown OME PhysicalSizeXUnit {unit!r}")
                return float(pixels.get("PhysicalSizeX")) * UNITS_UM[unit]
    page = tf.pages.first
    match = re.search(r"MPP\s*=\s*([0-9.]+)", page.description or "")
    if match:
        return float(match.group(1))
    unit = page.tags.get("ResolutionUnit")
    res = page.tags.get("XResolution")
    if unit is not None and res is not None and int(unit.value) in (2, 3):
        num, den = res.value
        per_unit = num / den if den else 0.0
        if per_unit > 0:
            return (25400.0 if int(unit.value) == 2 else 10000.0) / per_unit
    return None


def open_slide(path: str | Path) -> Slide:
    """A TIFF (pyramidal or not) lazily through zarr; PNG/JPEG/BMP in memory."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    if path.suffix.lower() not in (".tif", ".tiff", ".svs"):
        return Slide(path, [(read_any_image(path), 1.0)], None)
    try:
        tf = tifffile.TiffFile(path)
        series = tf.series[0]
        if series.axes not in ("YXS", "YX"):
            raise DataError(f"{path}: axes {series.axes!r}; expected an RGB (YXS) image")
        store = zarr.open(series.aszarr(), mode="r")
    except DataError:
        raise
    except Exception as err:  # tifffile raises many types for corrupt input
        raise DataError(f"{path}: unreadable image ({type(err).__name__}: {err})") from None
    arrays = (
        [store[str(k)] for k in range(len(series.levels))] if hasattr(store, "keys") else [store]
    )
    width = arrays[0].shape[1]
    levels = [(a, width / a.shape[1]) for a in arrays]
    return Slide(path, levels, tiff_pixel_size(tf), tf)


def tissue_mask(thumb: np.ndarray, min_saturation: int = 20) -> np.ndarray:
    """Tissue on an RGB thumbnail: saturation above Otsu's threshold (at least
    ``min_saturation``, so a blank slide stays blank) or dark, closed (small gaps filled).
    Not dilated: a chunk's margin already gives its border context, and a dilated mask would
    spill into the next chunk and have it predicted for nothing."""
    hsv = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)
    otsu, _ = cv2.threshold(hsv[..., 1], 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    tissue = ((hsv[..., 1] > max(otsu, min_saturation)) | (hsv[..., 2] < 100)).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    return cv2.morphologyEx(tissue, cv2.MORPH_CLOSE, kernel).astype(bool)


def downsample_level(src: Any, dst: Any) -> None:
    """``dst`` = ``src`` at half size, block by block (area average: FTU edges turn grey)."""
    step = BLOCK * 4
    H, W = src.shape
    for y in range(0, H, step):
        for x in range(0, W, step):
            block = np.asarray(src[y : y + step, x : x + step])
            out = (math.ceil(block.shape[0] / 2), math.ceil(block.shape[1] / 2))
            dst[y // 2 : y // 2 + out[0], x // 2 : x // 2 + out[1]] = cv2.resize(
                block, (out[1], out[0]), interpolation=cv2.INTER_AREA
            )


def mask_pyramid(level0: Any, root: Path) -> list[Any]:
    """Level 0 and its halvings down to at most ``BLOCK`` px a side, as zarr arrays."""
    levels = [level0]
    while max(levels[-1].shape) > BLOCK:
        h, w = levels[-1].shape
        nxt = new_mask_array(root / f"level{len(levels)}", (math.ceil(h / 2), math.ceil(w / 2)))
        downsample_level(levels[-1], nxt)
        levels.append(nxt)
    return levels


def new_mask_array(path: Path, shape: tuple[int, int]) -> Any:
    return zarr.open_array(
        str(path), mode="w", shape=shape, chunks=(BLOCK, BLOCK), dtype="uint8", fill_value=0
    )


def tiles(arr: Any) -> Iterator[np.ndarray]:
    H, W = arr.shape
    for y in range(0, H, BLOCK):
        for x in range(0, W, BLOCK):
            tile = np.zeros((BLOCK, BLOCK), np.uint8)
            block = np.asarray(arr[y : y + BLOCK, x : x + BLOCK])
            tile[: block.shape[0], : block.shape[1]] = block
            yield tile


def write_mask_tiff(path: Path, levels: list[Any], pixel_size: float) -> None:
    """A pyramidal tiled TIFF (sub-IFDs, as OME-TIFF pyramids are), tile by tile."""
    res = 1e4 / pixel_size  # pixels per cm
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for k, arr in enumerate(levels):
            scale = arr.shape[1] / levels[0].shape[1]
            tif.write(
                tiles(arr),
                shape=arr.shape,
                dtype=np.uint8,
                tile=(BLOCK, BLOCK),
                compression="zlib",
                photometric="minisblack",
                resolution=(res * scale, res * scale),
                resolutionunit="CENTIMETER",
                **({"subifds": len(levels) - 1} if k == 0 else {"subfiletype": 1}),
            )


def overlay(thumb: np.ndarray, mask_level: Any) -> np.ndarray:
    """The thumbnail with FTUs tinted green and outlined (BGR, for cv2.imwrite)."""
    small = cv2.resize(
        np.asarray(mask_level[:]), (thumb.shape[1], thumb.shape[0]), interpolation=cv2.INTER_AREA
    )
    ftu = small >= 128
    out = thumb.copy()
    out[ftu] = (0.6 * out[ftu] + 0.4 * np.array([0, 200, 0])).astype(np.uint8)
    contours, _ = cv2.findContours(ftu.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (0, 140, 0), 1)
    return cv2.cvtColor(out, cv2.COLOR_RGB2BGR)
