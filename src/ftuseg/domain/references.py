"""The bundled stain references and deterministic staintools fitting, shared by stain
normalisation (:mod:`ftuseg.domain.normalize`), the stain copies (:mod:`ftuseg.domain.stain`) and
recolouring (:mod:`ftuseg.domain.recolour`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from ftuseg.core.errors import DataError

# PAS: a real HuBMAP PAS kidney tile (kidney_pas/train/train_282: the one whose Macenko stain
# vectors are the median of the 90 training tiles'). The competition hosts' PAS example it
# replaced was cos 0.924 (PAS) / 0.973 (hematoxylin) from real HuBMAP PAS tiles.
REFERENCES = {"he": "HE-Stain-10x.jpg", "pas": "PAS-HuBMAP-kidney.jpg"}


@contextlib.contextmanager
def numpy_global_seed(seed: int) -> Iterator[None]:
    """staintools draws from NumPy's global generator: seed it for a block, then restore it."""
    state = np.random.get_state()  # noqa: NPY002 (the legacy global is what staintools reads)
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def seed_for(seed: int, image_id: str) -> int:
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


def deterministic(tool: object, method: str) -> object:
    if method == "vahadane":
        tool.extractor = DeterministicVahadaneExtractor  # type: ignore[attr-defined]
    return tool
