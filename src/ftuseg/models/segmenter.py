"""The wrapper every caller uses, whatever the architecture.

:class:`Segmenter` owns input normalisation, padding to the network's stride, upsampling the
logits to the input, and the optional training heads: deep supervision on the decoder levels,
organ classification and pixel-size regression on the pooled bottleneck (2nd place used both).
Training, OOF, submission and the Kaggle kernel all feed it RGB in [0, 1] of any size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ftuseg.core.organs import ORGANS
from ftuseg.models.adversarial import DomainClassifier
from ftuseg.models.registry import get_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROBE_SIZE = 64  # side of the dummy input that discovers the network's channel counts

# Keys of a model config that configure the wrapper or the training, not the network.
HEAD_KEYS = ("deep_supervision", "organ_head", "pixel_size_head", "domain_head")
NON_NET_KEYS = ("arch", "train", "organs", *HEAD_KEYS)


class Segmenter(nn.Module):
    """Normalises, pads to the stride, runs the network and returns full-size mask logits.

    ``forward(x)`` returns (B, 1, H, W) logits; ``forward(x, heads=True)`` returns a dict with
    ``mask`` plus, where enabled, ``aux`` (one logit map per decoder level, at input size),
    ``organ`` (B, 5 organ logits), ``pixel_size`` (B, predicted log µm/px) and ``domain`` (B
    logits, target domain = 1; its input passes a gradient-reversal layer, see
    :mod:`.adversarial`).
    """

    def __init__(
        self,
        net: nn.Module,
        stride: int = 32,
        deep_supervision: bool = False,
        organ_head: bool = False,
        pixel_size_head: bool = False,
        domain_head: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.net = net
        self.stride = stride
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.aux_heads = nn.ModuleList()
        self.organ_head: nn.Module | None = None
        self.pixel_size_head: nn.Module | None = None
        self.domain_head: DomainClassifier | None = None
        if deep_supervision or organ_head or pixel_size_head or domain_head:
            level_channels, bottleneck_channels = self._probe_channels()
            if deep_supervision:
                self.aux_heads.extend(nn.Conv2d(c, 1, kernel_size=1) for c in level_channels)
            if organ_head:
                self.organ_head = nn.Linear(bottleneck_channels, len(ORGANS))
            if pixel_size_head:
                self.pixel_size_head = nn.Linear(bottleneck_channels, 1)
            if domain_head:
                self.domain_head = DomainClassifier(bottleneck_channels)

    @torch.no_grad()
    def _probe_channels(self) -> tuple[list[int], int]:
        was_training = self.net.training
        self.net.eval()  # no BatchNorm statistics updated, no random state consumed
        out = self.net(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE))
        self.net.train(was_training)
        return [level.shape[1] for level in out["levels"]], out["bottleneck"].shape[1]

    @property
    def has_heads(self) -> bool:
        return bool(self.aux_heads) or any(
            h is not None for h in (self.organ_head, self.pixel_size_head, self.domain_head)
        )

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.stride, -w % self.stride
        if not (pad_h or pad_w):
            return x
        # Reflection keeps tissue statistics at the border; replicate for inputs too small to
        # reflect (fewer pixels than the padding).
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)

    @staticmethod
    def _to_input(
        logits: torch.Tensor, padded: tuple[int, int], size: tuple[int, int]
    ) -> torch.Tensor:
        if tuple(logits.shape[-2:]) != padded:
            logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
        return logits[..., : size[0], : size[1]]

    def forward(
        self, x: torch.Tensor, heads: bool = False
    ) -> torch.Tensor | dict[str, torch.Tensor | list[torch.Tensor]]:
        size = (x.shape[-2], x.shape[-1])
        x = self._pad((x - self.mean) / self.std)
        padded = (x.shape[-2], x.shape[-1])
        out = self.net(x)
        if isinstance(out, torch.Tensor):  # a plain network: logits only, no training heads
            out = {"logits": out, "levels": [], "bottleneck": None}
        mask = self._to_input(out["logits"], padded, size)
        if not heads:
            return mask
        result: dict[str, Any] = {"mask": mask}
        if self.aux_heads:
            result["aux"] = [
                self._to_input(head(level), padded, size)
                for head, level in zip(self.aux_heads, out["levels"], strict=True)
            ]
        if self.organ_head is not None or self.pixel_size_head is not None:
            pooled = out["bottleneck"].mean(dim=(2, 3))
            if self.organ_head is not None:
                result["organ"] = self.organ_head(pooled)
            if self.pixel_size_head is not None:
                result["pixel_size"] = self.pixel_size_head(pooled).squeeze(1)
        if self.domain_head is not None:
            result["domain"] = self.domain_head(out["bottleneck"])
        return result


def build_model(cfg: dict[str, Any]) -> Segmenter:
    """Build a model from its params.yaml config: ``arch`` (a registered name), the network's
    keyword arguments, and the wrapper's head switches; ``train`` and ``organs`` are ignored."""
    arch = cfg.get("arch")
    registered = get_model(arch)
    net_kwargs = {k: v for k, v in cfg.items() if k not in NON_NET_KEYS}
    heads = {k: bool(cfg.get(k, False)) for k in HEAD_KEYS}
    return Segmenter(registered.factory(**net_kwargs), stride=registered.stride, **heads)
