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
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from rich.progress import track
from shapely import unary_union
from shapely.geometry import Polygon

from ftuseg.core import rle
from ftuseg.core.errors import DataError
from ftuseg.core.scale import resize_image, scaled_shape
from ftuseg.core.utils import atomic_path
from ftuseg.data.annotations import mask_to_polygons, write_geojson
from ftuseg.infer.engine import InferenceConfig, Predictor
from ftuseg.infer.maps import postprocess, quantize, to_original
from ftuseg.infer.members import EnsembleConfig
from ftuseg.infer.slide_io import (
    BLOCK,
    THUMBNAIL_MAX,
    Slide,
    mask_pyramid,
    new_mask_array,
    open_slide,
    overlay,
    tissue_mask,
    write_mask_tiff,
)

RLE_AUTO_MEGAPIXELS = 100.0  # larger masks get an RLE only on request (it needs the whole mask)


# ------------------------------------------------------------------------------ reading


# ------------------------------------------------------------------------------ tissue


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
            scaled = predictor.normalize(scaled, "image", organ)
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


def write_outputs(
    result: SlideResult,
    levels: list[Any],
    thumb: np.ndarray,
    out_dir: Path,
    organ: str,
    want_rle: bool,
) -> None:
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
    *,
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
