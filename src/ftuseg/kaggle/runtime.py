"""What runs inside the offline Kaggle kernel (shipped in the ftuseg wheel).

The kernel script (``kaggle_kernel/ftuseg_kernel.py``) installs the bundled wheels and calls
:func:`run`, which finds the competition data and the model bundle by glob under the input root
(Kaggle has changed its mount paths over time), predicts ``test.csv`` with the same engine and
loop as the pipeline's submit stage, writes ``submission.csv`` and logs the runtime per image.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ftuseg import __version__
from ftuseg.core.errors import DataError
from ftuseg.core.utils import read_json, read_yaml, write_csv
from ftuseg.data.contract import read_metadata
from ftuseg.infer.engine import InferenceConfig, Predictor
from ftuseg.infer.members import BUNDLE_MARKER, ENSEMBLE_NAME, INFERENCE_NAME, EnsembleConfig
from ftuseg.infer.submission import predict_test, submission_table

log = logging.getLogger("ftuseg.kaggle.runtime")


BUNDLE_ENV = "FTUSEG_KAGGLE_BUNDLE"  # picks one model bundle when several are attached


def find_bundle(input_root: str | Path) -> Path:
    """The model dataset folder: the one holding ``ftuseg-bundle.json``. Several attached
    bundles are an error unless ``$FTUSEG_KAGGLE_BUNDLE`` names the folder to use."""
    chosen = os.environ.get(BUNDLE_ENV)
    if chosen:
        if not (Path(chosen) / BUNDLE_MARKER).is_file():
            raise DataError(f"{BUNDLE_ENV}={chosen}: no {BUNDLE_MARKER} in that folder")
        return Path(chosen)
    hits = sorted(Path(input_root).rglob(BUNDLE_MARKER))
    if not hits:
        raise DataError(f"{input_root}: no {BUNDLE_MARKER} found (is the model dataset attached?)")
    if len(hits) > 1:
        folders = ", ".join(str(h.parent) for h in hits)
        raise DataError(
            f"{input_root}: {len(hits)} model bundles attached ({folders}); detach all but one "
            f"or set {BUNDLE_ENV} to the folder to use"
        )
    return hits[0].parent


def find_competition(input_root: str | Path) -> Path:
    """The competition folder: the one holding ``test.csv`` next to ``test_images/``."""
    hits = sorted(
        p.parent for p in Path(input_root).rglob("test.csv") if (p.parent / "test_images").is_dir()
    )
    if not hits:
        raise DataError(f"{input_root}: no test.csv with a test_images/ folder beside it")
    return hits[0]


def load_bundle(bundle: str | Path) -> tuple[Predictor, EnsembleConfig, dict[str, Any]]:
    bundle = Path(bundle)
    manifest = read_json(bundle / BUNDLE_MARKER)
    config = EnsembleConfig.load(bundle / ENSEMBLE_NAME)
    inference = InferenceConfig(**read_yaml(bundle / INFERENCE_NAME))
    members = [(bundle / m["path"], float(m["weight"])) for m in manifest["members"]]
    return Predictor.from_checkpoints(members, inference), config, manifest


def check_base(trained_with: dict[str, str]) -> None:
    """Warn where the image's torch/torchvision/numpy/pandas differ from the training
    environment's (the kernel still runs: Kaggle's image is what it is)."""
    for name, version in sorted(trained_with.items()):
        try:
            here = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise DataError(
                f"{name} is not installed: the kernel needs the Kaggle image's"
            ) from None
        if here != version:
            log.warning("%s %s here, %s when the models were trained", name, here, version)


def run(input_root: str | Path, working_dir: str | Path) -> pd.DataFrame:
    """Predict the competition's test set; writes ``working_dir/submission.csv``."""
    started = time.perf_counter()
    log.info("ftuseg %s imported from %s", __version__, Path(__file__).resolve().parents[1])
    for name in ("torch", "timm", "segmentation_models_pytorch", "cv2"):
        module = importlib.import_module(name)
        log.info("%s %s from %s", name, getattr(module, "__version__", "?"), module.__file__)
    bundle, competition = find_bundle(input_root), find_competition(input_root)
    log.info("model bundle: %s", bundle)
    log.info("competition data: %s", competition)
    predictor, config, manifest = load_bundle(bundle)
    check_base(manifest.get("base", {}))
    log.info(
        "ensemble: %d member checkpoints, %.3g µm/px, device %s",
        len(manifest["members"]),
        config.um_per_px,
        predictor.device,
    )
    test = read_metadata(competition / "test.csv", "test")

    def report(row: Any, seconds: float) -> None:
        megapixels = row.img_height * row.img_width / 1e6
        log.info(
            "image %s (%s, %dx%d, %.3g µm/px): %.2f s, %.2f s/MP",
            row.id,
            row.organ,
            row.img_height,
            row.img_width,
            row.pixel_size,
            seconds,
            seconds / megapixels,
        )

    submission = submission_table(
        predict_test(test, competition / "test_images", predictor, config, on_image=report)
    )
    out = Path(working_dir) / "submission.csv"
    write_csv(out, submission)
    log.info("wrote %s (%d rows) in %.1f s", out, len(submission), time.perf_counter() - started)
    return submission
