"""Stain normalisation with staintools (or optical-density scaling): maps an image's stains onto
a reference (Vahadane, Macenko or Reinhard), identically in training and at inference. The
reference H&E and PAS images published by the competition's hosts ship in
``assets/stain_references``. :func:`run_normalize_stage` applies it once per training image and
stain copy (a cached DVC output that training memory-maps)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import track

from ftuseg.core.errors import DataError
from ftuseg.core.layout import (
    INDEX_NAME,
    NORMALIZE_CONFIG_NAME,
    NORMALIZED_DIR,
    normalized_path,
    prepared_path,
)
from ftuseg.core.organs import check_organs
from ftuseg.core.utils import atomic_path, read_json, write_json
from ftuseg.data.prepare import read_index
from ftuseg.domain.optics import NoTissueError, standardize_density, tissue_density_top
from ftuseg.domain.references import (
    REFERENCES,
    deterministic,
    numpy_global_seed,
    reference_image,
)

log = logging.getLogger(__name__)

NO_TISSUE_POLICIES = ("error", "keep")
NORMALIZE_METHODS = ("none", "od", "hematoxylin", "vahadane", "macenko", "reinhard")


BUNDLED_ONLY = ("hematoxylin",)  # methods that unmix with a bundled reference's stain vectors
# An organ reference that leaves the organ's images as they are (e.g. kidney, whose stain copies
# carry its stain handling, while the other organs are reduced to their hematoxylin).
UNCHANGED = "none"


@dataclass(frozen=True)
class NormalizeConfig:
    """The ``stain.normalize`` settings; stored in checkpoints so inference repeats them."""

    # none | od (optical density scaled to the reference's: thickness) | hematoxylin (the
    # hematoxylin alone, drawn in the reference's) | vahadane | macenko | reinhard
    method: str = "none"
    reference: str = "he"  # he | pas | an image path
    # Per organ, another reference than ``reference`` (e.g. {kidney: pas}: HuBMAP's kidney is
    # PAS, its other organs H&E), or none (that organ's images left as they are); images are
    # then normalised knowing their organ.
    organ_references: dict[str, str] = field(default_factory=dict)
    luminosity: bool = True  # staintools' LuminosityStandardizer (vahadane, macenko, reinhard)
    # An image in which staintools finds no tissue has no stain to normalise: "error" stops
    # with the image's name; "keep" passes it on un-normalised (with a warning naming it).
    no_tissue: str = "error"

    def __post_init__(self) -> None:
        if self.method not in NORMALIZE_METHODS:
            raise DataError(
                f"stain.normalize.method must be one of {', '.join(NORMALIZE_METHODS)}, "
                f"not {self.method!r}"
            )
        if self.reference == UNCHANGED:
            raise DataError(
                "stain.normalize.reference none: set stain.normalize.method none instead (a "
                "per-organ reference may be none)"
            )
        check_organs(self.organ_references, "stain.normalize.organ_references")
        if self.method in BUNDLED_ONLY:
            for name in self.references():
                if name not in REFERENCES:
                    raise DataError(
                        f"stain.normalize.method {self.method} unmixes with a bundled "
                        f"reference's stains: its references must be he or pas, not {name!r}"
                    )
        if self.no_tissue not in NO_TISSUE_POLICIES:
            raise DataError(
                f"stain.normalize.no_tissue must be one of {', '.join(NO_TISSUE_POLICIES)}, "
                f"not {self.no_tissue!r}"
            )

    def references(self) -> list[str]:
        """Every reference in use: the default one and the per-organ ones (not ``none``)."""
        return sorted({self.reference, *self.organ_references.values()} - {UNCHANGED})

    def reference_for(self, organ: str | None, label: str = "image") -> str:
        """The reference of an image of ``organ``; without per-organ references any organ's
        (also an unknown one), with them the organ must be known."""
        if not self.organ_references:
            return self.reference
        if organ is None:
            raise DataError(
                f"{label}: stain.normalize.organ_references is set, so the image's organ is "
                "needed to pick its stain reference (give the organ)"
            )
        return self.organ_references.get(organ, self.reference)


Fitted = Callable[[np.ndarray, str], np.ndarray]


def _fit(cfg: NormalizeConfig, reference: str) -> Fitted:
    """``cfg.method`` fitted to one reference: a function (image, label) -> image that raises
    NoTissueError on an image without tissue (staintools' own exception is translated)."""
    if cfg.method == "od":
        top = tissue_density_top(reference_image(reference), f"stain reference {reference!r}")
        return lambda image, label: standardize_density(image, top, label)
    if cfg.method == "hematoxylin":
        from ftuseg.domain.recolour import hematoxylin_only, target_stains

        stains = target_stains(reference)
        return lambda image, label: hematoxylin_only(image, stains, label)
    import staintools
    from staintools.miscellaneous.exceptions import TissueMaskException

    target = reference_image(reference)
    if cfg.luminosity:
        target = staintools.LuminosityStandardizer.standardize(target)
    if cfg.method == "reinhard":
        normalizer = staintools.ReinhardColorNormalizer()
    else:
        normalizer = deterministic(staintools.StainNormalizer(cfg.method), cfg.method)
    try:
        normalizer.fit(target)
    # staintools asserts on bad optical density, raises TissueMaskException without tissue
    except (AssertionError, ValueError, TissueMaskException) as exc:
        raise DataError(
            f"stain reference {reference!r}: staintools cannot fit {cfg.method} to it "
            f"({exc}); vahadane and reinhard fit both bundled references"
        ) from None

    def transform(image: np.ndarray, label: str) -> np.ndarray:
        src = np.ascontiguousarray(image, dtype=np.uint8)
        if cfg.luminosity:
            src = staintools.LuminosityStandardizer.standardize(src)
        try:
            with numpy_global_seed(0):
                return np.clip(normalizer.transform(src), 0, 255).astype(np.uint8)
        except TissueMaskException:  # the stain extractor's tissue mask is empty
            raise NoTissueError(f"{label}: no tissue found (staintools)") from None

    return transform


class StainNormalizer:
    """Callable mapping RGB uint8 images onto the reference's stains (identity for ``none``);
    with ``organ_references``, onto the reference of the image's organ.

    An image without detectable tissue (staintools finds an empty tissue mask) is an error
    naming ``label``, or with ``no_tissue: keep`` returned unchanged with a warning.
    """

    def __init__(self, cfg: NormalizeConfig) -> None:
        self.cfg = cfg
        self._fitted: dict[str, Fitted] = {}
        if cfg.method != "none":
            self._fitted = {name: _fit(cfg, name) for name in cfg.references()}

    @property
    def enabled(self) -> bool:
        return bool(self._fitted)

    def __call__(
        self, image: np.ndarray, label: str = "image", organ: str | None = None
    ) -> np.ndarray:
        reference = self.cfg.reference_for(organ, label) if self._fitted else UNCHANGED
        if reference == UNCHANGED:
            return image
        fitted = self._fitted[reference]
        try:
            return fitted(image, label)
        except NoTissueError:  # no tissue to measure or unmix
            return self._without_tissue(image, label)

    def _without_tissue(self, image: np.ndarray, label: str) -> np.ndarray:
        """The ``no_tissue`` policy: a DataError naming ``label``, or ``image`` as it is."""
        if self.cfg.no_tissue == "error":
            raise DataError(
                f"{label}: no tissue found, cannot apply stain normalisation {self.cfg.method} "
                "(set stain.normalize.no_tissue: keep to pass such images on un-normalised)"
            ) from None
        log.warning("%s: no tissue found, passed on un-normalised (no_tissue: keep)", label)
        return image


def run_normalize_stage(
    prepared_dir: str | Path,
    stain_dir: str | Path | None,
    out_dir: str | Path,
    cfg: NormalizeConfig,
) -> pd.DataFrame:
    """Normalise every prepared image, and every stain copy under ``stain_dir``, once: training
    memory-maps the results instead of normalising at start-up (Vahadane takes 1.7 s per 1500²
    image). Writes ``normalize.json`` (the settings) and ``index.csv`` (id, copy, file; copy -1
    is the image itself), atomically; with ``method: none`` only the settings and an empty
    index. Returns the index."""
    normalizer = StainNormalizer(cfg)
    index = read_index(prepared_dir)
    copies = (
        pd.read_csv(Path(stain_dir) / INDEX_NAME, dtype={"id": str})
        if normalizer.enabled and stain_dir is not None
        else pd.DataFrame(columns=["id", "copy", "file"])
    )
    organs = dict(zip(index["id"], index["organ"], strict=True))
    rows = []
    with atomic_path(out_dir, is_dir=True) as tmp:
        write_json(tmp / NORMALIZE_CONFIG_NAME, asdict(cfg))
        if normalizer.enabled:
            (tmp / NORMALIZED_DIR).mkdir()
            for image_id in track(index["id"].tolist(), description=f"normalize: {cfg.method}"):
                sources = [(-1, prepared_path(prepared_dir, image_id, "image"))] + [
                    (int(r.copy), Path(stain_dir) / r.file)  # type: ignore[arg-type]
                    for r in copies[copies["id"] == image_id].itertuples(index=False)
                ]
                for k, source in sources:
                    out = normalized_path(tmp, image_id, None if k < 0 else k)
                    np.save(out, normalizer(np.load(source), str(source), organs[image_id]))
                    rows.append(
                        {"id": image_id, "copy": k, "file": out.relative_to(tmp).as_posix()}
                    )
        table = pd.DataFrame(rows, columns=["id", "copy", "file"])
        table.to_csv(tmp / INDEX_NAME, index=False)
    return table


def normalized_files(
    norm_dir: str | Path, cfg: NormalizeConfig, ids: list[str], with_copies: bool
) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """The normalised images and stain copies of ``ids`` from a normalize stage output written
    with the same settings ``cfg`` (anything else is an error: the images would not be what the
    checkpoint records)."""
    config_path = Path(norm_dir) / NORMALIZE_CONFIG_NAME
    if not config_path.is_file():
        raise DataError(f"{config_path}: not found (run the normalize stage)")
    if read_json(config_path) != asdict(cfg):
        raise DataError(
            f"{config_path}: written with other stain.normalize settings than the ones given "
            f"({read_json(config_path)} vs {asdict(cfg)}); re-run the normalize stage"
        )
    table = pd.read_csv(Path(norm_dir) / INDEX_NAME, dtype={"id": str})
    images = {r.id: Path(norm_dir) / r.file for r in table[table["copy"] < 0].itertuples()}
    missing = sorted(set(ids) - set(images))
    if missing:
        raise DataError(f"{norm_dir}: no normalised image for {missing[:5]} (re-run normalize)")
    copies: dict[str, list[Path]] = {i: [] for i in ids}
    if with_copies:
        for r in (
            table[(table["copy"] >= 0) & table["id"].isin(ids)]
            .sort_values(["id", "copy"])
            .itertuples()
        ):
            copies[r.id].append(Path(norm_dir) / r.file)
    return images, copies
