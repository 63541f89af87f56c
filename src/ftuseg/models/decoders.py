"""Decoders that no library ships: DAFormer, the HRNetV2 head and Swin-Unet's decoder.

Every decoder takes the encoder's NCHW feature maps (finest first) and returns
``(logits, levels)``: one-channel logits at the finest decoder resolution and the decoder's
per-level feature maps, on which deep supervision attaches its auxiliary heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base.modules import Conv2dReLU
from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPP
from timm.models.swin_transformer import SwinTransformerStage
from torch import nn


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class DAFormerDecoder(nn.Module):
    """DAFormer's context-aware fusion decoder (Hoyer et al., 2022).

    Each level is embedded by 1×1 conv + BN + ReLU, upsampled to the finest level, and the
    concatenation is fused by a 3×3 conv, a 1×1 conv, or ASPP (dilations ``aspp_rates`` plus the
    1×1 and image-pooling branches). Logits come out at the finest level's resolution.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        embed_dim: int = 256,
        fuse: str = "conv3x3",
        aspp_rates: Sequence[int] = (6, 12, 18),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed = nn.ModuleList(Conv2dReLU(c, embed_dim, kernel_size=1) for c in in_channels)
        cat = embed_dim * len(in_channels)
        if fuse == "conv3x3":
            self.fuse: nn.Module = Conv2dReLU(cat, embed_dim, kernel_size=3, padding=1)
        elif fuse == "conv1x1":
            self.fuse = Conv2dReLU(cat, embed_dim, kernel_size=1)
        elif fuse == "aspp":
            self.fuse = ASPP(cat, embed_dim, tuple(aspp_rates), separable=False, dropout=dropout)
        else:
            raise ValueError(f"DAFormer fuse must be conv3x3, conv1x1 or aspp, not {fuse!r}")
        self.dropout = nn.Dropout2d(dropout)
        self.logits = nn.Conv2d(embed_dim, 1, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        levels = [embed(f) for embed, f in zip(self.embed, features, strict=True)]
        size = levels[0].shape[-2:]
        fused = self.fuse(torch.cat([_resize(x, size) for x in levels], dim=1))
        return self.logits(self.dropout(fused)), levels


class HRNetV2Head(nn.Module):
    """HRNetV2's segmentation head (Wang et al., 2019): every branch upsampled to the highest
    resolution, concatenated, mixed by 1×1 conv + BN + ReLU, then a 1×1 logit."""

    def __init__(self, in_channels: Sequence[int]) -> None:
        super().__init__()
        total = sum(in_channels)
        self.mix = Conv2dReLU(total, total, kernel_size=1)
        self.logits = nn.Conv2d(total, 1, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        size = features[0].shape[-2:]
        mixed = self.mix(torch.cat([_resize(f, size) for f in features], dim=1))
        return self.logits(mixed), list(features)


class PatchExpand(nn.Module):
    """Swin-Unet's patch expanding: a linear layer widens channels, which are rearranged into a
    ``scale``× larger grid (pixel shuffle), then layer-normalised. NHWC in and out."""

    def __init__(self, dim: int, scale: int = 2, out_dim: int | None = None) -> None:
        super().__init__()
        out_dim = out_dim or dim // scale
        self.scale = scale
        self.expand = nn.Linear(dim, out_dim * scale * scale, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.expand(x).permute(0, 3, 1, 2)
        x = F.pixel_shuffle(x, self.scale).permute(0, 2, 3, 1)
        return self.norm(x)


class SwinUnetDecoder(nn.Module):
    """Swin-Unet's symmetric decoder (Cao et al., 2021): from the deepest encoder stage up,
    patch expanding (×2), concatenation with the skip, a linear projection back to the level's
    width and a stage of Swin blocks; a final ×4 patch expanding returns to input resolution.

    Window attention pads and masks per input (timm's dynamic mask), so any size works.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_heads: Sequence[int],
        depths: Sequence[int] | int = 2,
        window_size: int = 7,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        n = len(in_channels)
        depths = [depths] * (n - 1) if isinstance(depths, int) else list(depths)
        self.expand = nn.ModuleList()
        self.project = nn.ModuleList()
        self.stages = nn.ModuleList()
        for level in range(n - 1, 0, -1):  # deepest first
            dim, skip = in_channels[level], in_channels[level - 1]
            self.expand.append(PatchExpand(dim, 2, skip))
            self.project.append(nn.Linear(2 * skip, skip))
            self.stages.append(
                SwinTransformerStage(
                    dim=skip,
                    out_dim=skip,
                    input_resolution=(window_size * 4, window_size * 4),
                    depth=depths[level - 1],
                    downsample=False,
                    num_heads=num_heads[level - 1],
                    window_size=window_size,
                    dynamic_mask=True,
                    drop_path=drop_path,
                )
            )
        self.final_expand = PatchExpand(in_channels[0], 4, in_channels[0])
        self.logits = nn.Linear(in_channels[0], 1)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = [f.permute(0, 2, 3, 1) for f in features]  # NHWC, as the Swin blocks expect
        x = skips[-1]
        levels = []
        for i, (expand, project, stage) in enumerate(
            zip(self.expand, self.project, self.stages, strict=True)
        ):
            skip = skips[-2 - i]
            x = expand(x)[:, : skip.shape[1], : skip.shape[2]]
            x = stage(project(torch.cat([x, skip], dim=-1)))
            levels.append(x.permute(0, 3, 1, 2))
        logits = self.logits(self.final_expand(x)).permute(0, 3, 1, 2)
        return logits, levels
