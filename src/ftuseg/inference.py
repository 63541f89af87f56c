"""The inference engine shared by OOF evaluation, the submission and the Kaggle kernel.

An image is resampled to the ensemble's training scale (µm/px), every member predicts a
probability map there, the maps are averaged with the members' weights and quantised to uint8
(the form OOF stores), and finally resampled back to the original image size. Because all paths
call the same functions, the numbers OOF reports are the numbers a submission gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .datasets import to_tensor
from .models import Segmenter
from .scale import resize_prob, to_scale


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def quantize(prob: np.ndarray) -> np.ndarray:
    """Probability in [0, 1] -> uint8 (0..255), rounding to nearest."""
    return np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)


def dequantize(q: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) / 255.0


def combine(maps: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted mean of quantised member maps, quantised again.

    The Predictor combines its members with this very function, so an ensemble evaluated from
    stored OOF maps gives bit-identical probabilities to running the ensemble on the image.
    """
    total = float(sum(weights))
    acc = np.zeros(maps[0].shape, dtype=np.float32)
    for q, w in zip(maps, weights, strict=True):
        acc += np.float32(w / total) * dequantize(q)
    return quantize(acc)


def to_original(q: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A quantised model-scale probability map resampled to the original (H, W), as float32."""
    return resize_prob(dequantize(q), shape)


@dataclass
class Member:
    model: Segmenter
    weight: float
    name: str = ""


class Predictor:
    """A weighted ensemble of segmenters working at one physical scale (``um_per_px``)."""

    def __init__(
        self,
        members: Sequence[Member],
        um_per_px: float,
        device: str | torch.device = "cpu",
        amp: bool = True,
    ) -> None:
        if not members:
            raise ValueError("a Predictor needs at least one member model")
        total = sum(m.weight for m in members)
        if total <= 0:
            raise ValueError("member weights must sum to a positive number")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.members = [
            Member(m.model.to(self.device).eval(), m.weight / total, m.name) for m in members
        ]
        self.um_per_px = um_per_px
        # Mixed precision only where it pays off and is well supported: CUDA.
        self.amp = amp and self.device.type == "cuda"

    @classmethod
    def from_checkpoints(
        cls,
        checkpoints: Sequence[tuple[str | Path, float]],
        device: str | torch.device = "cpu",
        amp: bool = True,
    ) -> Predictor:
        """Load ``(checkpoint_dir, weight)`` pairs; all must share one training scale."""
        members, scales = [], set()
        for directory, weight in checkpoints:
            model, meta = load_checkpoint(directory)
            members.append(Member(model, float(weight), str(directory)))
            scales.add(float(meta["um_per_px"]))
        if len(scales) != 1:
            raise ValueError(f"ensemble members were trained at different scales: {sorted(scales)}")
        return cls(members, scales.pop(), device=device, amp=amp)

    @torch.inference_mode()
    def predict_scaled(self, image: np.ndarray, pixel_size: float) -> np.ndarray:
        """Ensemble probability at the training scale, quantised to uint8."""
        scaled = to_scale(image, pixel_size, self.um_per_px)
        x = to_tensor(scaled).unsqueeze(0).to(self.device)
        maps = []
        for m in self.members:
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                logits = m.model(x)
            maps.append(quantize(torch.sigmoid(logits.float())[0, 0].cpu().numpy()))
        return combine(maps, [m.weight for m in self.members])

    def predict(self, image: np.ndarray, pixel_size: float) -> np.ndarray:
        """Ensemble probability (float32) at the image's original size."""
        return to_original(self.predict_scaled(image, pixel_size), image.shape[:2])


def binarize(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Foreground where the probability is strictly above the threshold."""
    return (prob > threshold).astype(np.uint8)
