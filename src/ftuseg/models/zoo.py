"""The architecture zoo: every network the pipeline can train, registered by ``arch`` name.

Encoders come from timm (``features_only``) or smp; smp decoders are used where they exist
(U-Net, UPerNet, SegFormer's all-MLP head) and the others are in :mod:`.decoders`. Each factory
takes ``pretrained`` (timm/smp default weights, downloaded when online) and ``weights_file`` (a
local file, for offline machines).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import segmentation_models_pytorch as smp

from ftuseg.models.decoders import DAFormerDecoder, HRNetV2Head, SwinUnetDecoder
from ftuseg.models.encoders import TimmEncoder, pretrained_kwargs
from ftuseg.models.nets import EncoderDecoder, SmpNet, load_encoder_weights
from ftuseg.models.registry import register_model


def _smp_encoder_args(
    encoder: str, pretrained: bool, weights_file: str | None, encoder_kwargs: dict[str, Any]
) -> dict[str, Any]:
    kwargs = dict(encoder_kwargs)
    if encoder.startswith("tu-") and encoder[3:].startswith("swin"):
        kwargs.setdefault("strict_img_size", False)  # any input size, windows padded per input
    # smp: `True` asks timm for the encoder's default pretrained tag; "imagenet" for smp's own.
    default_weights: str | bool = True if encoder.startswith("tu-") else "imagenet"
    weights = default_weights if pretrained else None
    if weights_file and encoder.startswith("tu-"):
        # timm loads the local file in place of the download.
        kwargs["pretrained_cfg_overlay"] = pretrained_kwargs(True, weights_file)[
            "pretrained_cfg_overlay"
        ]
        weights = True
    elif weights_file:
        # smp's own encoders (mit_b*, resnet*): built empty, the file is loaded into the encoder
        # afterwards (_smp_net); asking smp for "imagenet" too would download regardless.
        weights = None
    return {"encoder_name": encoder, "encoder_weights": weights, **kwargs}


def _smp_net(model: Any, levels: Sequence[str], encoder: str, weights_file: str | None) -> SmpNet:
    if weights_file and not encoder.startswith("tu-"):
        load_encoder_weights(model.encoder, weights_file)
    return SmpNet(model, levels)


@register_model("smp_unet")
def smp_unet(
    encoder: str = "tu-efficientnet_b0",
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    pretrained: bool = False,
    weights_file: str | None = None,
    encoder_kwargs: dict[str, Any] | None = None,
) -> SmpNet:
    """U-Net (smp) on an smp encoder or a timm one (``tu-`` prefix: EfficientNet, ConvNeXt...)."""
    model = smp.Unet(
        decoder_channels=tuple(decoder_channels),
        classes=1,
        **_smp_encoder_args(encoder, pretrained, weights_file, encoder_kwargs or {}),
    )
    levels = [f"decoder.blocks.{i}" for i in range(len(model.decoder.blocks))]
    return _smp_net(model, levels, encoder, weights_file)


@register_model("upernet")
def upernet(
    encoder: str = "tu-swin_tiny_patch4_window7_224",
    decoder_channels: int = 256,
    pretrained: bool = False,
    weights_file: str | None = None,
    encoder_kwargs: dict[str, Any] | None = None,
) -> SmpNet:
    """UPerNet (smp: pyramid pooling at 1, 2, 3, 6 + FPN, fused by 3×3 conv), Swin by default."""
    model = smp.UPerNet(
        decoder_channels=decoder_channels,
        classes=1,
        **_smp_encoder_args(encoder, pretrained, weights_file, encoder_kwargs or {}),
    )
    levels = ["decoder.psp"] + [
        f"decoder.fpn_conv_blocks.{i}" for i in range(len(model.decoder.fpn_conv_blocks))
    ]
    return _smp_net(model, levels, encoder, weights_file)


@register_model("segformer")
def segformer(
    encoder: str = "mit_b0",
    decoder_channels: int = 256,
    pretrained: bool = False,
    weights_file: str | None = None,
    encoder_kwargs: dict[str, Any] | None = None,
) -> SmpNet:
    """SegFormer (smp): Mix Transformer encoder and the all-MLP decoder."""
    model = smp.Segformer(
        decoder_segmentation_channels=decoder_channels,
        classes=1,
        **_smp_encoder_args(encoder, pretrained, weights_file, encoder_kwargs or {}),
    )
    levels = [f"decoder.mlp_stage.{i}" for i in range(len(model.decoder.mlp_stage))]
    return _smp_net(model, levels, encoder, weights_file)


@register_model("coat_daformer")
def coat_daformer(
    encoder: str = "coat_lite_medium",
    embed_dim: int = 320,
    fuse: str = "conv3x3",
    aspp_rates: Sequence[int] = (6, 12, 18),
    pretrained: bool = False,
    weights_file: str | None = None,
    encoder_kwargs: dict[str, Any] | None = None,
) -> EncoderDecoder:
    """CoaT (timm) + DAFormer decoder (fuse: conv3x3 | conv1x1 | aspp)."""
    backbone = TimmEncoder(encoder, pretrained, weights_file, **(encoder_kwargs or {}))
    return EncoderDecoder(backbone, DAFormerDecoder(backbone.channels, embed_dim, fuse, aspp_rates))


@register_model("hrnet")
def hrnet(
    encoder: str = "hrnet_w18",
    pretrained: bool = False,
    weights_file: str | None = None,
    encoder_kwargs: dict[str, Any] | None = None,
) -> EncoderDecoder:
    """HRNet (timm) with the HRNetV2 head on its four resolution branches (/4 to /32)."""
    kwargs = {"feature_location": "", "out_indices": (1, 2, 3, 4), **(encoder_kwargs or {})}
    backbone = TimmEncoder(encoder, pretrained, weights_file, **kwargs)
    return EncoderDecoder(backbone, HRNetV2Head(backbone.channels))


@register_model("swin_unet")
def swin_unet(
    encoder: str = "swin_tiny_patch4_window7_224",
    num_heads: Sequence[int] = (3, 6, 12, 24),
    decoder_depths: Sequence[int] | int = 2,
    window_size: int = 7,
    drop_path: float = 0.1,
    pretrained: bool = False,
    weights_file: str | None = None,
    encoder_kwargs: dict[str, Any] | None = None,
) -> EncoderDecoder:
    """Swin-Unet: a Swin encoder (timm) and the symmetric Swin decoder with skips."""
    kwargs = {"window_size": window_size, **(encoder_kwargs or {})}
    if "num_heads" in kwargs:
        num_heads = kwargs["num_heads"]
    backbone = TimmEncoder(encoder, pretrained, weights_file, **kwargs)
    decoder = SwinUnetDecoder(backbone.channels, num_heads, decoder_depths, window_size, drop_path)
    return EncoderDecoder(backbone, decoder)
