"""Torch datasets over the prepared images."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ftuseg.core.errors import DataError
from ftuseg.core.layout import prepared_path
from ftuseg.core.organs import ORGANS, check_organs
from ftuseg.data.prepare import read_index
from ftuseg.domain.augment import AugmentConfig, augment, random_dihedral

if TYPE_CHECKING:  # the dataset only reads the paths; pseudo imports the inference engine
    from ftuseg.train.pseudo import PseudoImage

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
    ``image`` (S, S, 3) uint8 as cropped (the trainer makes it (3, S, S) float on the device:
    a quarter of the bytes through the loader and the host-to-device copy, no transposing copy
    in the worker, and NHWC is the ``channels_last`` layout), ``mask`` (1, S, S) uint8, ``organ`` (index
    into ORGANS) and ``log_pixel_size`` (log µm/px of the crop, the pixel-size head's target).

    ``images`` (id -> .npy path) replaces the prepared images, e.g. by the stain-normalised ones
    of the normalize stage; ``stain_copies`` (id -> .npy paths of recoloured copies) are drawn
    instead of the image with probability ``stain_copy_prob``. ``pseudo`` images (see
    :mod:`ftuseg.train.pseudo`) replace a crop's source with probability ``pseudo_share``; their masks
    carry :data:`~ftuseg.models.losses.IGNORE` where the teacher was unsure. Masks are uint8 throughout.

    Every array is a read-only memory map opened lazily in the process that reads it (a data
    loader worker, however it was started, never receives pixel data): a crop pages in only its
    own rows, so memory does not grow with the number of images.

    Randomness comes from ``(seed, epoch, index)`` alone, so an epoch is reproducible whatever
    the number of data-loader workers. A key is an index (epoch from :meth:`set_epoch`) or an
    ``(epoch, index)`` pair, which persistent workers need: their copy of the dataset never sees
    ``set_epoch``.
    """

    def __init__(
        self,
        prepared_dir: str | Path,
        ids: Sequence[str],
        crop_size: int,
        *,
        samples_per_image: int = 1,
        ftu_prob: float = 0.5,
        augment: AugmentConfig | None = DEFAULT_AUGMENT,
        seed: int = 0,
        organ_oversample: Mapping[str, float] | None = None,
        um_per_px: float = 1.0,
        stain_copies: Mapping[str, Sequence[Path]] | None = None,
        stain_copy_prob: float = 0.0,
        images: Mapping[str, Path] | None = None,
        pseudo: Sequence[PseudoImage] = (),
        pseudo_share: float = 0.0,
    ) -> None:
        organ_of = read_index(prepared_dir).set_index("id")["organ"].to_dict()
        check_organs(organ_oversample or {}, "train.organ_oversample")
        self.paths = [
            (
                Path((images or {}).get(i) or prepared_path(prepared_dir, i, "image")),
                prepared_path(prepared_dir, i, "mask"),
                prepared_path(prepared_dir, i, "ftu"),
            )
            for i in ids
        ]
        self.n_labelled = len(self.paths)
        self.paths += [(p.image, p.label, p.ftu) for p in pseudo]
        for triple in self.paths:
            for path in triple:
                if not path.is_file():
                    raise DataError(f"{path}: training array missing (re-run its stage)")
        self.copy_paths = [[Path(c) for c in (stain_copies or {}).get(i, [])] for i in ids]
        self.copy_paths += [[] for _ in pseudo]
        self._maps: dict[Path, np.ndarray] = {}
        self.stain_copy_prob = stain_copy_prob
        self.organs = [ORGANS.index(organ_of[i]) for i in ids] + [
            ORGANS.index(p.organ) for p in pseudo
        ]
        if pseudo and not 0.0 < pseudo_share < 1.0:
            raise ValueError(
                f"pseudo_share must be in (0, 1) with pseudo images, got {pseudo_share}"
            )
        self.pseudo_share = pseudo_share if pseudo else 0.0
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

    def __getstate__(self) -> dict:
        # Workers re-open the maps themselves: pickling a memory map would copy its pixels.
        return {**self.__dict__, "_maps": {}}

    def _map(self, path: Path) -> np.ndarray:
        array = self._maps.get(path)
        if array is None:
            array = self._maps[path] = np.load(path, mmap_mode="r", allow_pickle=False)
        return array

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sources)

    def _draw(self, source: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A crop of image ``source``: the image, or one of its stain copies."""
        image_path, mask_path, ftu_path = self.paths[source]
        copies = self.copy_paths[source]
        if copies and self.stain_copy_prob and rng.random() < self.stain_copy_prob:
            image_path = copies[int(rng.integers(len(copies)))]
        image, mask = random_crop(
            self._map(image_path),
            self._map(mask_path),
            self.crop_size,
            rng,
            self.ftu_prob,
            self._map(ftu_path),
        )
        # In-memory copies of the crop alone (the maps are read-only and stay untouched).
        return np.ascontiguousarray(image), np.ascontiguousarray(mask, dtype=np.uint8)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        source = self.sources[index]
        if self.pseudo_share and rng.random() < self.pseudo_share:
            source = self.n_labelled + int(rng.integers(len(self.paths) - self.n_labelled))
        image, mask = self._draw(source, rng)
        pixel_size = self.um_per_px
        if self.augment is not None:

            def draw_other(same_organ: bool) -> tuple[np.ndarray, np.ndarray]:
                pool = [
                    j
                    for j in range(len(self.paths))
                    if j != source and (not same_organ or self.organs[j] == self.organs[source])
                ] or [source]
                return self._draw(pool[int(rng.integers(len(pool)))], rng)

            image, mask, pixel_size = augment(
                image,
                mask,
                rng,
                self.augment,
                ORGANS[self.organs[source]],
                self.um_per_px,
                draw_other,
            )
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8)).unsqueeze(0),
            "organ": torch.tensor(self.organs[source]),
            "log_pixel_size": torch.tensor(math.log(pixel_size), dtype=torch.float32),
        }


class TargetCrops(Dataset):
    """Random crops of unlabeled target-domain images (domain-adversarial training): uniform
    position, one of the 8 dihedral symmetries, nothing else (the images are the domain the
    classifier must learn; colour augmentation would blur it). Same keys, lazy memory maps and
    ``(seed, epoch, index)`` randomness as :class:`CropDataset`; ``length`` crops per epoch."""

    def __init__(self, files: Sequence[Path], crop_size: int, length: int, seed: int) -> None:
        if not files:
            raise DataError("domain-adversarial training needs unlabeled images, found none")
        for path in files:
            if not Path(path).is_file():
                raise DataError(f"{path}: unlabeled image missing (re-run the unlabeled stage)")
        self.files = [Path(f) for f in files]
        self.crop_size, self.length, self.seed = crop_size, length, seed
        self._maps: dict[Path, np.ndarray] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        rng = np.random.default_rng([self.seed, epoch, index])
        path = self.files[int(rng.integers(len(self.files)))]
        image = self._maps.get(path)
        if image is None:
            image = self._maps[path] = np.load(path, mmap_mode="r", allow_pickle=False)
        # No mask: a zero-stride stand-in gives random_crop the geometry without allocating
        # an image-sized array per crop.
        blank = np.broadcast_to(np.zeros(1, np.uint8), image.shape[:2])
        crop, _ = random_crop(image, blank, self.crop_size, rng, 0.0, np.empty(0, np.int64))
        crop, _ = random_dihedral(np.ascontiguousarray(crop), blank[:1, :1], rng)
        return {"image": torch.from_numpy(np.ascontiguousarray(crop))}


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """Wraps a batch sampler so every key carries its epoch: ``(epoch, index)``."""

    def __init__(self, batches: Sampler[list[int]]) -> None:
        self.batches = batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches.set_epoch(epoch)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches:
            yield [(self.epoch, i) for i in batch]


def _worker_init(_: int) -> None:
    # One OpenCV thread per worker: the workers are the parallelism (N workers x N cv2
    # threads would oversubscribe the cores).
    cv2.setNumThreads(1)


def make_loader(
    dataset: CropDataset,
    batches: Sampler[list[int]],
    num_workers: int,
    pin_memory: bool,
    prefetch_factor: int = 2,
) -> tuple[DataLoader, EpochBatches]:
    """A DataLoader over ``dataset`` with persistent workers (when there are any), pinned
    memory for asynchronous host-to-device copies, and epoch-carrying keys. Returns the loader
    and its sampler (call ``set_epoch`` on it before every epoch)."""
    if num_workers < 0:
        raise ValueError(f"train.num_workers must be >= 0, got {num_workers}")
    sampler = EpochBatches(batches)
    workers = {
        "persistent_workers": True,
        "prefetch_factor": prefetch_factor,
        "worker_init_fn": _worker_init,
        # Workers start from a clean server process, not from a fork of this one: a fork of a
        # process whose OpenMP/OpenCV thread pools have run can deadlock in the child (seen in
        # the test suite). The dataset travels pickled, without its memory maps.
        "multiprocessing_context": "forkserver",
    }
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        **(workers if num_workers else {}),
    )
    return loader, sampler
