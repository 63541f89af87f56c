"""Test-time normalisation statistics on the kidney study's trained models.

``inference.adapt_norm`` changes nothing in training, so it is measured on the models the study
already trained: each finished ``kidney-<method>-s<seed>`` experiment's two fold models (read
from this clone's DVC cache through the experiment's ``dvc.lock``) and its tuned threshold
(``data/ensemble.yaml``) predict the study's 40 test images through the product's engine with
``adapt_norm`` = ``--weight``. The per-image Dice is archived in ``results/kidney_runs.csv`` as
run ``kidney-<method>+adapt<weight>-s<seed>`` (kind ``test``), so
``kidney_study.py --report`` lists it beside the method without it.

    python research/kidney_adapt.py --work ../kidney-study --methods scale density --weight 1

The experiments' refs must be in this clone (``git fetch <clone> 'refs/exps/*:refs/exps/*'``
where another clone ran them, with ``--cache <clone>/.dvc/cache``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import tifffile
import yaml
from experiments import ROOT, named_runs, show_at
from kidney_study import RESULT_FILES, finished

from ftuseg.core import rle
from ftuseg.core.metrics import dice
from ftuseg.infer.engine import InferenceConfig, Predictor
from ftuseg.infer.members import EnsembleConfig

# The DVC cache holding the experiments' models (``--cache``: the clone that ran them).
CACHE = [ROOT / ".dvc" / "cache"]


def cached(md5: str) -> Path:
    return CACHE[0] / "files" / "md5" / md5[:2] / md5[2:]


def fold_models(rev: str, members: Iterable[str], out: Path) -> list[Path]:
    """The fold model folders of the ensemble's ``members`` (the lock also holds the base
    commit's other architectures), copied out of the DVC cache into ``out``."""
    lock = yaml.safe_load(show_at(rev, "dvc.lock"))
    dirs = []
    for name, stage in lock["stages"].items():
        if not name.startswith("train@"):
            continue
        for o in stage["outs"]:
            if o["path"].split("/")[:2] in [["models", m] for m in members]:
                target = out / o["path"]
                for entry in json.loads(cached(o["md5"]).read_text()):
                    (target / entry["relpath"]).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(cached(entry["md5"]), target / entry["relpath"])
                dirs.append(target)
    if not dirs:
        raise SystemExit(f"{rev}: no trained model in its dvc.lock")
    return sorted(dirs)


def scored(rev: str, data: Path, weight: float) -> pd.DataFrame:
    """Per-image Dice of the experiment's ensemble on the study's test images."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "ensemble.yaml"
        config.write_text(show_at(rev, "data/ensemble.yaml"))
        ensemble = EnsembleConfig.load(config)
    labels = pd.read_csv(data / "test_labels.csv", dtype={"id": str}).set_index("id")["rle"]
    meta = pd.read_csv(data / "test.csv", dtype={"id": str})
    with tempfile.TemporaryDirectory() as tmp:
        models = fold_models(rev, ensemble.members, Path(tmp))
        predictor = Predictor.from_checkpoints(
            [(m, 1.0) for m in models], InferenceConfig(adapt_norm=weight)
        )
        rows = []
        for r in meta.itertuples(index=False):
            image = tifffile.imread(data / "test_images" / f"{r.id}.tiff")
            truth = rle.decode(labels[r.id], image.shape[:2]).astype(bool)
            prob = predictor.predict(image, r.pixel_size, r.organ)
            score = dice(prob >= ensemble.threshold(r.organ), truth)
            rows.append({"id": r.id, "organ": r.organ, "dice": score})
            print(f"  {r.id}: {rows[-1]['dice']:.4f}", flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="kidney_study.py's --work")
    ap.add_argument("--methods", nargs="+", required=True)
    ap.add_argument("--weight", type=float, default=1.0)
    ap.add_argument("--cache", type=Path, default=CACHE[0], help="DVC cache holding the models")
    args = ap.parse_args()
    CACHE[0] = args.cache
    archive = finished()
    runs = named_runs("kidney-")
    for name, rev in sorted(runs.items()):
        method, seed = name.removeprefix("kidney-").rsplit("-s", 1)
        adapted = f"kidney-{method}+adapt{args.weight:g}-s{seed}"
        if method not in args.methods or adapted in archive.names():
            continue
        print(f"{adapted} ...", flush=True)
        table = scored(rev, args.work / "data", args.weight)
        archive.add({adapted: rev}, lambda _rev, path, t=table: t if path == RESULT_FILES["test"]
                    else None)  # fmt: skip
        archive.save()
    subprocess.run([sys.executable, str(ROOT / "research" / "kidney_study.py"), "--report"],
                   check=True, capture_output=True)  # fmt: skip


if __name__ == "__main__":
    main()
