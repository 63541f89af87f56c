"""Prepare stage: validate the raw training data, decode masks, resample to the training scale,
assign organ-stratified folds, and store one compressed file per image."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import track
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ftuseg.core.errors import DataError
from ftuseg.core.layout import IMAGES_DIR, INDEX_NAME, prepared_path
from ftuseg.core.scale import resize_image, resize_mask, scaled_shape
from ftuseg.core.utils import atomic_path
from ftuseg.data.contract import GROUP, decode_mask, image_path, read_image, read_metadata

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareConfig:
    um_per_px: float = 2.0  # common physical scale of the training images
    n_folds: int = 2
    seed: int = 2022


def assign_folds(
    organs: pd.Series, n_folds: int, seed: int, groups: pd.Series | None = None
) -> np.ndarray:
    """Fold index per row, stratified by organ (so every fold sees every organ); with
    ``groups``, the images of a group in one fold (tiles that share pixels, or one patient's:
    split apart, a model would be scored on what it trained on)."""
    if n_folds < 2:
        raise DataError(
            f"cv: at least 2 folds are needed for out-of-fold evaluation, got {n_folds}"
        )
    y = organs.to_numpy()
    if groups is None:
        counts, what = organs.value_counts(), "training image"
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    else:  # per organ, the groups holding any of its images
        counts, what = pd.Series(groups.to_numpy()).groupby(y).nunique(), "group"
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    if counts.min() < n_folds:
        raise DataError(
            f"cv: organ {counts.idxmin()!r} has {counts.min()} {what}(s), fewer than "
            f"the {n_folds} folds; use fewer folds or more {what}s"
        )
    folds = np.full(len(organs), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small classes are checked above
        for k, (_, val) in enumerate(splitter.split(np.zeros(len(organs)), y, groups)):
            folds[val] = k
    empty = [(o, k) for o in counts.index for k in range(n_folds) if not (y[folds == k] == o).any()]
    if empty:
        raise DataError(
            f"cv: fold {empty[0][1]} has no {empty[0][0]} image once groups are kept whole "
            f"(group sizes too uneven for {n_folds} folds); use fewer folds or smaller groups"
        )
    return folds


def load_array(
    prepared_dir: str | Path, image_id: str, array: str, mmap: bool = False
) -> np.ndarray:
    """One prepared array; with ``mmap`` a read-only memory map (pages are read on access)."""
    path = prepared_path(prepared_dir, image_id, array)
    if not path.is_file():
        raise DataError(f"{path}: prepared array missing (re-run the prepare stage)")
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def load_prepared(
    prepared_dir: str | Path, image_id: str, mmap: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask) of one prepared image, in memory or memory-mapped."""
    return (
        load_array(prepared_dir, image_id, "image", mmap),
        load_array(prepared_dir, image_id, "mask", mmap),
    )


def read_index(prepared_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(prepared_dir) / INDEX_NAME, dtype={"id": str})


def load_folds(prepared_dir: str | Path) -> list[int]:
    """The fold ids of a prepared dataset, sorted."""
    return sorted(int(f) for f in read_index(prepared_dir)["fold"].unique())


def prepare(raw_dir: str | Path, out_dir: str | Path, cfg: PrepareConfig) -> pd.DataFrame:
    """Run the prepare stage; returns the index that was written to ``out_dir/index.csv``."""
    raw_dir = Path(raw_dir)
    if cfg.um_per_px <= 0:
        raise DataError(f"prepare.um_per_px must be positive, got {cfg.um_per_px}")
    meta = read_metadata(raw_dir / "train.csv", "train")
    groups = meta[GROUP] if GROUP in meta.columns else None
    meta["fold"] = assign_folds(meta["organ"], cfg.n_folds, cfg.seed, groups)

    rows = []
    with atomic_path(out_dir, is_dir=True) as tmp:
        (tmp / IMAGES_DIR).mkdir()
        for row in track(
            list(meta.itertuples(index=False)), description="prepare: resample to training scale"
        ):
            where = f"{raw_dir / 'train.csv'}: row id={row.id}"
            mask = decode_mask(row.rle, (row.img_height, row.img_width), where)
            img = read_image(image_path(raw_dir, "train", row.id), (row.img_height, row.img_width))
            shape = scaled_shape(img.shape[:2], row.pixel_size, cfg.um_per_px)
            img_s, mask_s = resize_image(img, shape), resize_mask(mask, shape)
            for name, array in (
                ("image", img_s),
                ("mask", mask_s),
                ("ftu", np.flatnonzero(mask_s).astype(np.int64)),
            ):
                np.save(prepared_path(tmp, row.id, name), np.ascontiguousarray(array))
            rows.append(
                {
                    "id": row.id,
                    "organ": row.organ,
                    "data_source": row.data_source,
                    "pixel_size": row.pixel_size,
                    "tissue_thickness": row.tissue_thickness,
                    "img_height": row.img_height,
                    "img_width": row.img_width,
                    "height": shape[0],
                    "width": shape[1],
                    "ftu_fraction": round(float(mask_s.mean()), 5),
                    "fold": int(row.fold),
                    **({GROUP: getattr(row, GROUP)} if groups is not None else {}),
                }
            )
        index = pd.DataFrame(rows)
        index.to_csv(tmp / INDEX_NAME, index=False)
    log.info("prepared %d images at %.3g µm/px into %s", len(index), cfg.um_per_px, out_dir)
    return index
