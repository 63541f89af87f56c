"""Torch datasets over the prepared images."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import AugmentConfig, augment
from .organs import ORGANS
from .prepare import load_array, load_prepared, read_index

DEFAULT_AUGMENT = AugmentConfig()  # dihedral transforms only
PAD_VALUE = 255  # images are padded with white, as glass looks in brightfield


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def random_crop(
    image: np.ndarray,
    mask: np.ndarray,
    size: int,
    rng: np.random.Generator,
    ftu_prob: float,
    ftu: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size``² crop, centred on a random FTU pixel with probability ``ftu_prob`` (FTUs are a
    minority of the pixels), else uniform. Images smaller than ``size`` are padded first.

    ``ftu``: the mask's FTU pixels as flat row-major indices (the prepare stage stores them), so
    a crop of a memory-mapped image reads only the crop's rows; computed here when not given.
    The crop is a view when the image needs no padding (copy it before writing to it).
    """
    h, w = mask.shape
    if ftu is None:
        ftu = np.flatnonzero(mask)
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=PAD_VALUE)
        mask = np.pad(mask, ((0, ph), (0, pw)))
        ftu = (ftu // w) * (w + pw) + ftu % w  # the same pixels in the padded width
        h, w = mask.shape
    if rng.random() < ftu_prob and ftu.size:
        i = rng.integers(ftu.size)
        cy, cx = divmod(int(ftu[i]), w)
        y0 = int(np.clip(cy - size // 2 + rng.integers(-size // 4, size // 4 + 1), 0, h - size))
        x0 = int(np.clip(cx - size // 2 + rng.integers(-size // 4, size // 4 + 1), 0, w - size))
    else:
        y0, x0 = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    return image[y0 : y0 + size, x0 : x0 + size], mask[y0 : y0 + size, x0 : x0 + size]


class CropDataset(Dataset):
    """Random crops of prepared training images, ``samples_per_image`` per image and epoch.

    ``organ_oversample`` multiplies the crops drawn from an organ's images per epoch (lung ×5 in
    the write-up): oversampling lives in the index, no file is copied. Each item is a dict with
    ``image`` (3, S, S), ``mask`` (1, S, S), ``organ`` (index into ORGANS) and
    ``log_pixel_size`` (log µm/px of the crop, the pixel-size head's target).

    ``stain_copies`` (id -> recoloured copies from the stain stage) are drawn instead of the
    original with probability ``stain_copy_prob``; ``normalize`` (a stain normaliser) is applied
    once to every original and copy at load time, as the Predictor applies it at inference.

    Randomness comes from ``(seed, epoch, index)`` alone, so an epoch is reproducible whatever
    the number of data-loader workers; call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        prepared_dir: str | Path,
        ids: Sequence[str],
        crop_size: int,
        samples_per_image: int = 1,
        ftu_prob: float = 0.5,
        augment: AugmentConfig | None = DEFAULT_AUGMENT,
        seed: int = 0,
        organ_oversample: Mapping[str, float] | None = None,
        um_per_px: float = 1.0,
        stain_copies: Mapping[str, list[np.ndarray]] | None = None,
        stain_copy_prob: float = 0.0,
        normalize: Callable[[np.ndarray, str], np.ndarray] | None = None,
    ) -> None:
        organ_of = read_index(prepared_dir).set_index("id")["organ"].to_dict()
        unknown = set(organ_oversample or {}) - set(ORGANS)
        if unknown:
            raise ValueError(f"organ_oversample: unknown organ(s) {sorted(unknown)}")
        # Memory maps: a crop pages in only its own rows, so memory does not grow with the
        # number of images (forked data-loader workers share the maps).
        self.items = [load_prepared(prepared_dir, i, mmap=True) for i in ids]
        self.ftu = [load_array(prepared_dir, i, "ftu", mmap=True) for i in ids]
        self.copies = [list((stain_copies or {}).get(i, [])) for i in ids]
        if normalize is not None:
            # Normalised in memory once per run (not cached yet: every image is read whole).
            self.items = [(normalize(im, i), m) for (im, m), i in zip(self.items, ids, strict=True)]
            self.copies = [
                [normalize(c, f"{i} stain copy") for c in cs]
                for cs, i in zip(self.copies, ids, strict=True)
            ]
        self.stain_copy_prob = stain_copy_prob
        self.organs = [ORGANS.index(organ_of[i]) for i in ids]
        # Which image each sample index crops from; oversampled organs appear more often.
        self.sources: list[int] = []
        for j, image_id in enumerate(ids):
            factor = float((organ_oversample or {}).get(organ_of[image_id], 1.0))
            self.sources += [j] * max(1, math.ceil(samples_per_image * factor))
        self.crop_size = crop_size
        self.ftu_prob = ftu_prob
        self.augment = augment
        self.seed = seed
        self.um_per_px = um_per_px
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sources)

    def _draw(self, source: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A crop of image ``source``: the original, or one of its stain copies."""
        image, mask = self.items[source]
        copies = self.copies[source]
        if copies and self.stain_copy_prob and rng.random() < self.stain_copy_prob:
            image = copies[int(rng.integers(len(copies)))]
        image, mask = random_crop(image, mask, self.crop_size, rng, self.ftu_prob, self.ftu[source])
        # In-memory copies of the crop alone (the maps are read-only and stay untouched).
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        source = self.sources[index]
        image, mask = self._draw(source, rng)
        pixel_size = self.um_per_px
        if self.augment is not None:

            def draw_other(same_organ: bool) -> tuple[np.ndarray, np.ndarray]:
                pool = [
                    j
                    for j in range(len(self.items))
                    if j != source and (not same_organ or self.organs[j] == self.organs[source])
                ] or [source]
                return self._draw(pool[int(rng.integers(len(pool)))], rng)

            image, mask, pixel_size = augment(
                image, mask, rng, self.augment, ORGANS[self.organs[source]], self.um_per_px,
                draw_other,
            )  # fmt: skip
        return {
            "image": to_tensor(image),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).float().unsqueeze(0),
            "organ": torch.tensor(self.organs[source]),
            "log_pixel_size": torch.tensor(math.log(pixel_size), dtype=torch.float32),
        }
