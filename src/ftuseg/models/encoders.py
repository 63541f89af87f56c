"""timm backbones as multi-scale feature extractors (``features_only``) for any input size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import PatchEmbed
from torch import nn


def pretrained_kwargs(pretrained: bool, weights_file: str | None = None) -> dict[str, Any]:
    """timm ``create_model`` arguments for the weights to start from.

    ``pretrained`` downloads the model's default weights (Hugging Face hub cache; set
    ``HF_HUB_OFFLINE=1`` to use the cache only). ``weights_file`` points at a local
    ``.safetensors``/``.pth`` file instead, for machines without internet (Kaggle kernels).
    """
    if weights_file:
        path = Path(weights_file)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights file not found: {path}")
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}
    return {"pretrained": bool(pretrained)}


def _follow_input_size(module: PatchEmbed, args: tuple[torch.Tensor, ...]) -> None:
    # Models such as CoaT read the token grid from `patch_embed.grid_size` (fixed at img_size);
    # keep it equal to the grid of the actual input so any stride-divisible size works.
    h, w = args[0].shape[-2:]
    ph, pw = module.patch_size
    module.grid_size = (h // ph, w // pw)
    module.num_patches = module.grid_size[0] * module.grid_size[1]


class TimmEncoder(nn.Module):
    """A timm backbone returning NCHW feature maps, finest first.

    ``channels`` and ``reductions`` describe the returned maps. Transformers whose patch
    embedding is tied to ``img_size`` (Swin, CoaT) are made size-agnostic: Swin through timm's
    ``strict_img_size=False`` (windows padded, masks computed per input), CoaT by letting its patch
    grids follow the input.
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        weights_file: str | None = None,
        out_indices: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if name.startswith("swin"):
            kwargs.setdefault("strict_img_size", False)
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
        self.model = timm.create_model(
            name, features_only=True, **pretrained_kwargs(pretrained, weights_file), **kwargs
        )
        self.channels: list[int] = list(self.model.feature_info.channels())
        self.reductions: list[int] = list(self.model.feature_info.reduction())
        self.channels_last = str(getattr(self.model, "output_fmt", "NCHW")).endswith("NHWC")
        for module in self.model.modules():
            if isinstance(module, PatchEmbed) and module.strict_img_size:
                module.strict_img_size = False
                module.register_forward_pre_hook(_follow_input_size)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.model(x)
        if self.channels_last:
            features = [f.permute(0, 3, 1, 2).contiguous() for f in features]
        return list(features)
