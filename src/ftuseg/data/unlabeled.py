"""The ``unlabeled`` stage: target-domain images without masks at the training scale, read by
domain-adversarial training (:mod:`ftuseg.train.dann`) and self-training
(:mod:`ftuseg.train.pseudo`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import track

from ftuseg.core.errors import DataError
from ftuseg.core.layout import IMAGES_DIR, INDEX_NAME, unlabeled_path
from ftuseg.core.scale import resize_image, scaled_shape
from ftuseg.core.utils import atomic_path
from ftuseg.data.contract import image_path, read_image, read_metadata

UNLABELED_COLUMNS = ["id", "organ", "pixel_size", "height", "width"]


def prepare_unlabeled(
    source_dir: str | Path, out_dir: str | Path, um_per_px: float, enabled: bool
) -> pd.DataFrame:
    """The ``unlabeled`` stage: the target-domain images of ``source_dir`` (``test.csv`` +
    ``test_images/``, the competition's layout; no masks) resampled to the training scale, for
    domain-adversarial training. Disabled, it writes an empty index and reads nothing, so the
    stage costs nothing while ``train.domain_weight`` is 0."""
    source_dir = Path(source_dir)
    rows = []
    with atomic_path(out_dir, is_dir=True) as tmp:
        (tmp / IMAGES_DIR).mkdir()
        if enabled:
            meta = read_metadata(source_dir / "test.csv", "test")
            for row in track(list(meta.itertuples(index=False)), description="unlabeled images"):
                path = image_path(source_dir, "test", row.id)
                img = read_image(path, (row.img_height, row.img_width))
                shape = scaled_shape(img.shape[:2], row.pixel_size, um_per_px)
                np.save(unlabeled_path(tmp, row.id), np.ascontiguousarray(resize_image(img, shape)))
                rows.append([row.id, row.organ, row.pixel_size, shape[0], shape[1]])
            if not rows:
                raise DataError(f"{source_dir / 'test.csv'}: no unlabeled images listed")
        index = pd.DataFrame(rows, columns=UNLABELED_COLUMNS)
        index.to_csv(tmp / INDEX_NAME, index=False)
    return index
