"""Segmentation architectures, registered by name, behind one wrapper.

``build_model(cfg)`` looks ``cfg["arch"]`` up in the registry (see :mod:`.zoo` for the
architectures) and wraps the network in a :class:`Segmenter`.
"""

from ftuseg.models import zoo  # noqa: F401  (registers the architectures)
from ftuseg.models.registry import get_model, list_models, register_model
from ftuseg.models.segmenter import IMAGENET_MEAN, IMAGENET_STD, Segmenter, build_model

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Segmenter",
    "build_model",
    "get_model",
    "list_models",
    "register_model",
]
