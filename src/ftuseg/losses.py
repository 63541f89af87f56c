"""Training losses, composed from segmentation-models-pytorch's implementations."""

from __future__ import annotations

import torch
from segmentation_models_pytorch.losses import DiceLoss, SoftBCEWithLogitsLoss
from torch import nn


class SegmentationLoss(nn.Module):
    """``bce * BCE + dice * soft Dice`` on (B, 1, H, W) logits against 0/1 targets."""

    def __init__(self, bce: float = 1.0, dice: float = 1.0) -> None:
        super().__init__()
        self.weights = {"bce": bce, "dice": dice}
        self.bce = SoftBCEWithLogitsLoss()
        self.dice = DiceLoss(mode="binary", from_logits=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = logits.new_zeros(())
        if self.weights["bce"]:
            loss = loss + self.weights["bce"] * self.bce(logits, target)
        if self.weights["dice"]:
            loss = loss + self.weights["dice"] * self.dice(logits, target)
        return loss
