"""Offline stain-augmented copies of the prepared training images (the ``stain`` stage).

HPA training images are DAB + hematoxylin; the HuBMAP test images are H&E or PAS. For each
prepared training image the stage writes ``copies`` recoloured versions: staintools' Vahadane or
Macenko ``StainAugmentor`` (the stain matrix fitted once per image, each copy perturbing the
stain concentrations), or with ``method: recolour`` the HPA image recomposed in the test domain's
stains, H&E or PAS (:mod:`ftuseg.domain.recolour`). DVC caches them, so training never pays for
the fit again; the dataset draws a copy instead of the original with ``stain_copy_prob``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import track

from ftuseg.core.errors import DataError
from ftuseg.core.layout import COPIES_DIR, INDEX_NAME, copy_path
from ftuseg.core.organs import check_organs
from ftuseg.core.utils import atomic_path
from ftuseg.data.prepare import load_prepared, read_index
from ftuseg.domain.recolour import RecolourConfig, recolour_copies
from ftuseg.domain.references import deterministic, numpy_global_seed, seed_for

AUGMENT_METHODS = ("vahadane", "macenko", "recolour")


@dataclass(frozen=True)
class StainAugmentConfig:
    """The ``stain.augment`` settings of the offline stain stage."""

    method: str = "vahadane"  # vahadane | macenko (own stains perturbed) | recolour (H&E/PAS)
    copies: int = 4  # recoloured copies per training image
    sigma1: float = 0.4  # stain concentrations scaled by U(1 - sigma1, 1 + sigma1)
    sigma2: float = 0.4  # ... and shifted by U(-sigma2, sigma2) (vahadane, macenko)
    luminosity: bool = True  # LuminosityStandardizer before fitting (vahadane, macenko)
    seed: int = 2022
    # recolour: copy k in targets[k % len(targets)]: he | pas, or he-h | pas-h (the image
    # reduced to its hematoxylin, drawn in that reference's hematoxylin)
    targets: tuple[str, ...] = ("he", "pas")
    # recolour: per organ, other targets than ``targets`` (e.g. {kidney: [pas]}: every copy in
    # the stain the organ's HuBMAP images have, none in one it never meets).
    organ_targets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dab_share: float = 0.5  # recolour: the counterstain's share of the DAB map

    def targets_for(self, organ: str | None) -> tuple[str, ...]:
        """The recolour targets of an image of ``organ`` (``targets`` unless it has its own)."""
        return tuple(self.organ_targets.get(organ, self.targets))

    def recolour_config(self, organ: str | None = None) -> RecolourConfig:
        return RecolourConfig(self.targets_for(organ), self.dab_share, self.sigma1)

    def __post_init__(self) -> None:
        if self.method not in AUGMENT_METHODS:
            raise DataError(
                f"stain.augment.method must be one of {', '.join(AUGMENT_METHODS)}, "
                f"not {self.method!r}"
            )
        if self.copies < 0:
            raise DataError(f"stain.augment.copies must be >= 0, got {self.copies}")
        check_organs(self.organ_targets, "stain.augment.organ_targets")
        if self.organ_targets and self.method != "recolour":
            raise DataError(
                "stain.augment.organ_targets picks recolour targets: it needs "
                f"stain.augment.method recolour, not {self.method!r}"
            )
        if self.method == "recolour":
            for organ in (None, *self.organ_targets):  # validates targets, dab_share and sigma1
                self.recolour_config(organ)


def stain_copies(
    image: np.ndarray,
    cfg: StainAugmentConfig,
    seed: int,
    label: str = "image",
    organ: str | None = None,
) -> tuple[list[np.ndarray], float, float]:
    """``cfg.copies`` recoloured versions of ``image`` (an image of ``organ``: recolour picks the
    organ's targets); returns them with the fit time and the mean time per copy (seconds)."""
    if cfg.method == "recolour":
        started = time.perf_counter()
        rng = np.random.default_rng(seed)
        copies = recolour_copies(image, cfg.recolour_config(organ), cfg.copies, rng, label)
        return copies, 0.0, (time.perf_counter() - started) / max(1, cfg.copies)
    import staintools

    started = time.perf_counter()
    src = np.ascontiguousarray(image, dtype=np.uint8)
    with numpy_global_seed(seed):
        if cfg.luminosity:
            src = staintools.LuminosityStandardizer.standardize(src)
        augmentor = deterministic(
            staintools.StainAugmentor(
                method=cfg.method, sigma1=cfg.sigma1, sigma2=cfg.sigma2, augment_background=False
            ),
            cfg.method,
        )
        try:
            augmentor.fit(src)
        except Exception as exc:
            raise DataError(f"{label}: cannot fit {cfg.method} stains ({exc})") from None
        fitted = time.perf_counter()
        copies = [np.clip(augmentor.pop(), 0, 255).astype(np.uint8) for _ in range(cfg.copies)]
    done = time.perf_counter()
    return copies, fitted - started, (done - fitted) / max(1, cfg.copies)


def run_stain_stage(
    prepared_dir: str | Path, out_dir: str | Path, cfg: StainAugmentConfig
) -> pd.DataFrame:
    """Write the stain-augmented copies of every prepared training image (one .npy per copy)
    and ``index.csv`` (id, copy, file, size); atomically, all or nothing. Returns the index with
    the fit and per-copy seconds added: timings stay out of the output folder, so its content
    (and the hash DVC records for it) is the same on every run."""
    index = read_index(prepared_dir)
    rows = []
    with atomic_path(out_dir, is_dir=True) as tmp:
        (tmp / COPIES_DIR).mkdir()
        organs = dict(zip(index["id"], index["organ"], strict=True))
        for image_id in track(index["id"].tolist(), description=f"stain: {cfg.method} copies"):
            image, _ = load_prepared(prepared_dir, image_id)
            label = f"{prepared_dir}/images/{image_id}"
            copies, fit_s, copy_s = stain_copies(
                image, cfg, seed_for(cfg.seed, image_id), label, organs[image_id]
            )
            for k, copy in enumerate(copies):
                path = copy_path(tmp, image_id, k)
                np.save(path, np.ascontiguousarray(copy))
                rows.append(
                    {
                        "id": image_id,
                        "copy": k,
                        "file": path.relative_to(tmp).as_posix(),
                        "height": image.shape[0],
                        "width": image.shape[1],
                        "fit_s": round(fit_s, 4),
                        "copy_s": round(copy_s, 4),
                    }
                )
        columns = ["id", "copy", "file", "height", "width"]
        table = pd.DataFrame(rows, columns=[*columns, "fit_s", "copy_s"])
        table[columns].to_csv(tmp / INDEX_NAME, index=False)
    return table


def copy_timing(table: pd.DataFrame) -> dict[str, float]:
    """Images, copies and mean seconds per image fit and per copy, from
    :func:`run_stain_stage`'s table (``metrics/stain.json``)."""
    per_image = table.groupby("id")[["fit_s", "copy_s"]].first()
    return {
        "images": len(per_image),
        "copies": len(table),
        "fit_seconds_per_image": round(float(per_image["fit_s"].mean()), 4) if len(table) else 0,
        "seconds_per_copy": round(float(per_image["copy_s"].mean()), 4) if len(table) else 0,
    }


def copy_files(stain_dir: str | Path, ids: list[str]) -> dict[str, list[Path]]:
    """The stain copies of ``ids`` (RGB uint8 ``.npy`` files of a stain stage output folder),
    checked to exist and to hold (H, W, 3) uint8 arrays. Every id must have at least one copy:
    training that asks for copies never silently trains without."""
    index_path = Path(stain_dir) / INDEX_NAME
    if not index_path.is_file():
        raise DataError(f"{index_path}: not found (run the stain stage)")
    table = pd.read_csv(index_path, dtype={"id": str})
    missing = sorted(set(ids) - set(table["id"]))
    if missing:
        raise DataError(
            f"{index_path}: no stain copies of image(s) {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} (re-run the stain stage on these prepared "
            "images, or set train.stain_copy_prob: 0 when stain.augment.copies is 0)"
        )
    out: dict[str, list[Path]] = {i: [] for i in ids}
    for row in table[table["id"].isin(ids)].sort_values(["id", "copy"]).itertuples(index=False):
        path = Path(stain_dir) / row.file
        try:
            image = np.load(path, mmap_mode="r", allow_pickle=False)  # reads the header only
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read stain copy ({exc})") from None
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"{path}: not an (H, W, 3) uint8 stain copy")
        out[row.id].append(path)
    return out
