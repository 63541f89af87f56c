"""Stain handling with staintools: offline stain-augmented copies, normalisation to a reference.

HPA training images are DAB + hematoxylin; the HuBMAP test images are H&E or PAS. Two remedies:

- :func:`run_stain_stage` writes, for each prepared training image, ``copies`` recoloured
  versions (staintools' Vahadane or Macenko ``StainAugmentor``: the stain matrix is fitted once
  per image, each copy perturbs the stain concentrations). DVC caches them, so training never pays
  for the fit again; the dataset draws a copy instead of the original with ``stain_copy_prob``.
  ``method: recolour`` instead recomposes each HPA image in the test domain's stains, H&E or
  PAS (:mod:`ftuseg.recolour`), so the model sees target-like colours.
- :class:`StainNormalizer` maps an image's stains onto a reference (Vahadane, Macenko or
  Reinhard), identically in training and at inference; the reference H&E and PAS images
  published by the competition's hosts ship in ``assets/stain_references``.
  :func:`run_normalize_stage` applies it once per training image and copy (a cached DVC output
  that training memory-maps).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd
from rich.progress import track

from .errors import DataError
from .prepare import load_prepared, prepared_path, read_index
from .utils import atomic_path, read_json, write_json

if TYPE_CHECKING:
    from .recolour import RecolourConfig

log = logging.getLogger(__name__)

REFERENCES = {"he": "HE-Stain-10x.jpg", "pas": "PAS-staining.jpg"}
NO_TISSUE_POLICIES = ("error", "keep")
NORMALIZE_METHODS = ("none", "od", "vahadane", "macenko", "reinhard")
AUGMENT_METHODS = ("vahadane", "macenko", "recolour")
INDEX_NAME = "index.csv"
COPIES_DIR = "copies"


@contextlib.contextmanager
def numpy_global_seed(seed: int) -> Iterator[None]:
    """staintools draws from NumPy's global generator: seed it for a block, then restore it."""
    state = np.random.get_state()  # noqa: NPY002 (the legacy global is what staintools reads)
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _seed_for(seed: int, image_id: str) -> int:
    # One stream per image, independent of the order images are processed in.
    entropy = [seed, *image_id.encode()]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def reference_image(name: str) -> np.ndarray:
    """A bundled reference (``he`` or ``pas``) or an image file path, as RGB uint8."""
    if name in REFERENCES:
        ref = resources.files("ftuseg") / "assets" / "stain_references" / REFERENCES[name]
        data = np.frombuffer(ref.read_bytes(), np.uint8)
        source = f"ftuseg/assets/stain_references/{REFERENCES[name]}"
    else:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"{path}: stain reference image not found (or use he / pas)")
        data, source = np.fromfile(path, np.uint8), str(path)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{source}: cannot decode the stain reference image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------- deterministic Vahadane

VAHADANE_ITERATIONS = 200


class DeterministicVahadaneExtractor:
    """staintools' Vahadane stain-matrix estimation with a fixed amount of work.

    staintools calls ``spams.trainDL`` with its default ``iter=-1``, which SPAMS reads as "learn
    for one second": the stain matrix then depends on machine speed and load, and two runs with
    the same seed differ. Here: a fixed number of iterations on one thread (deterministic, and
    ~20× faster: 0.06 s instead of 1 s per image). Same luminosity mask, regulariser and H/E
    ordering as staintools.
    """

    @staticmethod
    def get_stain_matrix(
        image: np.ndarray, luminosity_threshold: float = 0.8, regularizer: float = 0.1
    ) -> np.ndarray:
        import spams
        from staintools.miscellaneous.miscellaneous_functions import normalize_matrix_rows
        from staintools.miscellaneous.optical_density_conversion import convert_RGB_to_OD
        from staintools.tissue_masks.luminosity_threshold_tissue_locator import (
            LuminosityThresholdTissueLocator,
        )

        tissue = LuminosityThresholdTissueLocator.get_tissue_mask(
            image, luminosity_threshold=luminosity_threshold
        ).reshape(-1)
        od = convert_RGB_to_OD(image).reshape(-1, 3)[tissue]
        dictionary = spams.trainDL(
            X=np.asfortranarray(od.T), K=2, lambda1=regularizer, mode=2, modeD=0,
            posAlpha=True, posD=True, verbose=False, iter=VAHADANE_ITERATIONS, numThreads=1,
        ).T  # fmt: skip
        if dictionary[0, 0] < dictionary[1, 0]:  # hematoxylin first
            dictionary = dictionary[[1, 0], :]
        return normalize_matrix_rows(dictionary)


def _deterministic(tool: object, method: str) -> object:
    if method == "vahadane":
        tool.extractor = DeterministicVahadaneExtractor  # type: ignore[attr-defined]
    return tool


# ---------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class NormalizeConfig:
    """The ``stain.normalize`` settings; stored in checkpoints so inference repeats them."""

    # none | od (optical density scaled to the reference's: thickness) | vahadane | macenko |
    # reinhard
    method: str = "none"
    reference: str = "he"  # he | pas | an image path
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
        if self.no_tissue not in NO_TISSUE_POLICIES:
            raise DataError(
                f"stain.normalize.no_tissue must be one of {', '.join(NO_TISSUE_POLICIES)}, "
                f"not {self.no_tissue!r}"
            )


class StainNormalizer:
    """Callable mapping RGB uint8 images onto the reference's stains (identity for ``none``).

    An image without detectable tissue (staintools finds an empty tissue mask) is an error
    naming ``label``, or with ``no_tissue: keep`` returned unchanged with a warning.
    """

    def __init__(self, cfg: NormalizeConfig) -> None:
        self.cfg = cfg
        self._normalizer = None
        self._density: float | None = None
        if cfg.method == "none":
            return
        if cfg.method == "od":
            from .optics import tissue_density_top

            label = f"stain reference {cfg.reference!r}"
            self._density = tissue_density_top(reference_image(cfg.reference), label)
            return
        import staintools

        target = reference_image(cfg.reference)
        if cfg.luminosity:
            target = staintools.LuminosityStandardizer.standardize(target)
        if cfg.method == "reinhard":
            self._normalizer = staintools.ReinhardColorNormalizer()
        else:
            self._normalizer = _deterministic(staintools.StainNormalizer(cfg.method), cfg.method)
        try:
            self._normalizer.fit(target)
        except (AssertionError, ValueError) as exc:  # staintools asserts on bad optical density
            raise DataError(
                f"stain reference {cfg.reference!r}: staintools cannot fit {cfg.method} to it "
                f"({exc}); vahadane and reinhard fit both bundled references"
            ) from None

    @property
    def enabled(self) -> bool:
        return self._normalizer is not None or self._density is not None

    def __call__(self, image: np.ndarray, label: str = "image") -> np.ndarray:
        if self._density is not None:
            from .optics import NoTissueError, standardize_density

            try:
                return standardize_density(image, self._density, label)
            except NoTissueError:
                return self._without_tissue(image, label, "standardise its optical density")
        if self._normalizer is None:
            return image
        import staintools

        src = np.ascontiguousarray(image, dtype=np.uint8)
        if self.cfg.luminosity:
            src = staintools.LuminosityStandardizer.standardize(src)
        try:
            with numpy_global_seed(0):
                return np.clip(self._normalizer.transform(src), 0, 255).astype(np.uint8)
        except Exception as exc:  # staintools raises bare exceptions on tissue-free images
            if "tissue" not in str(exc).lower():
                raise
            return self._without_tissue(image, label, "normalise its stains")

    def _without_tissue(self, image: np.ndarray, label: str, what: str) -> np.ndarray:
        """The ``no_tissue`` policy: a DataError naming ``label``, or ``image`` as it is."""
        if self.cfg.no_tissue == "error":
            raise DataError(
                f"{label}: no tissue found, cannot {what} (set stain.normalize.no_tissue: keep "
                "to pass such images on un-normalised)"
            ) from None
        log.warning("%s: no tissue found, passed on un-normalised (no_tissue: keep)", label)
        return image


# ---------------------------------------------------------------------------- augmented copies


@dataclass(frozen=True)
class StainAugmentConfig:
    """The ``stain.augment`` settings of the offline stain stage."""

    method: str = "vahadane"  # vahadane | macenko (own stains perturbed) | recolour (H&E/PAS)
    copies: int = 4  # recoloured copies per training image
    sigma1: float = 0.4  # stain concentrations scaled by U(1 - sigma1, 1 + sigma1)
    sigma2: float = 0.4  # ... and shifted by U(-sigma2, sigma2) (vahadane, macenko)
    luminosity: bool = True  # LuminosityStandardizer before fitting (vahadane, macenko)
    seed: int = 2022
    targets: tuple[str, ...] = ("he", "pas")  # recolour: copy k in targets[k % len(targets)]
    dab_share: float = 0.5  # recolour: the counterstain's share of the DAB map

    def recolour_config(self) -> RecolourConfig:
        # Imported here: the kernel and inference import this module, never the recolouring.
        from .recolour import RecolourConfig

        return RecolourConfig(tuple(self.targets), self.dab_share, self.sigma1)

    def __post_init__(self) -> None:
        if self.method not in AUGMENT_METHODS:
            raise DataError(
                f"stain.augment.method must be one of {', '.join(AUGMENT_METHODS)}, "
                f"not {self.method!r}"
            )
        if self.copies < 0:
            raise DataError(f"stain.augment.copies must be >= 0, got {self.copies}")
        if self.method == "recolour":
            self.recolour_config()  # validates targets, dab_share and sigma1


def stain_copies(
    image: np.ndarray, cfg: StainAugmentConfig, seed: int, label: str = "image"
) -> tuple[list[np.ndarray], float, float]:
    """``cfg.copies`` recoloured versions of ``image``; returns them with the fit time and the
    mean time per copy (seconds)."""
    if cfg.method == "recolour":
        started = time.perf_counter()
        from .recolour import recolour_copies

        rng = np.random.default_rng(seed)
        copies = recolour_copies(image, cfg.recolour_config(), cfg.copies, rng, label)
        return copies, 0.0, (time.perf_counter() - started) / max(1, cfg.copies)
    import staintools

    started = time.perf_counter()
    src = np.ascontiguousarray(image, dtype=np.uint8)
    with numpy_global_seed(seed):
        if cfg.luminosity:
            src = staintools.LuminosityStandardizer.standardize(src)
        augmentor = _deterministic(
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


def copy_path(stain_dir: str | Path, image_id: str, k: int) -> Path:
    """One recoloured copy, (H, W, 3) uint8 RGB as .npy: training memory-maps it, so a crop
    reads only its own rows."""
    return Path(stain_dir) / COPIES_DIR / f"{image_id}_{k}.npy"


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
        for image_id in track(index["id"].tolist(), description=f"stain: {cfg.method} copies"):
            image, _ = load_prepared(prepared_dir, image_id)
            copies, fit_s, copy_s = stain_copies(
                image, cfg, _seed_for(cfg.seed, image_id), f"{prepared_dir}/images/{image_id}"
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


# ---------------------------------------------------------------------------- cached normalisation

NORMALIZED_DIR = "normalized"
NORMALIZE_CONFIG_NAME = "normalize.json"


def normalized_path(norm_dir: str | Path, image_id: str, k: int | None = None) -> Path:
    """The normalised prepared image (``k`` None) or its ``k``-th normalised stain copy."""
    name = image_id if k is None else f"{image_id}_{k}"
    return Path(norm_dir) / NORMALIZED_DIR / f"{name}.npy"


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
                    np.save(out, normalizer(np.load(source), str(source)))
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
