"""Whole-slide prediction in bounded memory: ``ftuseg predict``.

A slide (pyramidal OME-TIFF, any tiled or striped TIFF, or a plain PNG/JPEG) is read lazily
through tifffile's zarr interface, one chunk of ``chunk`` source pixels at a time plus a margin
of one model tile on every side (so chunk borders see the context tiles see inside a chunk).
Each chunk goes through the same engine as the competition images (resampled to the ensemble's
µm/px, tiled, blended, resampled back, thresholded with the organ's OOF threshold, small
components removed), and its mask is written to an on-disk zarr array, never to a slide-sized
array in memory. Chunks without tissue on a low-resolution thumbnail are skipped.

Outputs per slide: a pyramidal tiled TIFF mask (255 = FTU, µm/px in its resolution tags), FTU
polygons as GeoJSON (QuPath opens it; polygons cut by chunk borders are merged), an overlay
thumbnail PNG, a JSON summary and, on request or for images up to ``RLE_AUTO_MEGAPIXELS``, the
mask as a competition RLE row.

Memory is the chunk (with margin) at source and model scale, the thumbnail and the polygons:
it does not grow with the slide (benchmarks/slide.py measures 20k² against 40k²).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import tifffile
import zarr
from rich.progress import track
from shapely import unary_union
from shapely.geometry import Polygon

from . import rle
from .annotations import mask_to_polygons, write_geojson
from .data import to_rgb_uint8
from .ensemble_config import EnsembleConfig
from .errors import DataError
from .importer import read_any_image
from .inference import InferenceConfig, Predictor
from .maps import postprocess, quantize, to_original
from .scale import resize_image, scaled_shape
from .utils import atomic_path

BLOCK = 512  # zarr chunk and TIFF tile side of the mask; slide chunks are multiples of it
RLE_AUTO_MEGAPIXELS = 100.0  # larger masks get an RLE only on request (it needs the whole mask)
THUMBNAIL_MAX = 2048  # longest side of the thumbnail (tissue detection, overlay)
UNITS_UM = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


# ------------------------------------------------------------------------------ reading


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
            block = to_rgb_uint8(np.asarray(arr[ys:ye, xs:xe]), str(self.path))
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


# ------------------------------------------------------------------------------ tissue


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


# ------------------------------------------------------------------------------ prediction


@dataclass
class SlideResult:
    path: Path
    shape: tuple[int, int]
    pixel_size: float
    chunks: int
    chunks_skipped: int
    polygons: list[Polygon] = field(default_factory=list)
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        megapixels = self.shape[0] * self.shape[1] / 1e6
        return {
            "image": str(self.path),
            "height": self.shape[0],
            "width": self.shape[1],
            "pixel_size": self.pixel_size,
            "megapixels": round(megapixels, 2),
            "chunks": self.chunks,
            "chunks_skipped_no_tissue": self.chunks_skipped,
            "ftu_polygons": len(self.polygons),
            "seconds": round(self.seconds, 2),
            "megapixels_per_second": round(megapixels / self.seconds, 3) if self.seconds else None,
            "outputs": self.outputs,
        }


def chunk_margin(predictor: Predictor, pixel_size: float) -> int:
    """Source pixels of context around a chunk: one largest model tile. Measured on a
    briefly trained U-Net (chunk 512 px, tests/test_slide.py), half a tile left a mean
    |Δp| of 0.026 against the whole-image prediction, one tile 0.013, 1.5 tiles 0.005."""
    tile = max(predictor.tile_size(m) for m in predictor.members)
    return math.ceil(tile * predictor.um_per_px / pixel_size)


def predict_chunks(
    slide: Slide,
    predictor: Predictor,
    threshold: float,
    organ: str,
    pixel_size: float,
    mask: Any,
    chunk: int,
    tissue: np.ndarray | None,
    show_progress: bool,
    prob_out: Any = None,
) -> tuple[list[Polygon], int, int]:
    """Predict every chunk with tissue into ``mask`` (a (H, W) uint8 zarr array, 0/255) and,
    given ``prob_out``, the probability (uint8, 255 = 1); returns the FTU polygons (merged
    across chunk borders) and the chunk counts."""
    H, W = slide.shape
    source = predictor.source_pixel_size(pixel_size)
    margin = chunk_margin(predictor, source)
    min_um2 = predictor.config.min_component_um2
    grid = [(y, x) for y in range(0, H, chunk) for x in range(0, W, chunk)]
    inner, border, skipped = [], [], 0
    for y0, x0 in track(grid, description=f"predict {slide.path.name}", disable=not show_progress):
        h, w = min(chunk, H - y0), min(chunk, W - x0)
        if tissue is not None and not has_tissue(tissue, (y0, x0, h, w), slide.shape):
            skipped += 1
            continue
        # Context from the neighbours only: at the slide's edges the tiles see what they would
        # on the plain image (padding with glass there changes edge predictions).
        ry0, rx0 = max(0, y0 - margin), max(0, x0 - margin)
        ry1, rx1 = min(H, y0 + h + margin), min(W, x0 + w + margin)
        region = slide.read(ry0, rx0, ry1 - ry0, rx1 - rx0)
        oy, ox = y0 - ry0, x0 - rx0
        scaled = resize_image(region, scaled_shape(region.shape[:2], source, predictor.um_per_px))
        if predictor.normalize is not None:
            scaled = predictor.normalize(scaled, "image")
        prob = to_original(predictor.predict_at_scale(scaled, organ), region.shape[:2])
        pred = postprocess(prob, threshold, pixel_size, min_um2)
        mask[y0 : y0 + h, x0 : x0 + w] = pred[oy : oy + h, ox : ox + w] * 255
        if prob_out is not None:
            prob_out[y0 : y0 + h, x0 : x0 + w] = quantize(prob[oy : oy + h, ox : ox + w])
        # Polygons from the chunk plus 2 px of its right/bottom neighbours: pieces of one FTU
        # cut by a chunk border overlap and merge into one polygon below.
        eh, ew = min(h + 2, H - y0), min(w + 2, W - x0)
        for poly in mask_to_polygons(pred[oy : oy + eh, ox : ox + ew], (x0, y0)):
            minx, miny, maxx, maxy = poly.bounds
            cut = minx <= x0 or miny <= y0 or maxx >= x0 + w - 1 or maxy >= y0 + h - 1
            (border if cut else inner).append(poly)
    merged = unary_union(border) if border else None
    if merged is not None and not merged.is_empty:
        inner += list(getattr(merged, "geoms", [merged]))
    return inner, len(grid), skipped


MIN_TISSUE = (
    0.001  # share of a chunk's thumbnail pixels: a few closed-over corner pixels are not tissue
)


def has_tissue(tissue: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> bool:
    """Whether the thumbnail pixels whose centres fall in the chunk hold tissue. (Counting every
    thumbnail pixel the chunk touches would flag a tissue chunk's neighbours too: measured on a
    40960² slide, 25 chunks predicted for 11 with tissue.)"""
    y0, x0, h, w = box
    fy, fx = tissue.shape[0] / shape[0], tissue.shape[1] / shape[1]
    ty0, tx0 = math.ceil(y0 * fy - 0.5), math.ceil(x0 * fx - 0.5)
    ty1 = max(ty0 + 1, math.ceil((y0 + h) * fy - 0.5))
    tx1 = max(tx0 + 1, math.ceil((x0 + w) * fx - 0.5))
    return bool(tissue[ty0:ty1, tx0:tx1].mean() > MIN_TISSUE)


def load_ensemble(
    models_dir: str | Path, ensemble_yaml: str | Path, inference: InferenceConfig
) -> tuple[Predictor, EnsembleConfig]:
    """A pipeline's trained ensemble: ``data/ensemble.yaml`` and every fold of its members
    under ``models/`` (the folds each member was trained on, found on disk)."""
    config = EnsembleConfig.load(ensemble_yaml)
    members = []
    for name, weight in config.members.items():
        folds = sorted((Path(models_dir) / name).glob("fold*"))
        if not folds:
            raise DataError(f"{Path(models_dir) / name}: no fold checkpoints of member {name!r}")
        members += [(f, weight / len(folds)) for f in folds]
    return Predictor.from_checkpoints(members, inference), config


# ------------------------------------------------------------------------------ writing


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
                tiles(arr), shape=arr.shape, dtype=np.uint8, tile=(BLOCK, BLOCK),
                compression="zlib", photometric="minisblack",
                resolution=(res * scale, res * scale), resolutionunit="CENTIMETER",
                **({"subifds": len(levels) - 1} if k == 0 else {"subfiletype": 1}),
            )  # fmt: skip


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


def write_outputs(
    result: SlideResult, levels: list[Any], thumb: np.ndarray, out_dir: Path, organ: str,
    want_rle: bool,
) -> None:  # fmt: skip
    stem = result.path.name.split(".")[0]
    paths = {
        "mask": out_dir / f"{stem}.mask.tif",
        "geojson": out_dir / f"{stem}.geojson",
        "overlay": out_dir / f"{stem}.overlay.png",
    }
    write_mask_tiff(paths["mask"], levels, result.pixel_size)
    props = {"organ": organ, "source_image": result.path.name}
    write_geojson(paths["geojson"], result.polygons, props)
    small = min(levels, key=lambda a: abs(a.shape[1] - thumb.shape[1]))
    with atomic_path(paths["overlay"]) as tmp:  # tmp keeps the .png suffix cv2 goes by
        if not cv2.imwrite(str(tmp), overlay(thumb, small)):
            raise DataError(f"{paths['overlay']}: could not write the overlay")
    if want_rle:
        paths["rle"] = out_dir / f"{stem}.csv"
        encoded = rle.encode(np.asarray(levels[0][:]) > 0)
        table = pd.DataFrame({"id": [stem], "rle": [encoded]})
        with atomic_path(paths["rle"]) as tmp:
            table.to_csv(tmp, index=False)
    result.outputs.update({k: str(v) for k, v in paths.items()})
    with atomic_path(out_dir / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(result.summary(), indent=1) + "\n")


def predict_slide(
    path: str | Path,
    predictor: Predictor,
    ensemble: EnsembleConfig,
    organ: str,
    out_dir: str | Path,
    pixel_size: float | None = None,
    chunk: int = 4096,
    detect_tissue: bool = True,
    want_rle: bool | None = None,
    show_progress: bool = True,
    want_prob: bool = False,
) -> SlideResult:
    """Predict one image or slide and write its outputs to ``out_dir`` (see the module doc).
    ``pixel_size`` overrides the file's metadata; one of them must say it."""
    if chunk % BLOCK or chunk <= 0:
        raise ValueError(f"chunk must be a positive multiple of {BLOCK}, got {chunk}")
    started = time.perf_counter()
    slide = open_slide(path)
    try:
        um = pixel_size or slide.pixel_size
        if not um or um <= 0:
            raise DataError(
                f"{path}: no pixel size in its metadata; give it with --pixel-size (µm/px)"
            )
        H, W = slide.shape
        if want_rle is None:
            want_rle = H * W / 1e6 <= RLE_AUTO_MEGAPIXELS
        downsample = max(max(H, W) / THUMBNAIL_MAX, 1.0)
        thumb = slide.thumbnail(downsample)
        tissue = tissue_mask(thumb) if detect_tissue else None
        threshold = ensemble.threshold(organ)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".predict-", dir=out_dir))
        try:
            level0 = new_mask_array(scratch / "level0", (H, W))
            prob0 = new_mask_array(scratch / "prob" / "level0", (H, W)) if want_prob else None
            polygons, chunks, skipped = predict_chunks(
                slide, predictor, threshold, organ, um, level0, chunk, tissue, show_progress, prob0
            )
            result = SlideResult(Path(path), (H, W), um, chunks, skipped, polygons)
            levels = mask_pyramid(level0, scratch)
            result.seconds = time.perf_counter() - started
            if prob0 is not None:
                stem = Path(path).name.split(".")[0]
                prob_path = out_dir / f"{stem}.prob.tif"
                write_mask_tiff(prob_path, mask_pyramid(prob0, scratch / "prob"), um)
                result.outputs["probability"] = str(prob_path)
            write_outputs(result, levels, thumb, out_dir, organ, want_rle)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        slide.close()
    return result
