"""Training losses, composed from segmentation-models-pytorch's implementations.

The mask loss is ``bce·BCE + dice·soft Dice + focal·focal``; deep supervision adds the same mask
loss on every auxiliary decoder-level logit map, scaled by ``aux``; the organ head adds
cross-entropy (``organ``) and the pixel-size head an MSE on log µm/px (``pixel_size``).

Mask pixels equal to :data:`IGNORE` count in no mask loss (pseudo-labels leave the pixels their
teacher was unsure of undecided, see :mod:`ftuseg.train.pseudo`); targets without them give exactly
the losses of plain 0/1 targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss, SoftBCEWithLogitsLoss
from torch import nn

IGNORE = 255  # mask value of "no label here"


@dataclass(frozen=True)
class LossWeights:
    bce: float = 1.0
    dice: float = 1.0
    focal: float = 0.0
    aux: float = 0.2  # per auxiliary (deep-supervision) map
    organ: float = 0.1
    pixel_size: float = 0.1


class SegmentationLoss(nn.Module):
    """The weighted training loss on a :class:`~ftuseg.models.Segmenter` output.

    Accepts either plain mask logits (B, 1, H, W) or the ``heads=True`` dict. Returns the total
    and its named parts (detached floats, for logging).
    """

    def __init__(self, weights: LossWeights | None = None) -> None:
        super().__init__()
        self.w = weights or LossWeights()
        self.bce = SoftBCEWithLogitsLoss(ignore_index=IGNORE)
        self.dice = DiceLoss(mode="binary", from_logits=True, ignore_index=IGNORE)
        self.focal = FocalLoss(mode="binary", ignore_index=IGNORE)

    def mask_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = logits.new_zeros(())
        if self.w.bce:
            loss = loss + self.w.bce * self.bce(logits, target)
        if self.w.dice:
            loss = loss + self.w.dice * self.dice(logits, target)
        if self.w.focal:
            loss = loss + self.w.focal * self.focal(logits, target)
        return loss

    def forward(
        self,
        output: torch.Tensor | dict,
        target: torch.Tensor,
        organ: torch.Tensor | None = None,
        log_pixel_size: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if isinstance(output, torch.Tensor):
            output = {"mask": output}
        parts = {"mask": self.mask_loss(output["mask"].float(), target)}
        if output.get("aux") and self.w.aux:
            aux = [self.mask_loss(a.float(), target) for a in output["aux"]]
            parts["aux"] = self.w.aux * torch.stack(aux).sum()
        if "organ" in output and organ is not None and self.w.organ:
            parts["organ"] = self.w.organ * F.cross_entropy(output["organ"].float(), organ)
        if "pixel_size" in output and log_pixel_size is not None and self.w.pixel_size:
            mse = F.mse_loss(output["pixel_size"].float(), log_pixel_size.float())
            parts["pixel_size"] = self.w.pixel_size * mse
        total = torch.stack(list(parts.values())).sum()
        return total, {k: float(v.detach()) for k, v in parts.items()}
