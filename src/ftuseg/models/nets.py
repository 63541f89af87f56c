"""The contract every registered network follows, and the two ways networks are assembled.

A network maps a (B, 3, H, W) normalised batch (H, W multiples of its stride) to a dict:

- ``logits``: (B, 1, h, w) mask logits, ``h ≤ H`` (upsampled to the input by the Segmenter);
- ``levels``: the decoder's per-level feature maps (deep supervision attaches heads to them);
- ``bottleneck``: the deepest encoder feature map (organ and pixel-size heads pool it).

A network may also return plain logits (a tensor); it then supports no training heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn


class EncoderDecoder(nn.Module):
    """An encoder returning a feature pyramid and a decoder returning ``(logits, levels)``."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        features = self.encoder(x)
        logits, levels = self.decoder(features)
        return {"logits": logits, "levels": levels, "bottleneck": features[-1]}


class SmpNet(nn.Module):
    """A segmentation-models-pytorch model under the same contract.

    smp decoders return only their fused output; forward hooks on the named decoder modules
    collect the per-level maps for deep supervision without re-implementing the decoder.
    """

    def __init__(self, model: nn.Module, level_modules: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self._levels: list[torch.Tensor] = []
        modules = dict(model.named_modules())
        for name in level_modules:
            modules[name].register_forward_hook(self._collect)

    def _collect(self, module: nn.Module, args: object, output: torch.Tensor) -> None:
        self._levels.append(output)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        self._levels = []
        features = self.model.encoder(x)
        decoded = self.model.decoder(features)
        logits = self.model.segmentation_head(decoded)
        levels, self._levels = self._levels, []
        return {"logits": logits, "levels": levels, "bottleneck": features[-1]}


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local weight file (safetensors, or a PyTorch file read with ``weights_only``)
    into an encoder; every encoder tensor must be present."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    # The base method: some smp encoders (MiT) override load_state_dict without `strict`;
    # unexpected keys (a classifier head) are ignored, missing ones are an error below.
    missing, _ = nn.Module.load_state_dict(encoder, state, strict=False)
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} encoder tensors missing (e.g. {missing[0]!r}); "
            "is this the right encoder's weight file?"
        )
