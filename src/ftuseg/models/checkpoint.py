"""Model checkpoints: weights as safetensors plus a JSON sidecar with what is needed to rebuild
and use the model (architecture config, training scale, provenance)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ftuseg.core.errors import DataError
from ftuseg.core.utils import atomic_path, read_json, write_json
from ftuseg.models import Segmenter, build_model

WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"


def savable_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors that safetensors accepts.

    safetensors refuses tensors sharing memory; some encoders tie modules (CoaT's serial blocks
    and its conv position encodings share one module), so their state dict lists the same
    storage under several names. Each later alias gets its own copy; loading writes the same
    values into the shared parameter once per name.
    """
    seen: set[int] = set()
    tensors = {}
    for name, value in state.items():
        tensor = value.detach().cpu()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen and tensor.numel():
            tensor = tensor.clone()
        seen.add(storage)
        tensors[name] = tensor.contiguous()
    return tensors


def save_checkpoint(directory: str | Path, model: Segmenter, meta: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``model.json`` into ``directory``, each atomically."""
    directory = Path(directory)
    if "model_cfg" not in meta or "um_per_px" not in meta:
        raise ValueError("checkpoint meta needs 'model_cfg' and 'um_per_px'")
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(savable_tensors(model.state_dict()), str(tmp), metadata={"format": "pt"})
    write_json(directory / META_NAME, meta)


def load_checkpoint(directory: str | Path) -> tuple[Segmenter, dict[str, Any]]:
    """Rebuild the model of a checkpoint directory in eval mode, on the CPU.

    Self-contained: the safetensors file holds every weight, so the network is built without
    its pretrained encoder weights whatever ``pretrained`` / ``weights_file`` said at training
    time. Loading never downloads and never opens a path of the training machine (the
    offline Kaggle kernel has neither internet nor that file).
    """
    directory = Path(directory)
    weights, meta_path = directory / WEIGHTS_NAME, directory / META_NAME
    for p in (weights, meta_path):
        if not p.is_file():
            raise DataError(f"{p}: checkpoint file not found")
    meta = read_json(meta_path)
    model = build_model({**meta["model_cfg"], "pretrained": False, "weights_file": None})
    model.load_state_dict(load_file(str(weights)))  # strict: every tensor must be there
    return model.eval(), meta
