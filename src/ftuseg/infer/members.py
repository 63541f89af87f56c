"""The ensemble as the submission and the kernel read it: members, weights, thresholds, scale."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftuseg.core.errors import DataError
from ftuseg.core.layout import checkpoint_dir
from ftuseg.core.utils import read_yaml, write_yaml

# A model bundle's files (the kernel's dataset, the models shipped in the package)
BUNDLE_MARKER = "ftuseg-bundle.json"
ENSEMBLE_NAME = "ensemble.yaml"
INFERENCE_NAME = "inference.yaml"


@dataclass(frozen=True)
class EnsembleConfig:
    """``data/ensemble.yaml``: written by the ensemble stage, read by submit and the kernel."""

    members: dict[str, float]  # model name -> weight (sums to 1)
    thresholds: dict[str, float]  # organ -> threshold tuned on OOF
    um_per_px: float
    # Threshold for an organ the OOF data had no image of (params: ensemble.untuned_threshold);
    # None = such an organ is an error rather than silently getting some value.
    untuned_threshold: float | None = None
    # data source -> organ -> threshold, overriding ``thresholds`` where the source is known
    source_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)

    def threshold(self, organ: str, data_source: str | None = None) -> float:
        by_source = self.source_thresholds.get(data_source or "", {})
        if organ in by_source:
            return by_source[organ]
        if organ in self.thresholds:
            return self.thresholds[organ]
        if self.untuned_threshold is None:
            raise DataError(
                f"no threshold for organ {organ!r}: the OOF data had no {organ} image to tune one "
                f"on (tuned: {sorted(self.thresholds)}); set ensemble.untuned_threshold to use a "
                "fixed value for such organs"
            )
        return self.untuned_threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "um_per_px": self.um_per_px,
            "members": dict(self.members),
            "thresholds": dict(self.thresholds),
            "untuned_threshold": self.untuned_threshold,
            "source_thresholds": {k: dict(v) for k, v in self.source_thresholds.items()},
        }

    def save(self, path: str | Path) -> None:
        write_yaml(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> EnsembleConfig:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: ensemble config not found (run the ensemble stage)")
        d = read_yaml(path)
        try:
            untuned = d.get("untuned_threshold")
            return cls(
                members={str(k): float(v) for k, v in d["members"].items()},
                thresholds={str(k): float(v) for k, v in d["thresholds"].items()},
                um_per_px=float(d["um_per_px"]),
                untuned_threshold=None if untuned is None else float(untuned),
                source_thresholds={
                    str(s): {str(o): float(t) for o, t in m.items()}
                    for s, m in (d.get("source_thresholds") or {}).items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{path}: not a valid ensemble config ({exc!r})") from None


def ensemble_members(
    models_dir: str | Path, config: EnsembleConfig, folds: Sequence[int]
) -> list[tuple[Path, float]]:
    """Checkpoint dirs and weights: each model's weight is split evenly over its fold models."""
    return [
        (checkpoint_dir(models_dir, name, fold), weight / len(folds))
        for name, weight in config.members.items()
        for fold in folds
    ]
