"""Where the pipeline's stages read and write: the one place that names every stage folder and
every file inside one (``dvc.yaml`` declares the same folders; a test holds the two together).

:class:`Layout` gives the folders of one project (its root and ``data.raw_dir``); the functions
below name the files inside a stage folder, wherever that folder is (tests and ``dvc exp run
--temp`` use other roots). No stage or library module builds these paths itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftuseg.core.errors import DataError

INDEX_NAME = "index.csv"  # every stage folder's table of contents
IMAGES_DIR = "images"  # prepared arrays, unlabeled images
COPIES_DIR = "copies"  # stain copies
NORMALIZED_DIR = "normalized"  # stain-normalised images and copies
NORMALIZE_CONFIG_NAME = "normalize.json"  # the settings a normalize output was written with
COVERAGE_NAME = "coverage.yaml"  # in the OOF folder: model -> organs it covers (None = all)
# One prepared image is three uncompressed .npy files: a training crop memory-maps them and reads
# only its own rows, so a train stage's memory does not grow with the number of images.
ARRAYS = ("image", "mask", "ftu")


@dataclass(frozen=True)
class Layout:
    """The folders of one project: every stage output relative to ``root``, the raw data (the
    competition's layout: ``train.csv``, ``train_images/``, ``test.csv``, ``test_images/``) at
    ``raw`` and the unlabeled target-domain source at ``unlabeled_source``."""

    root: Path = Path(".")
    raw: Path = Path("data/raw")
    unlabeled_source: Path | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any], root: str | Path = ".") -> Layout:
        """The layout a params.yaml describes (group ``data``: ``raw_dir``, ``unlabeled_dir``)."""
        data = params.get("data")
        if not isinstance(data, Mapping) or "raw_dir" not in data:
            raise DataError("params.yaml: missing data.raw_dir")
        unlabeled = data.get("unlabeled_dir")
        return cls(Path(root), Path(data["raw_dir"]), Path(unlabeled) if unlabeled else None)

    def _at(self, relative: str) -> Path:
        return self.root / relative

    @property
    def sample(self) -> Path:
        return self._at("data/sample")

    @property
    def prepared(self) -> Path:
        return self._at("data/prepared")

    @property
    def stain(self) -> Path:
        return self._at("data/stain")

    @property
    def normalized(self) -> Path:
        return self._at("data/normalized")

    @property
    def unlabeled(self) -> Path:
        return self._at("data/unlabeled")

    @property
    def oof(self) -> Path:
        return self._at("data/oof")

    @property
    def ensemble(self) -> Path:
        return self._at("data/ensemble.yaml")

    @property
    def models(self) -> Path:
        return self._at("models")

    @property
    def checkpoints(self) -> Path:
        return self._at("checkpoints")

    @property
    def train_logs(self) -> Path:
        return self._at("logs/train")

    @property
    def metrics(self) -> Path:
        return self._at("metrics")

    @property
    def kernel(self) -> Path:
        return self._at("kaggle_kernel")

    @property
    def submission(self) -> Path:
        return self._at("submission.csv")

    @property
    def train_csv(self) -> Path:
        return self.raw / "train.csv"

    @property
    def test_csv(self) -> Path:
        return self.raw / "test.csv"

    def metric(self, name: str) -> Path:
        """A file under ``metrics/`` (``oof.json``, ``plots``, ``gallery``...)."""
        return self.metrics / name

    def model_dir(self, model: str, fold: int) -> Path:
        return checkpoint_dir(self.models, model, fold)

    def state_dir(self, model: str, fold: int) -> Path:
        """Resumable training state of one run (persisted by DVC, not cached)."""
        return self.checkpoints / model / f"fold{fold}"

    def log_dir(self, model: str, fold: int) -> Path:
        """dvclive's folder of one training run."""
        return self.train_logs / model / f"fold{fold}"


# ---------------------------------------------------------------------------- inside stage folders


def prepared_path(prepared_dir: str | Path, image_id: str, array: str) -> Path:
    """``images/<id>.<array>.npy``: ``image`` (H, W, 3) uint8, ``mask`` (H, W) uint8, ``ftu`` the
    flat (row-major) indices of the mask's FTU pixels, int64 (an FTU-centred crop draws one
    without scanning the mask)."""
    if array not in ARRAYS:
        raise ValueError(f"unknown prepared array {array!r}")
    return Path(prepared_dir) / IMAGES_DIR / f"{image_id}.{array}.npy"


def unlabeled_path(unlabeled_dir: str | Path, image_id: str) -> Path:
    """One unlabeled target-domain image at the training scale, (H, W, 3) uint8 .npy."""
    return Path(unlabeled_dir) / IMAGES_DIR / f"{image_id}.image.npy"


def copy_path(stain_dir: str | Path, image_id: str, k: int) -> Path:
    """One recoloured copy, (H, W, 3) uint8 RGB as .npy: training memory-maps it, so a crop
    reads only its own rows."""
    return Path(stain_dir) / COPIES_DIR / f"{image_id}_{k}.npy"


def normalized_path(norm_dir: str | Path, image_id: str, k: int | None = None) -> Path:
    """The normalised prepared image (``k`` None) or its ``k``-th normalised stain copy."""
    name = image_id if k is None else f"{image_id}_{k}"
    return Path(norm_dir) / NORMALIZED_DIR / f"{name}.npy"


def checkpoint_dir(models_dir: str | Path, model: str, fold: int) -> Path:
    """``models/<model>/fold<k>``: one trained checkpoint (``model.safetensors`` + ``model.json``)."""
    return Path(models_dir) / model / f"fold{fold}"


def oof_path(oof_dir: str | Path, model: str, image_id: str) -> Path:
    """One model's quantised out-of-fold probability of one image, at training scale (PNG)."""
    return Path(oof_dir) / model / f"{image_id}.png"
