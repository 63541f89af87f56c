"""Warm start (``train.init``): a run begins from a trained checkpoint's weights instead of a
fresh initialisation, so a lab with a few annotated tiles adapts a model rather than training
one from scratch.

``train.init`` names a checkpoint folder (``models/<model>/fold<k>``: ``model.safetensors`` +
``model.json``) or ``shipped:<organ>``, the model that ships for that organ. The checkpoint must
be of the architecture being trained (same ``model_cfg``, pretrained-weight settings aside);
its weights are loaded strictly, after the model is built and before the optimiser and the
weight average are, so both start from them.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from ftuseg.core.errors import DataError
from ftuseg.core.utils import read_json
from ftuseg.infer.members import BUNDLE_MARKER
from ftuseg.infer.shipped import shipped_bundle
from ftuseg.models import Segmenter
from ftuseg.models.checkpoint import META_NAME, WEIGHTS_NAME

log = logging.getLogger(__name__)

SHIPPED = "shipped:"
# Settings of a model config that say how its weights were first initialised, not what the
# network is: a checkpoint of the same network matches whatever they were.
INIT_ONLY = ("pretrained", "weights_file", "train")


def init_folder(source: str) -> Path:
    """The checkpoint folder ``train.init`` names (see the module docstring)."""
    if source.startswith(SHIPPED):
        bundle = shipped_bundle(source.removeprefix(SHIPPED))
        members = read_json(bundle / BUNDLE_MARKER)["members"]
        if len(members) != 1:
            raise DataError(
                f"train.init: {source} ships {len(members)} models; name one checkpoint folder "
                f"under {bundle} instead"
            )
        return bundle / members[0]["path"]
    folder = Path(source)
    for name in (WEIGHTS_NAME, META_NAME):
        if not (folder / name).is_file():
            raise DataError(
                f"train.init: {folder / name} not found (a checkpoint folder such as "
                "models/<model>/fold<k>, or shipped:<organ>)"
            )
    return folder


def network(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of a model config that fixes the network and its tensors."""
    return {k: v for k, v in model_cfg.items() if k not in INIT_ONLY}


def warm_start(
    model: Segmenter, model_cfg: dict[str, Any], source: str, um_per_px: float
) -> dict[str, str]:
    """Load the weights ``source`` names into ``model`` (in place, whatever its device and memory
    format); returns what the checkpoint meta and the run fingerprint record of them."""
    folder = init_folder(source)
    meta = read_json(folder / META_NAME)
    theirs, ours = network(meta["model_cfg"]), network(model_cfg)
    differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if differ:
        detail = "; ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in differ)
        raise DataError(f"train.init: {folder} is another architecture ({detail})")
    if meta.get("um_per_px") != um_per_px:
        log.warning(
            "train.init: %s was trained at %s µm/px, this run trains at %s (prepare.um_per_px)",
            folder,
            meta.get("um_per_px"),
            um_per_px,
        )
    weights = folder / WEIGHTS_NAME
    tensors = load_file(str(weights))
    state = model.state_dict()
    wrong = sorted(k for k in tensors if k in state and tensors[k].shape != state[k].shape)
    missing, extra = sorted(set(state) - set(tensors)), sorted(set(tensors) - set(state))
    if wrong or missing or extra:
        raise DataError(
            f"train.init: {weights} does not fit the model (other shapes: {wrong[:3]}, "
            f"missing: {missing[:3]}, unexpected: {extra[:3]})"
        )
    # Shipped weights are fp16: each tensor takes the dtype of the parameter it fills.
    model.load_state_dict({k: v.to(state[k].dtype) for k, v in tensors.items()})
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    log.info("train.init: starting from %s (sha256 %s)", folder, digest[:12])
    return {"source": source, "sha256": digest}
