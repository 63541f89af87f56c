"""Ship the glomerulus model of a finished ``kidney-real`` run into the package.

    ftuseg params profile=kidney-real && time dvc repro submit      # in a clone of the project
    python research/ship_kidney_model.py --run RUN_DIR --wall-minutes M   # M: what `time` said
    # or a finished kidney study experiment (its models read from this clone's DVC cache):
    python research/ship_kidney_model.py --exp kidney-lab-t05-full-s0 --wall-minutes M \
        --second-lab ../kidney-study/data

Writes ``src/ftuseg/assets/models/kidney/``: the fold's checkpoint as an fp16 bundle
(:func:`ftuseg.infer.shipped.ship`; the fold with the best validation Dice), the record of the
run (``run/``: params, dvc.lock, metrics), ``card.json`` and ``MODEL_CARD.md``. The card's test
Dice is the shipped model's on the 20 bundled held-out tiles (``ftuseg/assets/kidney_pas/test``,
what ``tests/test_shipped.py`` re-scores), per tile and with a 95 % bootstrap interval, beside the
run's OOF and ensemble numbers. With ``--second-lab`` (the kidney study's dataset) it also gives
the model's Dice on the study's second-lab proxy tiles and the hold (second lab ÷ the same tiles
as their lab made them, paired).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from experiments import named_runs, show_at
from glas_gap import bootstrap
from kidney_adapt import CACHE, fold_models
from kidney_study import LAB_B, by_lab

from ftuseg.core.metrics import bootstrap_interval, dice
from ftuseg.core.utils import write_json
from ftuseg.data.contract import read_metadata, row_mask
from ftuseg.data.real_tiles import load_real_tiles, write_real
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
TEST_COLUMNS = ["id", "organ", "data_source", "img_height", "img_width", "pixel_size",
                "tissue_thickness"]  # fmt: skip


def score(bundle: Path, raw: Path) -> pd.DataFrame:
    """Per-tile Dice of the shipped bundle on the kidney tiles of ``raw``'s test.csv (their truth:
    test_labels.csv)."""
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


def bundled_test(out: Path) -> Path:
    """The bundled held-out tiles as a test set (test.csv, test_labels.csv, test_images/)."""
    columns = [*TEST_COLUMNS, "rle", "age", "sex"]
    rows = pd.DataFrame(write_real(out, load_real_tiles("test"), "test"), columns=columns)
    rows[TEST_COLUMNS].to_csv(out / "test.csv", index=False)
    rows[["id", "rle"]].to_csv(out / "test_labels.csv", index=False)
    return out


def second_lab(bundle: Path, data: Path) -> dict:
    """The bundle on the kidney study's test set: each second-lab proxy tile and the same tile as
    its lab made it; mean Dice with intervals, and the hold (paired ratio)."""
    same, lab_b = by_lab(score(bundle, data).set_index("id")["dice"])
    if lab_b.isna().any() or same.empty:
        raise SystemExit(f"{data}: every tile needs its {LAB_B} rendition (kidney_study.py)")
    point, low, high = bootstrap(lab_b.to_numpy())
    hold = bootstrap(lab_b.to_numpy(), same.to_numpy())
    return {
        "second_lab_tiles": len(lab_b),
        "second_lab_dice": round(point, 5),
        "second_lab_dice_lo95": round(low, 5),
        "second_lab_dice_hi95": round(high, 5),
        "second_lab_same_dice": round(float(same.mean()), 5),
        "second_lab_hold": [round(v, 4) for v in hold],
    }


def from_experiment(name: str, out: Path) -> tuple[Path, str]:
    """A finished experiment of this clone as a run workspace in ``out`` (its record from git,
    its fold models from the DVC cache); and its commit."""
    runs = named_runs(name)
    if name not in runs:
        raise SystemExit(f"{name}: no finished experiment of that name in this clone")
    rev = runs[name]
    members = list(yaml.safe_load(show_at(rev, "data/ensemble.yaml"))["members"])
    if members != ["unet"]:
        raise SystemExit(f"{name}: ensemble {members}; the shipped kidney model is one U-Net")
    fold_models(rev, members, out)
    wanted = [*RECORD, "data/ensemble.yaml"]
    for fold in sorted(p.name for p in (out / "models" / "unet").iterdir()):
        wanted.append(f"logs/train/unet/{fold}/metrics.json")
    for rel in wanted:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(show_at(rev, rel))
    return out, rev


def card(
    run: Path, commit: str, per_tile: pd.DataFrame, wall_minutes: float, fold: int,
    config: EnsembleConfig, trained_on: str,
) -> dict:  # fmt: skip
    params = yaml.safe_load((run / "params.yaml").read_text())
    oof = json.loads((run / "metrics/oof.json").read_text())["unet"]  # the one architecture
    ensemble = json.loads((run / "metrics/ensemble.json").read_text())
    run_test = json.loads((run / "metrics/test.json").read_text())
    low, high = bootstrap_interval(per_tile["dice"].to_numpy())
    return {
        "organ": ORGAN,
        "fold": fold,
        "run_commit": commit,
        "trained_on": trained_on,
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
        "threshold_tuned": len(params["ensemble"]["thresholds"]) > 1,
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
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="workspace of a finished kidney-real run")
    source.add_argument("--exp", help="a finished kidney study experiment of this clone")
    ap.add_argument("--cache", type=Path, default=CACHE[0], help="DVC cache holding its models")
    ap.add_argument("--second-lab", type=Path, help="the kidney study's dataset (--work/data)")
    ap.add_argument("--wall-minutes", type=float, required=True)
    ap.add_argument("--wall-note", default="", help="how the time was measured (e.g. contended)")
    ap.add_argument("--fold", type=int, help="default: the fold with the best validation Dice")
    args = ap.parse_args()
    CACHE[0] = args.cache
    with tempfile.TemporaryDirectory() as tmp:
        if args.exp:
            run, commit = from_experiment(args.exp, Path(tmp) / "run")
            trained_on = f"the kidney study's import of the bundle's split (`{args.exp}`)"
        else:
            run = args.run.resolve()
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=run, capture_output=True,
                                    text=True, check=True).stdout.strip()  # fmt: skip
            trained_on = "the bundled training tiles (`ftuseg/assets/kidney_pas/train`)"
        fold = best_fold(run) if args.fold is None else args.fold
        params = yaml.safe_load((run / "params.yaml").read_text())
        config = EnsembleConfig.load(run / "data/ensemble.yaml")
        ship(run / "models/unet" / f"fold{fold}", config, ORGAN, params["inference"], OUT)
        shutil.rmtree(OUT / "run", ignore_errors=True)
        for rel in RECORD:
            (OUT / "run" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(run / rel, OUT / "run" / rel)
        per_tile = score(OUT, bundled_test(Path(tmp) / "bundled"))
        facts = {
            **card(run, commit, per_tile, args.wall_minutes, fold, config, trained_on),
            "wall_note": args.wall_note,
            **(second_lab(OUT, args.second_lab) if args.second_lab else {}),
        }
    write_json(OUT / "card.json", facts)
    (OUT / "MODEL_CARD.md").write_text(model_card(facts, params))
    print(json.dumps({k: v for k, v in facts.items() if k != "per_tile"}, indent=1))
    print(f"shipped -> {OUT}; per-tile min {np.min(per_tile['dice']):.3f}")


def tta_words(tta: list[int]) -> str:
    if len(tta) == 1:
        return "no test-time augmentation"
    return f"test-time: the mean of {len(tta)} flips/rotations (dihedral {tta})"


def model_card(f: dict, params: dict) -> str:
    t, m, aug = params["train"], params["models"]["unet"], params["augment"]
    threshold = (f"{f['threshold']} (tuned on the run's out-of-fold predictions)"
                 if f["threshold_tuned"] else
                 f"{f['threshold']} (fixed by the profile, not tuned on the training lab's OOF)")  # fmt: skip
    other_lab = (f"stain amount × U_log{tuple(aug['density_range'])} (p {aug['density']}), "
                 f"biopsy glass (p {aug['glass']}), scanner colours (p {aug['scanner']})"
                 if aug.get("density", 0) > 0 else "none")  # fmt: skip
    rows = [
        ("task", "binary segmentation of renal glomeruli (the kidney FTU)"),
        ("architecture", f"U-Net (segmentation-models-pytorch), encoder `{m['encoder']}` "
                         f"trained from scratch, decoder {m['decoder_channels']}"),
        ("weights", f"fold {f['fold']} of the run, fp16 safetensors (computed in fp32)"),
        ("scale", f"predicts at {f['um_per_px']} µm/px; any input is resampled from its µm/px "
                  "(give `--pixel-size` or metadata)"),
        ("threshold", threshold),
        ("training data", "90 real HuBMAP PAS kidney tiles (Vanderbilt, MIT / HuBMAP open "
                          f"data): {f['trained_on']}"),
        ("recipe", f"profile `kidney-real`: {t['epochs']} epochs, {t['crop_size']}² crops, "
                   f"{t['samples_per_image']} crops per image and epoch, batch {t['batch_size']}, "
                   f"lr {t['lr']}, 2 folds, validated every {t.get('val_every', 1)} epoch(s); "
                   f"{tta_words(params['inference']['tta'])}"),
        ("another lab's augmentations", other_lab),
        ("training time", f"{f['wall_minutes']:.0f} min for the whole run (2 folds, 2 CPU cores"
                          f"{', ' + f['wall_note'] if f['wall_note'] else ''})"),
        ("held-out test Dice", f"**{f['test_dice']:.3f}** [{f['test_dice_lo95']:.3f}, "
                               f"{f['test_dice_hi95']:.3f}] (95 % bootstrap over "
                               f"{f['test_tiles']} bundled real tiles, ≈1.0 µm/px, never "
                               "trained on)"),
        ("out-of-fold Dice", f"{f['oof_dice']:.3f} (both folds, threshold 0.5); cross-fitted "
                             f"{f['oof_cross_fitted']:.3f} [{f['oof_cross_fitted_lo95']:.3f}, "
                             f"{f['oof_cross_fitted_hi95']:.3f}] over the 90 training tiles"),
    ]  # fmt: skip
    if "second_lab_dice" in f:
        hold = f["second_lab_hold"]
        rows.append(("a second lab (proxy)", (
            f"{f['second_lab_dice']:.3f} [{f['second_lab_dice_lo95']:.3f}, "
            f"{f['second_lab_dice_hi95']:.3f}] on {f['second_lab_tiles']} held-out tiles as "
            f"another lab would make them (`research/kidney_lab.py`); keeps {hold[0]:.2f} "
            f"[{hold[1]:.2f}, {hold[2]:.2f}] of its Dice on them"
        )))  # fmt: skip
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"""# Model card: kidney glomerulus segmenter (shipped)

`ftuseg predict IMAGE --organ kidney --pixel-size UM` uses this model when neither `--models` nor
`--bundle` is given. Numbers below come from `card.json`, written by
`research/ship_kidney_model.py` from the run recorded in `run/` (commit `{f["run_commit"][:10]}`).

| | |
|---|---|
{table}

## What it is not for
- Other organs, other FTUs, or stains other than PAS: it has seen PAS kidney from one lab only.
- Other labs' PAS: measured only on a rendered proxy of another lab (above), not on real slides
  of one; score it on a few of your own annotated tiles first, and train on them with the
  `kidney-real` recipe (docs/own-data.md).
- Diagnosis: it is a research model, validated on 20 tiles of one lab.
"""


if __name__ == "__main__":
    main()
