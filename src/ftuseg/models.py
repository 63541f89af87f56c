"""Segmentation architectures, registered by name, behind one wrapper.

``build_model(cfg)`` looks ``cfg["arch"]`` up in the registry and wraps the network in a
:class:`Segmenter`, which owns input normalisation and padding to the network's stride, so every
caller (training, OOF, submission, the Kaggle kernel) feeds the same thing: RGB in [0, 1], any size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, tuple[ModelFactory, int]] = {}


def register_model(name: str, stride: int = 32) -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory returning a network that maps (B, 3, H, W) to (B, 1, H, W) logits.

    ``stride`` is the multiple that H and W must have; inputs are padded to it.
    """

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model architecture {name!r} is already registered")
        _REGISTRY[name] = (factory, stride)
        return factory

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


@register_model("smp_unet")
def smp_unet(
    encoder: str = "resnet18",
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    pretrained: bool = False,
    weights: str = "imagenet",
) -> nn.Module:
    """U-Net (segmentation-models-pytorch) on any smp or timm (``tu-`` prefix) encoder."""
    return smp.Unet(
        encoder_name=encoder,
        encoder_weights=weights if pretrained else None,
        decoder_channels=tuple(decoder_channels),
        classes=1,
    )


class Segmenter(nn.Module):
    """Normalises RGB input in [0, 1], pads it to the network's stride and crops the logits back."""

    def __init__(
        self,
        net: nn.Module,
        stride: int = 32,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.net = net
        self.stride = stride
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = (x - self.mean) / self.std
        pad_h, pad_w = -h % self.stride, -w % self.stride
        if pad_h or pad_w:
            # Reflection keeps tissue statistics at the border; fall back to replicate for
            # inputs too small to reflect (fewer pixels than the padding).
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return self.net(x)[..., :h, :w]


def build_model(cfg: dict[str, Any]) -> Segmenter:
    """Build a registered architecture from its params.yaml config (``arch`` + its kwargs)."""
    cfg = dict(cfg)
    arch = cfg.pop("arch", None)
    if arch not in _REGISTRY:
        raise ValueError(
            f"unknown model architecture {arch!r}; registered: {', '.join(list_models())}"
        )
    factory, stride = _REGISTRY[arch]
    return Segmenter(factory(**cfg), stride=stride)
