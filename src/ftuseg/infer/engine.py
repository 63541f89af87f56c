"""The inference engine shared by OOF evaluation, the submission and the Kaggle kernel.

An image is resampled to the ensemble's training scale (µm/px) and cut into overlapping tiles;
each member model predicts the tiles in batches under dihedral test-time augmentation, and the
tile predictions are blended with a smooth window (so seams do not show) into one probability
map per member. Member maps are quantised to uint8 (the form OOF stores) and combined with the
members' weights, then resampled back to the original size and thresholded per organ.

Memory is bounded by the tile batch plus a few maps at training scale, whatever the number of
members and TTA passes: members run one after another into a single running accumulator.
Because every path calls these functions, the numbers OOF reports are the numbers a submission
gets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftuseg.core.errors import DataError
from ftuseg.core.scale import resize_image, resize_prob, scaled_shape, to_scale
from ftuseg.infer.maps import accumulate, member_weights, quantize, to_original
from ftuseg.models import Segmenter
from ftuseg.models.checkpoint import load_checkpoint

WINDOWS = ("gaussian", "cosine", "flat")
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class InferenceConfig:
    """The ``inference`` group of params.yaml."""

    # Tile side at the training scale (px); None: each member's training crop (recorded in its
    # checkpoint), the context size the model learnt from.
    tile_size: int | None = None
    overlap: float = 0.25  # fraction of the tile shared with its neighbour
    batch_size: int = 8  # tiles per forward pass
    window: str = "gaussian"  # blending window: gaussian | cosine | flat
    tta: tuple[int, ...] = (0,)  # dihedral transforms, k in 0..7 (see augment.dihedral)
    # Presentations: each image also predicted as if its pixel size were this factor × its own
    # (objects that much larger in pixels), the maps resampled back and averaged. (1.0,): the
    # image as it is. Validation during training always predicts at (1.0,) alone.
    scales: tuple[float, ...] = (1.0,)
    precision: str = "fp16"  # fp32 | fp16 | bf16; reduced precision applies on CUDA only
    # NHWC weights and tiles: faster convolutions on CPU (oneDNN) and CUDA alike (measured in
    # benchmarks/models.py); the numbers differ from NCHW only by float rounding.
    channels_last: bool = True
    min_component_um2: float = 0.0  # drop predicted components smaller than this area
    device: str = "auto"
    # Ablation switch. True: every image is resampled from its csv pixel_size (physical scale).
    # False: every image is treated as if it had the training images' pixel size, i.e. fed at
    # its native resolution as a pipeline that ignores µm/px would (recorded in the checkpoint,
    # so the switch means the same whatever resolution the training data has).
    scale_handling: bool = True
    # Test-time normalisation statistics: each image's own BatchNorm statistics (one extra
    # forward pass over its tiles) mixed into the training ones with this weight; 0 = the
    # training statistics alone, 1 = the image's alone (AdaBN). Another lab's staining shifts
    # every layer's activations; its statistics move them back (research/kidney_study.py).
    adapt_norm: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.adapt_norm <= 1.0:
            raise ValueError(f"inference.adapt_norm must be in [0, 1], got {self.adapt_norm}")
        if (self.tile_size is not None and self.tile_size < 1) or self.batch_size < 1:
            raise ValueError("inference.tile_size and inference.batch_size must be positive")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"inference.overlap must be in [0, 1), got {self.overlap}")
        if self.window not in WINDOWS:
            raise ValueError(f"inference.window must be one of {WINDOWS}, got {self.window!r}")
        if not self.tta or any(k not in range(8) for k in self.tta):
            raise ValueError(f"inference.tta must be a non-empty list of 0..7, got {self.tta}")
        if not self.scales or any(not 0.25 <= f <= 4.0 for f in self.scales):
            raise ValueError(
                f"inference.scales must be a non-empty list in [0.25, 4], got {self.scales}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"inference.precision must be one of {tuple(PRECISIONS)}")
        object.__setattr__(self, "tta", tuple(int(k) for k in self.tta))
        object.__setattr__(self, "scales", tuple(float(f) for f in self.scales))


# ------------------------------------------------------------------------------ tiles


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets covering ``length`` with tiles of ``tile`` overlapping by ``overlap``;
    the last tile is aligned to the end so no tile leaves the image."""
    if length <= tile:
        return [0]
    stride = max(1, round(tile * (1.0 - overlap)))
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def blend_window(height: int, width: int, kind: str) -> np.ndarray:
    """Separable blending weights for a tile, highest in the centre and positive everywhere."""

    def one_d(n: int) -> np.ndarray:
        i = np.arange(n, dtype=np.float64) + 0.5
        if kind == "gaussian":
            sigma = n / 4.0
            w = np.exp(-0.5 * ((i - n / 2.0) / sigma) ** 2)
        elif kind == "cosine":
            w = np.sin(np.pi * i / n) ** 2  # Hann window sampled at pixel centres: never 0
        elif kind == "flat":
            w = np.ones(n)
        else:
            raise ValueError(f"unknown window {kind!r}")
        return w / w.max()

    return np.outer(one_d(height), one_d(width)).astype(np.float32)


def tiles(shape: tuple[int, int], tile: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """(y, x, h, w) of every tile; all tiles share one size so they batch together."""
    h, w = min(tile, shape[0]), min(tile, shape[1])
    return [
        (y, x, h, w)
        for y in tile_starts(shape[0], tile, overlap)
        for x in tile_starts(shape[1], tile, overlap)
    ]


def dihedral_tensor(x: torch.Tensor, k: int) -> torch.Tensor:
    """The tensor version of :func:`ftuseg.domain.augment.dihedral` on the last two axes."""
    out = torch.rot90(x, k % 4, dims=(-2, -1))
    return out.transpose(-2, -1) if k >= 4 else out


def inverse_dihedral_tensor(x: torch.Tensor, k: int) -> torch.Tensor:
    if k >= 4:
        x = x.transpose(-2, -1)
    return torch.rot90(x, -(k % 4), dims=(-2, -1))


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ------------------------------------------------------------------------------ predictor


@dataclass
class Member:
    model: Segmenter
    weight: float
    name: str = ""
    organs: tuple[str, ...] | None = None  # a specialist's organs; None = every organ
    tile_size: int | None = None  # its training crop: the tile side when inference sets none


# Checkpoint fields that earlier versions did not record, with what those versions did: no
# training pixel sizes known, no stain normalisation, no training crop (tiles then need
# inference.tile_size). Every other field is required.
RECORDED_SINCE: dict[str, Any] = {
    "train_pixel_sizes": [],
    "stain_normalize": {"method": "none"},
    "crop_size": None,
}


@contextmanager
def image_statistics(
    model: torch.nn.Module, batches: Iterable[tuple[Any, torch.Tensor]], weight: float
) -> Iterator[None]:
    """Within the block, every BatchNorm layer of ``model`` normalises with ``weight`` × the
    statistics of ``batches`` (one image's tiles, seen once in the layers' training mode with a
    cumulative average) + (1 − weight) × its training statistics; afterwards the training
    statistics are back, bit for bit. ``weight`` 0: nothing happens."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if weight == 0.0 or not layers:
        yield
        return
    saved = [
        (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
        for m in layers
    ]
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative: every tile counts the same
            m.train()
        for _, batch in batches:
            model(batch)
        for m, (mean, var, _, _) in zip(layers, saved, strict=True):
            m.running_mean.mul_(weight).add_(mean, alpha=1.0 - weight)
            m.running_var.mul_(weight).add_(var, alpha=1.0 - weight)
            m.eval()
        yield
    finally:
        for m, (mean, var, count, momentum) in zip(layers, saved, strict=True):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
            m.momentum = momentum
            m.eval()


@dataclass
class Predictor:
    """A weighted ensemble of segmenters working at one physical scale (``um_per_px``)."""

    members: Sequence[Member]
    um_per_px: float
    config: InferenceConfig = field(default_factory=InferenceConfig)
    normalize: Any = None  # stain normaliser (RGB uint8 -> RGB uint8) the members were trained with
    # Pixel sizes (µm/px) of the members' training images, from the checkpoints; what
    # ``scale_handling: false`` assumes every image has.
    train_pixel_sizes: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("a Predictor needs at least one member model")
        total = sum(m.weight for m in self.members)
        if total <= 0:
            raise ValueError("member weights must sum to a positive number")
        self.device = resolve_device(self.config.device)
        self.memory = torch.channels_last if self.config.channels_last else torch.contiguous_format
        self.members = [
            Member(
                m.model.to(self.device, memory_format=self.memory).eval(),
                m.weight / total,
                m.name,
                m.organs,
                m.tile_size,
            )
            for m in self.members
        ]
        for m in self.members:
            if self.config.tile_size is None and m.tile_size is None:
                raise DataError(
                    f"inference.tile_size is null (the training crop) but member {m.name!r} "
                    "records no training crop (a checkpoint from before crop_size was recorded: "
                    "re-train it, or set inference.tile_size)"
                )
        dtype = PRECISIONS[self.config.precision]
        # Reduced precision only where it pays off and is well supported: CUDA.
        self.autocast_dtype = dtype if self.device.type == "cuda" else None

    @classmethod
    def from_checkpoints(
        cls, checkpoints: Sequence[tuple[str | Path, float]], config: InferenceConfig | None = None
    ) -> Predictor:
        """Load ``(checkpoint_dir, weight)`` pairs; all must share one training scale."""
        members, scales, stains, sources = [], set(), set(), set()
        for directory, weight in checkpoints:
            model, meta = load_checkpoint(directory)
            meta = {**RECORDED_SINCE, **meta}
            for key in ("model_cfg", "um_per_px"):
                if key not in meta:
                    raise DataError(f"{directory}: the checkpoint records no {key}")
            sources.update(float(s) for s in meta["train_pixel_sizes"])
            stains.add(json.dumps(meta["stain_normalize"], sort_keys=True))
            organs = meta["model_cfg"].get("organs")  # a model config's optional key
            crop = meta["crop_size"]
            members.append(
                Member(
                    model,
                    float(weight),
                    str(directory),
                    tuple(organs) if organs else None,
                    int(crop) if crop else None,
                )
            )
            scales.add(float(meta["um_per_px"]))
        if len(scales) != 1:
            raise ValueError(f"ensemble members were trained at different scales: {sorted(scales)}")
        if len(stains) != 1:
            raise ValueError(f"ensemble members use different stain normalisations: {stains}")
        normalize = None
        stain = json.loads(stains.pop())
        if stain["method"] != "none":
            from ftuseg.domain.normalize import NormalizeConfig, StainNormalizer

            normalize = StainNormalizer(NormalizeConfig(**stain))
        return cls(
            members, scales.pop(), config or InferenceConfig(), normalize, tuple(sorted(sources))
        )

    def source_pixel_size(self, pixel_size: float) -> float:
        """The µm/px an image is resampled from: its own, or with ``scale_handling: false`` the
        one pixel size of the training images."""
        if self.config.scale_handling:
            return pixel_size
        if len(self.train_pixel_sizes) != 1:
            raise DataError(
                "inference.scale_handling: false treats every image as if it had the training "
                "images' pixel size, but the checkpoints record "
                f"{list(self.train_pixel_sizes) or 'none'} (it needs exactly one; re-run the "
                "train stages, or keep scale_handling: true)"
            )
        return self.train_pixel_sizes[0]

    def _forward(self, model: Segmenter, batch: torch.Tensor) -> torch.Tensor:
        """Mean sigmoid probability over the TTA transforms, back in the input orientation."""
        prob = None
        for k in self.config.tta:
            with torch.autocast(
                self.device.type,
                dtype=self.autocast_dtype or torch.float32,
                enabled=self.autocast_dtype is not None,
            ):
                # a flip or rotation changes the strides: NHWC again for the convolutions
                logits = model(dihedral_tensor(batch, k).contiguous(memory_format=self.memory))
            p = inverse_dihedral_tensor(torch.sigmoid(logits.float()), k)
            prob = p if prob is None else prob + p
        return prob / len(self.config.tta)

    def tile_size(self, member: Member) -> int:
        """The tile side a member predicts with: the configured one, else its training crop."""
        return int(self.config.tile_size or member.tile_size)  # type: ignore[arg-type]

    def _tile_batches(
        self, image: torch.Tensor, boxes: list[tuple[int, int, int, int]]
    ) -> Iterator[tuple[list[tuple[int, int, int, int]], torch.Tensor]]:
        """``(boxes, (B, 3, h, w) float batch on the device)`` over ``boxes`` of ``image``;
        uint8 tiles become floats batch by batch (the whole image never exists as floats)."""
        for chunk in _batches(boxes, self.config.batch_size):
            batch = torch.stack([image[:, y : y + h, x : x + w] for y, x, h, w in chunk])
            batch = batch.to(self.device)
            batch = batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch
            yield chunk, batch.contiguous(memory_format=self.memory)

    @torch.inference_mode()
    def predict_member(self, member: Member, image: torch.Tensor) -> np.ndarray:
        """Blended tiled probability (float32, H×W) of one member on a (3, H, W) image tensor
        (uint8 0..255 or float 0..1); with ``adapt_norm`` under the image's own BatchNorm
        statistics (:func:`image_statistics`)."""
        cfg = self.config
        shape = tuple(image.shape[-2:])
        boxes = tiles(shape, self.tile_size(member), cfg.overlap)
        window = torch.from_numpy(blend_window(boxes[0][2], boxes[0][3], cfg.window))
        acc = torch.zeros(shape)
        norm = torch.zeros(shape)
        with image_statistics(member.model, self._tile_batches(image, boxes), cfg.adapt_norm):
            for chunk, batch in self._tile_batches(image, boxes):
                prob = self._forward(member.model, batch).cpu()
                for (y, x, h, w), p in zip(chunk, prob[:, 0], strict=True):
                    acc[y : y + h, x : x + w] += p * window
                    norm[y : y + h, x : x + w] += window
        return acc.div_(norm).numpy()

    def predict_scaled(
        self, image: np.ndarray, pixel_size: float, organ: str | None = None
    ) -> np.ndarray:
        """Ensemble probability at the training scale, quantised to uint8. With ``organ``,
        specialist members count only on their organs (same arithmetic as :func:`combine`)."""
        return self.predict_at_scale(self.scaled_input(image, pixel_size, organ), organ)

    def scaled_input(
        self, image: np.ndarray, pixel_size: float, organ: str | None = None
    ) -> np.ndarray:
        """``image`` as the members take it: resampled to the training scale and stain-normalised
        as they were trained (with the reference of ``organ`` where references are per organ)."""
        scaled = to_scale(image, self.source_pixel_size(pixel_size), self.um_per_px)
        if self.normalize is not None:
            scaled = self.normalize(scaled, "image", organ)
        return scaled

    def predict_at_scale(self, scaled: np.ndarray, organ: str | None = None) -> np.ndarray:
        """:meth:`predict_scaled` of an image already resampled to the training scale (and
        stain-normalised, when the members use normalisation)."""
        weights = member_weights(
            [m.weight for m in self.members], [m.organs for m in self.members], organ
        )
        total = float(sum(weights))
        acc = None
        for m, w in zip(self.members, weights, strict=True):
            if w > 0:
                acc = accumulate(acc, quantize(self.predict_presentations(m, scaled)), w / total)
        return quantize(acc)

    def predict_presentations(self, member: Member, scaled: np.ndarray) -> np.ndarray:
        """One member's probability (float32, at ``scaled``'s size) averaged over
        ``inference.scales``: the image enlarged by each factor, predicted, and the map
        resampled back; (1.0,) is the image as it is, with no resampling at all."""
        shape = scaled.shape[:2]
        prob = None
        for f in self.config.scales:
            image = scaled if f == 1.0 else resize_image(scaled, scaled_shape(shape, f, 1.0))
            # A (3, H, W) uint8 view of the image: no float copy of the whole image.
            # (read-only memory maps are copied: torch wants writable arrays, even only to read)
            x = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)
            p = self.predict_member(member, x)
            p = p if f == 1.0 else resize_prob(p, shape)
            prob = p if prob is None else prob + p
        return prob if len(self.config.scales) == 1 else prob / np.float32(len(self.config.scales))

    def predict(self, image: np.ndarray, pixel_size: float, organ: str | None = None) -> np.ndarray:
        """Ensemble probability (float32) at the image's original size."""
        return to_original(self.predict_scaled(image, pixel_size, organ), image.shape[:2])
