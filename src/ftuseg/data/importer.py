"""``ftuseg import``: bring your own annotated images into the competition layout.

Reads an image folder and its annotations, one annotation per image with the same file stem:

- ``masks``: binary or instance-labelled masks (PNG, TIFF, BMP; every non-zero pixel is FTU),
- ``polygons``: the competition's polygon JSON (``[[x, y], ...]`` per polygon),
- ``geojson``: GeoJSON as QuPath exports it (optionally one classification only),

and writes ``train.csv`` (column-major RLE, the competition's format) and
``train_images/<id>.tiff``, validated by the data contract (:mod:`ftuseg.data.contract`) before anything
appears at the destination. Organ, pixel size, thickness and data source come from the command
line or per image from a metadata CSV (column ``id`` plus any of those, and ``group``: images
of one group, e.g. overlapping tiles of one slide, share a fold). Any problem is an error
naming the file; the destination is written atomically, so nothing is left half-done.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import tifffile
from rich.progress import track

from ftuseg.core import rle
from ftuseg.core.errors import DataError
from ftuseg.core.organs import ORGANS
from ftuseg.core.utils import atomic_path
from ftuseg.data.annotations import checked_polygons, rasterise, read_geojson, read_polygon_json
from ftuseg.data.contract import (
    GROUP,
    TEST_COLUMNS,
    read_image,
    read_metadata,
    to_rgb_uint8,
    write_image,
)
from ftuseg.data.overlap import OverlapConfig, find_overlaps, overlap_groups, thumbnail

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
FORMATS = ("masks", "polygons", "geojson")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# `group`: images that must share a fold (tiles of one slide cut with overlap, one patient's).
META_FIELDS = ("organ", "pixel_size", "tissue_thickness", "data_source", GROUP)


@dataclass(frozen=True)
class ImportDefaults:
    """Per-image metadata where the metadata CSV gives none."""

    organ: str | None = None
    pixel_size: float | None = None  # µm/px
    tissue_thickness: float | None = None  # µm
    data_source: str = "Import"
    group: str | None = None  # none: every image its own group


def read_any_image(path: Path) -> np.ndarray:
    """An RGB uint8 image from TIFF (tifffile) or PNG/JPEG/BMP (OpenCV)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        return read_image(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"{path}: unreadable image")
    if img.ndim == 3:  # OpenCV reads BGR(A)
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return to_rgb_uint8(img, str(path))


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A 0/1 mask from a binary or instance-labelled mask file (non-zero = FTU)."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            mask = tifffile.imread(path)
        else:
            mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except Exception as err:  # tifffile raises many types for corrupt input
        raise DataError(f"{path}: unreadable mask ({type(err).__name__}: {err})") from None
    if mask is None:
        raise DataError(f"{path}: unreadable mask")
    if mask.ndim == 3:
        # An RGB(A)-saved label image is only unambiguous when its colour planes agree.
        if not all(
            np.array_equal(mask[..., 0], mask[..., c]) for c in range(1, min(3, mask.shape[2]))
        ):
            raise DataError(
                f"{path}: colour mask; expected one channel (binary or instance labels)"
            )
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise DataError(f"{path}: mask has shape {mask.shape}; expected (H, W)")
    if mask.shape != shape:
        raise DataError(
            f"{path}: mask is {mask.shape[0]}x{mask.shape[1]} but its image is {shape[0]}x{shape[1]}"
        )
    return (mask != 0).astype(np.uint8)


def find_pairs(
    images_dir: Path, annotations_dir: Path, fmt: str, suffix: str = ""
) -> list[tuple[str, Path, Path]]:
    """``(id, image, annotation)`` per image; the annotation has the image's stem + ``suffix``.
    Images without an annotation and annotations without an image are errors."""
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: image folder not found")
    if not annotations_dir.is_dir():
        raise DataError(f"{annotations_dir}: annotation folder not found")
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    kinds = {"masks": MASK_SUFFIXES, "polygons": (".json",), "geojson": (".geojson", ".json")}
    annotations = {p.stem: p for p in annotations_dir.iterdir() if p.suffix.lower() in kinds[fmt]}
    seen: dict[str, Path] = {}
    pairs = []
    for image in images:
        image_id = image.stem
        if not ID_PATTERN.match(image_id):
            raise DataError(
                f"{image}: file name {image_id!r} is not a usable id (letters, digits, _ . -)"
            )
        if image_id in seen:
            raise DataError(f"{image}: same id as {seen[image_id]}")
        seen[image_id] = image
        annotation = annotations.pop(image_id + suffix, None)
        if annotation is None:
            raise DataError(
                f"{image}: no annotation {image_id}{suffix}.* ({'/'.join(kinds[fmt])}) in "
                f"{annotations_dir}"
            )
        pairs.append((image_id, image, annotation))
    leftover = sorted(str(p) for p in annotations.values() if p.stem.endswith(suffix))
    if leftover:
        raise DataError(f"{leftover[0]}: annotation without an image in {images_dir}")
    return pairs


def read_meta(path: Path | None) -> dict[str, dict]:
    if path is None:
        return {}
    if not path.is_file():
        raise DataError(f"{path}: metadata CSV not found")
    table = pd.read_csv(path, dtype={"id": str})
    if "id" not in table.columns:
        raise DataError(f"{path}: needs an id column")
    unknown = set(table.columns) - {"id", *META_FIELDS}
    if unknown:
        raise DataError(f"{path}: unknown column(s) {sorted(unknown)} (known: {META_FIELDS})")
    if table["id"].duplicated().any():
        raise DataError(
            f"{path}: duplicate id(s) {table.loc[table['id'].duplicated(), 'id'].tolist()}"
        )
    return {
        r["id"]: {k: v for k, v in r.items() if k != "id" and pd.notna(v)}
        for r in table.to_dict("records")
    }


def row_meta(image_id: str, meta: dict[str, dict], defaults: ImportDefaults, where: Path) -> dict:
    values = {**{k: getattr(defaults, k) for k in META_FIELDS}, **meta.get(image_id, {})}
    missing = [k for k in ("organ", "pixel_size", "tissue_thickness") if values.get(k) is None]
    if missing:
        raise DataError(
            f"{where}: no {', '.join(missing)} (give --{missing[0].replace('_', '-')} or a metadata CSV row)"
        )
    if values["organ"] not in ORGANS:
        raise DataError(f"{where}: organ {values['organ']!r} is not one of {ORGANS}")
    return values


def annotation_mask(
    fmt: str, path: Path, shape: tuple[int, int], class_name: str | None
) -> np.ndarray:
    where = str(path)
    readers: dict[str, Callable[[], np.ndarray]] = {
        "masks": lambda: read_mask(path, shape),
        "polygons": lambda: rasterise(
            checked_polygons(read_polygon_json(path), where, shape), shape
        ),
        "geojson": lambda: rasterise(
            checked_polygons(read_geojson(path, class_name), where, shape), shape
        ),
    }
    return readers[fmt]()


def import_dataset(
    fmt: str,
    images_dir: str | Path,
    annotations_dir: str | Path,
    out_dir: str | Path,
    defaults: ImportDefaults,
    *,
    meta_csv: str | Path | None = None,
    suffix: str = "",
    class_name: str | None = None,
    overwrite: bool = False,
    group_overlaps: OverlapConfig | None = None,
) -> pd.DataFrame:
    """Convert a folder of annotated images into the competition layout at ``out_dir``;
    returns the written ``train.csv`` table. With ``group_overlaps``, images that share pixels
    are found (:mod:`ftuseg.data.overlap`), given one ``group`` each and listed in
    ``overlaps.csv``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise DataError(f"{out_dir}: exists already (choose another folder, or --overwrite)")
    pairs = find_pairs(Path(images_dir), Path(annotations_dir), fmt, suffix)
    meta = read_meta(Path(meta_csv) if meta_csv else None)
    extra = sorted(set(meta) - {i for i, _, _ in pairs})
    if extra:
        raise DataError(f"{meta_csv}: row(s) for id(s) without an image: {extra[:5]}")
    if group_overlaps and any(GROUP in m for m in meta.values()):
        raise DataError(f"{meta_csv}: groups given and asked to be found; choose one")
    rows, negatives, thumbs = [], [], {}
    with atomic_path(out_dir, is_dir=True) as tmp:
        (tmp / "train_images").mkdir()
        for image_id, image_path, annotation in track(pairs, description=f"import {fmt}"):
            values = row_meta(image_id, meta, defaults, image_path)
            img = read_any_image(image_path)
            mask = annotation_mask(fmt, annotation, img.shape[:2], class_name)
            if not mask.any():  # a negative tile: kept, with an empty RLE
                negatives.append(image_id)
            write_image(tmp / "train_images" / f"{image_id}.tiff", img)
            if group_overlaps:
                thumbs[image_id] = thumbnail(img, group_overlaps.scale)
            rows.append(
                {
                    "id": image_id,
                    "organ": values["organ"],
                    "data_source": values["data_source"],
                    "img_height": img.shape[0],
                    "img_width": img.shape[1],
                    "pixel_size": float(values["pixel_size"]),
                    "tissue_thickness": float(values["tissue_thickness"]),
                    "rle": rle.encode(mask),
                    GROUP: values.get(GROUP),
                }
            )
        if group_overlaps:
            found_groups(rows, thumbs, group_overlaps, tmp / "overlaps.csv")
        grouped = any(r[GROUP] is not None for r in rows)
        table = pd.DataFrame(rows, columns=[*TEST_COLUMNS, "rle", *([GROUP] if grouped else [])])
        table.to_csv(tmp / "train.csv", index=False)
        read_metadata(tmp / "train.csv", "train")  # the data contract, before anything lands
    if negatives:
        log.info("%d image(s) without FTUs, kept as negatives: %s", len(negatives), negatives[:10])
    return table


def found_groups(rows: list[dict], thumbs: dict, cfg: OverlapConfig, pairs_csv: Path) -> None:
    """Each image that shares pixels with another gets its overlap group (``overlap-<k>``);
    the pairs are written to ``pairs_csv``."""
    pairs = find_overlaps(thumbs, cfg)
    pairs.to_csv(pairs_csv, index=False)
    groups = overlap_groups(pairs, [r["id"] for r in rows])
    sizes = groups.value_counts()
    for r in rows:
        g = groups[r["id"]]
        r[GROUP] = f"overlap-{g}" if sizes[g] > 1 else None
    shared = int((groups.map(sizes) > 1).sum())
    log.info(
        "%d of %d images share pixels with another (%d pairs, %d groups): one fold per group",
        shared,
        len(rows),
        len(pairs),
        int((sizes > 1).sum()),
    )
