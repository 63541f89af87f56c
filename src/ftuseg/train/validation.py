"""Validation during training, computed exactly as the OOF stage scores a model.

The best epoch is the one OOF would pick: each validation image goes through the same
:class:`~ftuseg.infer.engine.Predictor` (tiles of the training crop unless ``inference.tile_size``
says otherwise, blending window, TTA, precision, quantisation), is resampled back to its original
size, post-processed at threshold 0.5 and scored against its original-resolution mask with the
competition's Dice. The prepared image *is* the raw image resampled to the training scale (the
prepare stage and the engine share :func:`ftuseg.core.scale.to_scale`), so starting from it gives the
same numbers as OOF, which starts from the raw file, without reading raw images every epoch.
One exception: validation presents each image once, as it is (``inference.scales`` of 1.0
alone), since further presentations multiply its cost each epoch for a choice of epoch; OOF,
the submission and the kernel use every presentation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ftuseg.core.errors import DataError
from ftuseg.core.layout import prepared_path
from ftuseg.core.metrics import dice
from ftuseg.data.contract import read_metadata, row_mask
from ftuseg.infer.engine import InferenceConfig, Member, Predictor
from ftuseg.infer.maps import postprocess, to_original
from ftuseg.models import Segmenter


class Validator:
    """Mean per-image Dice of a model on its fold's validation images, at the original
    resolution, through the inference engine.

    ``images`` (id -> .npy) replaces the prepared images, e.g. by their stain-normalised
    versions (the engine would normalise after resampling; the cached copies are exactly that).
    """

    def __init__(
        self,
        prepared_dir: str | Path,
        train_csv: str | Path,
        ids: Sequence[str],
        *,
        um_per_px: float,
        crop_size: int,
        config: InferenceConfig,
        train_pixel_sizes: Sequence[float] = (),
        images: Mapping[str, Path] | None = None,
    ) -> None:
        self.train_csv = Path(train_csv)
        meta = read_metadata(self.train_csv, "train").set_index("id", drop=False)
        missing = sorted(set(ids) - set(meta.index))
        if missing:
            raise DataError(f"{self.train_csv}: no row for validation image(s) {missing[:5]}")
        self.rows = [meta.loc[i] for i in ids]
        self.paths = [
            Path((images or {}).get(i) or prepared_path(prepared_dir, i, "image")) for i in ids
        ]
        self.um_per_px, self.crop_size = um_per_px, crop_size
        self.config = replace(config, scales=(1.0,))
        self.train_pixel_sizes = tuple(train_pixel_sizes)

    def __len__(self) -> int:
        return len(self.rows)

    def __call__(self, model: Segmenter) -> float:
        """The score; leaves ``model`` in eval mode (the trainer switches it back)."""
        return float(np.mean(self.per_image(model))) if self.rows else math.nan

    def per_image(self, model: Segmenter) -> list[float]:
        """Each validation image's Dice, in the order of ``ids``."""
        predictor = Predictor(
            [Member(model, 1.0, "validation", tile_size=self.crop_size)],
            self.um_per_px,
            self.config,
            None,
            self.train_pixel_sizes,
        )
        scores = []
        for row, path in zip(self.rows, self.paths, strict=True):
            if predictor.source_pixel_size(row.pixel_size) != row.pixel_size:
                # OOF would resample the raw image from another pixel size than prepare did.
                raise DataError(
                    f"validation of {row.id}: inference.scale_handling: false treats it as "
                    f"{predictor.source_pixel_size(row.pixel_size)} µm/px, but its csv says "
                    f"{row.pixel_size}; validation would not match OOF"
                )
            truth = row_mask(row, self.train_csv)
            q = predictor.predict_at_scale(np.load(path, mmap_mode="r"))
            pred = postprocess(
                to_original(q, truth.shape), 0.5, row.pixel_size, self.config.min_component_um2
            )
            scores.append(dice(pred, truth))
        return scores
