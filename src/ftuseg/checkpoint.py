"""Model checkpoints: weights as safetensors plus a JSON sidecar with what is needed to rebuild
and use the model (architecture config, training scale, provenance)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from .errors import DataError
from .models import Segmenter, build_model
from .utils import atomic_path, read_json, write_json

WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"


def save_checkpoint(directory: str | Path, model: Segmenter, meta: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``model.json`` into ``directory``, each atomically."""
    directory = Path(directory)
    if "model_cfg" not in meta or "um_per_px" not in meta:
        raise ValueError("checkpoint meta needs 'model_cfg' and 'um_per_px'")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json(directory / META_NAME, meta)


def load_checkpoint(directory: str | Path) -> tuple[Segmenter, dict[str, Any]]:
    """Rebuild the model of a checkpoint directory in eval mode, on the CPU."""
    directory = Path(directory)
    weights, meta_path = directory / WEIGHTS_NAME, directory / META_NAME
    for p in (weights, meta_path):
        if not p.is_file():
            raise DataError(f"{p}: checkpoint file not found")
    meta = read_json(meta_path)
    model = build_model(meta["model_cfg"])
    model.load_state_dict(load_file(str(weights)))
    return model.eval(), meta
