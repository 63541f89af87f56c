"""Resumable training state: what a killed training run needs to continue bit-identically.

After every epoch the trainer writes, atomically, into its state folder (a DVC output with
``persist: true``, so ``dvc repro`` keeps it across an interrupted run):

- ``state.safetensors``: model weights, optimizer tensors, the torch CPU RNG state and, on a
  GPU, every CUDA device's RNG state, the weights of the best epoch so far and, with
  ``train.ema_decay``, the moving average of the weights (prefixed ``model.``, ``optim.``,
  ``rng.``, ``best.``, ``ema.``), with the bookkeeping in its metadata: the epoch
  reached, best score and epoch, early-stopping counter, the metrics logged so far (replayed
  into dvclive on resume), the optimizer's non-tensor state, the mixed-precision GradScaler's
  state, and a fingerprint of everything that determines the run (config, data split, device
  type, and a digest of the content of its input files). One file, one atomic rename: a kill at
  any moment leaves either the previous epoch's state or the new one.
- ``state.json``: a readable copy of the bookkeeping.

A state whose fingerprint differs from the current run is ignored, so changed params never
resume.

When training completes, the tensors are deleted and ``state.json`` says ``complete``; a later
run with the same fingerprint (e.g. ``dvc repro --force``) starts from scratch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ftuseg.core.errors import DataError
from ftuseg.core.utils import atomic_path, write_json
from ftuseg.models.checkpoint import savable_tensors

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def inputs_digest(files: Iterable[Path]) -> str:
    """SHA-256 over the names (``folder/file``) and bytes of ``files``, in sorted order: a
    state resumes only onto the very data it was trained on, not onto files that were
    re-prepared under the same ids."""
    digest = hashlib.sha256()
    # Ordered by the hashed names, not the full paths: where the folders sit must not matter.
    named = sorted((f"{Path(p).parent.name}/{Path(p).name}", Path(p)) for p in files)
    for name, path in named:
        digest.update(name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


@dataclass
class TrainingState:
    fingerprint: str
    epoch: int = 0  # epochs completed
    best_val_dice: float = -1.0
    best_epoch: int = -1
    stale: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # one dict of metrics per epoch
    complete: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "best_val_dice": self.best_val_dice,
            "best_epoch": self.best_epoch,
            "stale": self.stale,
            "history": self.history,
            "complete": self.complete,
        }


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars["state"].setdefault(str(pid), {})[key] = value
    return tensors, scalars


def _unflatten_optimizer(
    tensors: dict[str, torch.Tensor], scalars: dict[str, Any]
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in scalars["state"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": scalars["param_groups"]}


def save_state(
    directory: str | Path,
    state: TrainingState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    best_weights: dict[str, torch.Tensor] | None,
    scaler: torch.amp.GradScaler | None = None,
    ema: torch.nn.Module | None = None,
) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    optim_tensors, optim_scalars = _flatten_optimizer(optimizer.state_dict())
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(optim_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    if best_weights is not None:
        tensors.update({f"best.{k}": v for k, v in best_weights.items()})
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    meta = {
        **state.to_json(),
        "optimizer": optim_scalars,
        # scale, growth tracker...: without them a resumed AMP run re-learns its loss scale
        "grad_scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
    }
    with atomic_path(directory / STATE_TENSORS) as tmp:
        save_file(savable_tensors(tensors), str(tmp), metadata={"state": json.dumps(meta)})
    write_json(directory / STATE_JSON, meta)


def mark_complete(directory: str | Path, state: TrainingState) -> None:
    directory = Path(directory)
    state.complete = True
    write_json(directory / STATE_JSON, state.to_json())
    (directory / STATE_TENSORS).unlink(missing_ok=True)


def load_state(
    directory: str | Path, expected_fingerprint: str
) -> tuple[TrainingState, dict[str, torch.Tensor], dict[str, Any]] | None:
    """The resumable state in ``directory``, or None if there is none for this exact run."""
    tensor_path = Path(directory) / STATE_TENSORS
    if not tensor_path.is_file():
        return None
    with safe_open(str(tensor_path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("state", "{}"))
    if (
        meta.get("complete")
        or meta.get("fingerprint") != expected_fingerprint
        or meta.get("epoch", 0) < 1
    ):
        return None
    state = TrainingState(
        fingerprint=meta["fingerprint"],
        epoch=int(meta["epoch"]),
        best_val_dice=float(meta["best_val_dice"]),
        best_epoch=int(meta["best_epoch"]),
        stale=int(meta["stale"]),
        history=list(meta["history"]),
    )
    return state, load_file(str(tensor_path)), meta


def restore(
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
    ema: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor] | None:
    """Load model, optimizer, RNG, GradScaler and weight-average state; return the best epoch's weights (if
    saved). A state that cannot be restored completely is an error, never a partial resume."""
    model.load_state_dict(
        {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    )
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(
        (int(k.rsplit(".", 1)[1]), v) for k, v in tensors.items() if k.startswith("rng.cuda.")
    )
    if cuda:
        if not torch.cuda.is_available() or torch.cuda.device_count() < len(cuda):
            raise DataError(
                f"the training state holds {len(cuda)} CUDA RNG state(s) but this machine has "
                f"{torch.cuda.device_count()} GPU(s); resume where it was saved, or set "
                "train.resume: false"
            )
        torch.cuda.set_rng_state_all([v for _, v in cuda])
    saved_scaler = meta.get("grad_scaler")
    if saved_scaler:
        if scaler is None or not scaler.is_enabled():
            raise DataError(
                "the training state holds a mixed-precision GradScaler but this run has none "
                "(train.amp differs?); set train.resume: false to start over"
            )
        scaler.load_state_dict(saved_scaler)
    averaged = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
    if bool(averaged) != (ema is not None):
        raise DataError(
            f"the training state {'holds' if averaged else 'lacks'} a moving average of the "
            f"weights but this run {'has none' if averaged else 'keeps one'} "
            "(train.ema_decay differs?); set train.resume: false to start over"
        )
    if ema is not None:
        ema.load_state_dict(averaged)
    best = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")}
    return best or None
