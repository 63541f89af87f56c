"""Architectures registered by name (``arch`` in a model's config), as timm and smp do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

NetFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class Registered:
    factory: NetFactory
    stride: int  # input sides are padded to a multiple of this


_REGISTRY: dict[str, Registered] = {}


def register_model(name: str, stride: int = 32) -> Callable[[NetFactory], NetFactory]:
    """Register a factory of networks following the :class:`~ftuseg.models.nets.SegNet` contract.

    ``stride`` is the multiple that input height and width must have; the
    :class:`~ftuseg.models.segmenter.Segmenter` pads inputs to it.
    """

    def decorator(factory: NetFactory) -> NetFactory:
        if name in _REGISTRY:
            raise ValueError(f"model architecture {name!r} is already registered")
        _REGISTRY[name] = Registered(factory, stride)
        return factory

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model(name: str) -> Registered:
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown model architecture {name!r}; registered: {', '.join(list_models())}"
        )
    return _REGISTRY[name]
