"""Imaging facts per organ: the HPA training domain and the HuBMAP test domain.

The numbers come from the competition's data description (see ``assets/PROVENANCE.md``); code
that needs a default reads them from here, and params.yaml can override them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ftuseg.core.errors import DataError

ORGANS: tuple[str, ...] = ("kidney", "prostate", "largeintestine", "spleen", "lung")


def check_organs(organs: Iterable[str], setting: str) -> None:
    """A DataError naming ``setting`` when ``organs`` (a per-organ setting's keys) holds one
    that is not a competition organ."""
    unknown = sorted(set(organs) - set(ORGANS))
    if unknown:
        raise DataError(f"{setting}: unknown organ(s) {unknown} (organs: {', '.join(ORGANS)})")


HPA_PIXEL_SIZE_UM = 0.4
HPA_THICKNESS_UM = 4.0
HPA_IMAGE_SIDE = 3000


@dataclass(frozen=True)
class OrganDomain:
    """Pixel size (µm/px) and section thickness (µm) of one organ in the HuBMAP test domain."""

    pixel_size: float
    thickness: float


HUBMAP: dict[str, OrganDomain] = {
    "kidney": OrganDomain(pixel_size=0.5, thickness=10.0),
    "prostate": OrganDomain(pixel_size=6.263, thickness=5.0),
    "largeintestine": OrganDomain(pixel_size=0.229, thickness=8.0),
    "spleen": OrganDomain(pixel_size=0.4945, thickness=4.0),
    "lung": OrganDomain(pixel_size=0.7562, thickness=5.0),
}

# Stain used by the HuBMAP side per organ (H&E everywhere except kidney, which HuBMAP sections
# with PAS in the competition's examples).
HUBMAP_STAIN: dict[str, str] = {
    "kidney": "pas",
    "prostate": "he",
    "largeintestine": "he",
    "spleen": "he",
    "lung": "he",
}
