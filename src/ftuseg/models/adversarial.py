"""Domain-adversarial training parts (Ganin & Lempitsky, 2015): a gradient-reversal layer and a
small domain classifier that reads encoder features through it.

The classifier learns to tell source (HPA) from target (H&E / PAS) features; the reversed
gradient pushes the encoder the other way, toward features the classifier cannot separate.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by ``-scale``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad.neg() * ctx.scale, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``x`` unchanged, with its gradient multiplied by ``-scale`` on the way back."""
    if scale < 0:
        raise ValueError(f"the reversal scale must be >= 0, got {scale}")
    return _ReverseGradient.apply(x, float(scale))


class GradientReversal(nn.Module):
    """:func:`reverse_gradient` as a module; ``scale`` can change during training (schedule)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def dann_schedule(progress: float, gamma: float = 10.0) -> float:
    """The reversal scale of the DANN paper, 2 / (1 + exp(-γ p)) - 1: 0 at the start of
    training (the classifier is still random, its gradient noise), rising to ≈1 by the end.
    ``progress`` is the fraction of training done, in [0, 1]."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class DomainClassifier(nn.Module):
    """Global-average-pooled encoder features → gradient reversal → MLP → one logit
    (target domain = 1)."""

    def __init__(self, in_channels: int, hidden: int = 256, scale: float = 1.0) -> None:
        super().__init__()
        self.reversal = GradientReversal(scale)
        self.head = nn.Sequential(
            nn.Linear(in_channels, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3)) if features.ndim == 4 else features
        return self.head(self.reversal(pooled)).squeeze(1)
