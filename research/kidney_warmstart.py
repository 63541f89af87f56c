"""Warm start for a new lab: the shipped PAS glomerulus model fine-tuned on a few H&E tiles.

A lab whose slides the shipped model does not serve annotates a few tiles and trains. This
measures how few: the H&E biopsies of ``../shared/kidney-otherlabs`` (source ``awke4-HE``; a
validation set, never bundled) are split by case. A model trains on 1, 2, 4, 8 or all 16 tiles
of case C003 (a seeded draw per seed, nested) with the ``own-data`` profile's recipe, starting
from the shipped model (``train.init: shipped:kidney``) or from scratch, for the same number of
crops; it is then scored on every tile of the three other cases (C001, C002, C004), each at its
own pixel size, through the validation engine (the profile's four flips, threshold 0.5,
components under 4000 µm² removed as in ``kidney-real``). Only the last epoch is kept and
scored: no choice is made on the test cases.

Per-tile Dice of every run is archived in ``results/kidney_warmstart_runs.csv`` (with each
run's training seconds); ``--report`` rebuilds ``results/kidney_warmstart.{md,json}`` and the
curve ``results/kidney_warmstart.png`` from it on a fresh clone.

    python research/kidney_warmstart.py --work ../warmstart --seeds 0 1 2
    python research/kidney_warmstart.py --report
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from experiments import ROOT

from ftuseg.core.params import write_params
from ftuseg.core.stage import make_config
from ftuseg.data.importer import ImportDefaults, import_dataset
from ftuseg.data.prepare import PrepareConfig, prepare, read_index
from ftuseg.domain.augment import AugmentConfig
from ftuseg.domain.normalize import NormalizeConfig
from ftuseg.infer.engine import InferenceConfig
from ftuseg.models.checkpoint import load_checkpoint
from ftuseg.train.config import RunDirs, train_config
from ftuseg.train.inputs import TrainData
from ftuseg.train.loop import Recipe, train_fold
from ftuseg.train.validation import Validator

OTHERLABS = ROOT.parent / "shared" / "kidney-otherlabs"
SOURCE, TRAIN_CASE = "awke4-HE", "C003"
ARCHIVE = ROOT / "research" / "results" / "kidney_warmstart_runs.csv"
TABLE = ROOT / "research" / "results" / "kidney_warmstart"
TILES = (1, 2, 4, 8, 16)
INITS = {"shipped": "shipped:kidney", "scratch": None}
# The same crops for every tile count: an epoch of CROPS crops (samples_per_image = CROPS / n),
# EPOCHS of them; the fine-tuning rate (the profile's 4e-3 trains from scratch).
EPOCHS, CROPS = 40, 128
LR = {"shipped": 1e-3, "scratch": 4e-3}
MIN_COMPONENT_UM2 = 4000.0  # kidney-real's


def import_he(work: Path) -> tuple[Path, pd.DataFrame]:
    """The H&E tiles in the competition layout (``work/raw``), and their rows of tiles.csv."""
    tiles = pd.read_csv(OTHERLABS / "tiles.csv", dtype={"id": str})
    tiles = tiles[tiles["source"] == SOURCE].reset_index(drop=True)
    raw = work / "raw"
    if not (raw / "train.csv").is_file():
        src = work / "src"
        for kind, ext in (("images", "jpg"), ("masks", "png")):
            (src / kind).mkdir(parents=True, exist_ok=True)
            for i in tiles["id"]:
                shutil.copy(OTHERLABS / kind / f"{i}.{ext}", src / kind / f"{i}.{ext}")
        meta = pd.read_csv(OTHERLABS / "meta.csv", dtype={"id": str})
        meta = meta[meta["id"].isin(tiles["id"])].copy()
        meta["group"] = meta["id"].map(dict(zip(tiles["id"], tiles["case"], strict=True)))
        meta.to_csv(src / "meta.csv", index=False)
        defaults = ImportDefaults("kidney", None, 4.0, SOURCE)
        import_dataset(
            "masks", src / "images", src / "masks", raw, defaults, meta_csv=src / "meta.csv"
        )
    return raw, tiles


def split(prep_all: Path, out: Path, train_ids: list[str], test_ids: list[str]) -> Path:
    """A prepared folder whose fold 1 is ``train_ids`` and fold 0 ``test_ids`` (the arrays are
    the full preparation's, linked)."""
    index = read_index(prep_all).set_index("id")
    index = index.loc[[*train_ids, *test_ids]].reset_index()
    index["fold"] = [1] * len(train_ids) + [0] * len(test_ids)
    out.mkdir(parents=True, exist_ok=True)
    index.to_csv(out / "index.csv", index=False)
    if not (out / "images").exists():
        (out / "images").symlink_to((prep_all / "images").resolve())
    return out


def profile() -> dict:
    """The own-data profile's params (the recipe a lab runs)."""
    with tempfile.TemporaryDirectory() as tmp:
        return write_params(["profile=own-data"], ROOT / "conf", Path(tmp) / "params.yaml")


def run_one(work: Path, raw: Path, prepared: Path, init: str, n: int, seed: int) -> pd.DataFrame:
    """Train one model and score it per test tile."""
    params = profile()
    model_cfg = params["models"]["unet"]
    cfg = replace(
        train_config(params["train"], model_cfg),
        epochs=EPOCHS,
        samples_per_image=CROPS // n,
        lr=LR[init],
        val_every=EPOCHS,
        val_start=EPOCHS,
        init=INITS[init],
        seed=seed,
        resume=False,
    )
    inference = replace(
        make_config(InferenceConfig, params, "inference"), min_component_um2=MIN_COMPONENT_UM2
    )
    recipe = Recipe(
        augment=make_config(AugmentConfig, params, "augment"),
        normalize=make_config(NormalizeConfig, params["stain"], "normalize"),
        inference=inference,
    )
    name = f"{init}-n{n}-s{seed}"
    out = work / "runs" / name
    data = TrainData(prepared, raw / "train.csv", float(params["prepare"]["um_per_px"]))
    started = time.perf_counter()
    train_fold(data, "unet", model_cfg, 0, cfg, RunDirs(out / "ckpt", out / "live"), recipe=recipe)
    seconds = time.perf_counter() - started
    model, meta = load_checkpoint(out / "ckpt")
    validator = Validator(
        prepared,
        raw / "train.csv",
        meta["val_ids"],
        um_per_px=meta["um_per_px"],
        crop_size=meta["crop_size"],
        config=inference,
        train_pixel_sizes=meta["train_pixel_sizes"],
    )
    scores = validator.per_image(model)
    return pd.DataFrame(
        {
            "run": name,
            "init": init,
            "tiles": n,
            "seed": seed,
            "id": meta["val_ids"],
            "dice": np.round(scores, 5),
            "train_seconds": round(seconds, 1),
        }
    )


def run_all(work: Path, seeds: list[int], tiles: list[int], inits: list[str]) -> None:
    raw, table = import_he(work)
    prep_all = work / "prep-all"
    if not (prep_all / "index.csv").is_file():
        prepare(raw, prep_all, PrepareConfig(um_per_px=4.0, n_folds=2))
    archive = pd.read_csv(ARCHIVE, dtype={"id": str, "run": str}) if ARCHIVE.is_file() else None
    done = set(archive["run"]) if archive is not None else set()
    c003 = table.loc[table["case"] == TRAIN_CASE, "id"].tolist()
    test = table.loc[table["case"] != TRAIN_CASE, "id"].tolist()
    for seed in seeds:
        order = list(np.random.default_rng(seed).permutation(c003))
        for n in tiles:
            prepared = split(prep_all, work / f"prep-s{seed}-n{n}", order[:n], test)
            for init in inits:
                name = f"{init}-n{n}-s{seed}"
                if name in done:
                    continue
                rows = run_one(work, raw, prepared, init, n, seed)
                archive = rows if archive is None else pd.concat([archive, rows])
                archive.to_csv(ARCHIVE, index=False)
                print(f"{name}: mean over tiles {rows['dice'].mean():.3f}, "
                      f"{rows['train_seconds'].iloc[0]:.0f} s")  # fmt: skip


def case_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Dice per (run, case): the mean over the case's tiles."""
    case = rows["id"].str.split("_").str[0]
    return (
        rows.assign(case=case)
        .groupby(["init", "tiles", "seed", "case"], as_index=False)["dice"]
        .mean()
    )


def report() -> dict:
    rows = pd.read_csv(ARCHIVE, dtype={"id": str, "run": str})
    cases = case_means(rows)
    per_run = cases.groupby(["init", "tiles", "seed"], as_index=False)["dice"].mean()
    minutes = rows.groupby(["init", "tiles", "seed"])["train_seconds"].first() / 60
    out = {}
    for (init, n), group in per_run.groupby(["init", "tiles"]):
        values = group["dice"].to_numpy()
        by_case = cases[(cases["init"] == init) & (cases["tiles"] == n)]
        out[f"{init}-n{n}"] = {
            "init": init,
            "tiles": int(n),
            "seeds": len(values),
            "dice_mean_of_cases": round(float(values.mean()), 3),
            "dice_per_seed": [round(float(v), 3) for v in values],
            "dice_per_case": {
                c: round(float(v), 3) for c, v in by_case.groupby("case")["dice"].mean().items()
            },
            "train_minutes": round(float(minutes.loc[init, n].mean()), 1),
        }
    return out


def write_report(result: dict) -> None:
    lines = [
        "# Warm start for a new lab: H&E biopsies, trained on case C003, tested on the others",
        "",
        "Generated by `research/kidney_warmstart.py --report` from `kidney_warmstart_runs.csv`. "
        f"The `own-data` recipe, {EPOCHS} epochs of {CROPS} crops whatever the tile count, lr "
        f"{LR['shipped']:g} from the shipped model and {LR['scratch']:g} from scratch; the last "
        "epoch scored on the 12 tiles of C001, C002 and C004 at their own pixel sizes (four "
        "flips, threshold 0.5, components under 4000 µm² removed). Dice is the mean of the "
        "three cases' means; minutes are training and its one validation on 2 cores.",
        "",
        "| start | C003 tiles | seeds | Dice (mean of cases) | per seed | C001 | C002 | C004 | minutes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(result.values(), key=lambda r: (r["init"], r["tiles"])):
        c = r["dice_per_case"]
        lines.append(
            f"| {r['init']} | {r['tiles']} | {r['seeds']} | {r['dice_mean_of_cases']:.3f} | "
            f"{' / '.join(f'{v:.3f}' for v in r['dice_per_seed'])} | {c.get('C001', float('nan')):.3f} | "
            f"{c.get('C002', float('nan')):.3f} | {c.get('C004', float('nan')):.3f} | "
            f"{r['train_minutes']:.1f} |"
        )
    TABLE.with_suffix(".md").write_text("\n".join(lines) + "\n")
    TABLE.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, help="working folder (imports, runs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tiles", type=int, nargs="+", default=list(TILES))
    parser.add_argument("--inits", nargs="+", default=list(INITS), choices=list(INITS))
    parser.add_argument("--report", action="store_true", help="rebuild the tables from the archive")
    args = parser.parse_args()
    if not args.report:
        if args.work is None:
            parser.error("--work is needed to run")
        run_all(args.work, args.seeds, args.tiles, args.inits)
    write_report(report())


if __name__ == "__main__":
    main()
