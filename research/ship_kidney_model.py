"""Ship the glomerulus model of a finished ``kidney-real`` run into the package.

    ftuseg params profile=kidney-real && time dvc repro submit      # in a clone of the project
    python research/ship_kidney_model.py RUN_DIR --wall-minutes M      # M: what `time` said

Writes ``src/ftuseg/assets/models/kidney/``: the fold's checkpoint as an fp16 bundle
(:func:`ftuseg.infer.shipped.ship`), the record of the run (``run/``: params, dvc.lock, metrics); the fold shipped is the one with the best validation Dice,
``card.json`` (the shipped model's Dice on the run's held-out real test tiles, per tile and with
a 95 % bootstrap interval, beside the run's OOF and ensemble numbers) and ``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ftuseg.core.metrics import bootstrap_interval, dice
from ftuseg.core.utils import write_json
from ftuseg.data.contract import read_metadata, row_mask
from ftuseg.infer.members import EnsembleConfig
from ftuseg.infer.shipped import ship
from ftuseg.infer.submission import predict_test
from ftuseg.kaggle.runtime import load_bundle

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "ftuseg" / "assets" / "models" / "kidney"
ORGAN = "kidney"
RECORD = (
    "params.yaml",
    "dvc.lock",
    "metrics/oof.json",
    "metrics/ensemble.json",
    "metrics/test.json",
)


def score(bundle: Path, raw: Path) -> pd.DataFrame:
    """Per-tile Dice of the shipped bundle on the run's test tiles (their truth: test_labels)."""
    predictor, config, _ = load_bundle(bundle)
    test = read_metadata(raw / "test.csv", kind="test")
    test = test[test["organ"] == ORGAN]
    labels = pd.read_csv(raw / "test_labels.csv", dtype={"id": str}).set_index("id")["rle"]
    rows = {row.id: row for row in test.itertuples(index=False)}
    out = []
    for tile_id, pred in predict_test(test, raw / "test_images", predictor, config):
        truth = row_mask(rows[tile_id], raw / "test_labels.csv", labels[tile_id])
        out.append((tile_id, round(dice(pred, truth), 5)))
    return pd.DataFrame(out, columns=["id", "dice"])


def card(
    run: Path, per_tile: pd.DataFrame, wall_minutes: float, fold: int, config: EnsembleConfig
) -> dict:
    params = yaml.safe_load((run / "params.yaml").read_text())
    oof = json.loads((run / "metrics/oof.json").read_text())["unet"]  # the one architecture
    ensemble = json.loads((run / "metrics/ensemble.json").read_text())
    run_test = json.loads((run / "metrics/test.json").read_text())
    low, high = bootstrap_interval(per_tile["dice"].to_numpy())
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=run, capture_output=True, text=True, check=True
    ).stdout.strip()
    return {
        "organ": ORGAN,
        "fold": fold,
        "run_commit": commit,
        "wall_minutes": wall_minutes,
        "um_per_px": params["prepare"]["um_per_px"],
        "test_tiles": len(per_tile),
        "test_dice": round(float(per_tile["dice"].mean()), 5),
        "test_dice_lo95": round(low, 5),
        "test_dice_hi95": round(high, 5),
        "oof_dice": oof["dice"],
        "oof_cross_fitted": ensemble["ensemble_cross_fitted"]["dice"],
        "oof_cross_fitted_lo95": ensemble["ensemble_cross_fitted"]["dice_lo95"],
        "oof_cross_fitted_hi95": ensemble["ensemble_cross_fitted"]["dice_hi95"],
        "run_ensemble_test_dice": run_test["dice"],
        "threshold": config.threshold(ORGAN),
        "per_tile": dict(zip(per_tile["id"], per_tile["dice"], strict=True)),
    }


def best_fold(run: Path) -> int:
    """The fold whose kept epoch had the best validation Dice (never chosen on the test tiles)."""
    scores = {
        int(log.parent.name.removeprefix("fold")): json.loads(log.read_text())["best_val_dice"]
        for log in (run / "logs/train/unet").glob("fold*/metrics.json")
    }
    return max(scores, key=scores.get)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="workspace of the finished kidney-real run")
    ap.add_argument("--wall-minutes", type=float, required=True)
    ap.add_argument("--wall-note", default="", help="how the time was measured (e.g. contended)")
    ap.add_argument("--fold", type=int, help="default: the fold with the best validation Dice")
    args = ap.parse_args()
    run = args.run.resolve()
    if args.fold is None:
        args.fold = best_fold(run)
    params = yaml.safe_load((run / "params.yaml").read_text())
    config = EnsembleConfig.load(run / "data/ensemble.yaml")
    ship(run / "models/unet" / f"fold{args.fold}", config, ORGAN, params["inference"], OUT)
    for rel in RECORD:
        (OUT / "run" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / rel, OUT / "run" / rel)
    per_tile = score(OUT, run / params["data"]["raw_dir"])
    facts = {
        **card(run, per_tile, args.wall_minutes, args.fold, config),
        "wall_note": args.wall_note,
    }
    write_json(OUT / "card.json", facts)
    (OUT / "MODEL_CARD.md").write_text(model_card(facts, params))
    print(json.dumps({k: v for k, v in facts.items() if k != "per_tile"}, indent=1))
    print(f"shipped -> {OUT}; per-tile min {np.min(per_tile['dice']):.3f}")


def model_card(f: dict, params: dict) -> str:
    t = params["train"]
    m = params["models"]["unet"]
    return f"""# Model card: kidney glomerulus segmenter (shipped)

`ftuseg predict IMAGE --organ kidney --pixel-size UM` uses this model when neither `--models` nor
`--bundle` is given. Numbers below come from `card.json`, written by
`research/ship_kidney_model.py` from the run recorded in `run/` (commit `{f["run_commit"][:10]}`).

| | |
|---|---|
| task | binary segmentation of renal glomeruli (the kidney FTU) |
| architecture | U-Net (segmentation-models-pytorch), encoder `{m["encoder"]}` trained from scratch, decoder {m["decoder_channels"]} |
| weights | fold {f["fold"]} of the run, fp16 safetensors (computed in fp32) |
| scale | predicts at {f["um_per_px"]} µm/px; any input is resampled from its µm/px (give `--pixel-size` or metadata) |
| threshold | {f["threshold"]} (tuned on the run's out-of-fold predictions) |
| training data | 90 real HuBMAP PAS kidney tiles (Vanderbilt; `ftuseg/assets/kidney_pas/`, MIT / HuBMAP open data) |
| recipe | profile `kidney-real`: {t["epochs"]} epochs, {t["crop_size"]}² crops, {t["samples_per_image"]} crops per image and epoch, batch {t["batch_size"]}, lr {t["lr"]}, 2 folds |
| training time | {f["wall_minutes"]:.0f} min for the whole run (`dvc repro submit`, 2 folds, 2 CPU cores{", " + f["wall_note"] if f["wall_note"] else ""}) |
| held-out test Dice | **{f["test_dice"]:.3f}** [{f["test_dice_lo95"]:.3f}, {f["test_dice_hi95"]:.3f}] (95 % bootstrap over {f["test_tiles"]} real tiles, ≈1.0 µm/px, never trained on) |
| out-of-fold Dice | {f["oof_dice"]:.3f} (both folds, threshold 0.5); cross-fitted (threshold tuned on the other fold) {f["oof_cross_fitted"]:.3f} [{f["oof_cross_fitted_lo95"]:.3f}, {f["oof_cross_fitted_hi95"]:.3f}] over the 90 training tiles |

## What it is not for
- Other organs, other FTUs, or stains other than PAS: it has seen PAS kidney from one lab only.
- Other labs' PAS, not tested here: lighter or thinner staining and another scanner can lower
  its Dice a lot; score it on a few of your own annotated tiles first, and train on them with
  the `kidney-real` recipe (docs/own-data.md).
- Diagnosis: it is a research model, validated on 20 tiles of one lab.
"""


if __name__ == "__main__":
    main()
