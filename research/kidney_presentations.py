"""Test-time presentations on the kidney study's trained models: flips and pixel sizes.

The ``kidney-real`` profile predicts every tile under four flips/rotations at its csv pixel
size. This measures, on models the study trained (no training), what all eight dihedral
transforms (``inference.tta``) and three presentations of each tile (``inference.scales``:
its pixel size × 0.85 / 1 / 1.18, the maps averaged) change on the runs' OOF tiles and on the
study's 40 test images (20 same-lab tiles, 20 second-lab renditions). Validation presents each
tile once (``inference.scales`` does not reach it), so a run of the profile with presentations
added trains and selects exactly the models measured here; only its OOF and test maps differ.

Each variant is the product's own engine: every (flip, factor) map is one
:meth:`~ftuseg.infer.engine.Predictor.predict_presentations` call, and a variant averages its
flips, then its factors, as the engine does (the blending is linear: the same map up to float
rounding). ``tta4``, the runs' own, must reproduce each run's logged per-image Dice to 1e-4.

Per-image Dice of every variant is archived in ``results/kidney_presentations_runs.csv``;
``--report`` rebuilds ``results/kidney_presentations.{md,json}`` from it on a fresh clone.

    python research/kidney_presentations.py --work ../kidney-study --runs kidney-labhalf-t05-110-min4000-s0
    python research/kidney_presentations.py --report
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import yaml
from experiments import ROOT, interval_text, named_runs, read_at, rounded, show_at, write_tables
from glas_gap import bootstrap
from kidney_adapt import fold_models
from kidney_postprocess import agree
from kidney_study import LAB_B
from rich.progress import track

from ftuseg.core import rle
from ftuseg.core.metrics import dice
from ftuseg.core.stage import make_config
from ftuseg.infer.engine import InferenceConfig, Predictor
from ftuseg.infer.maps import combine, postprocess, quantize, to_original
from ftuseg.infer.members import EnsembleConfig

ARCHIVE = ROOT / "research" / "results" / "kidney_presentations_runs.csv"
TABLE = ROOT / "research" / "results" / "kidney_presentations"
FLIPS = {"tta4": (0, 1, 2, 3), "tta8": tuple(range(8))}
FACTORS = {"": (1.0,), "-s3": (0.85, 1.0, 1.18)}
VARIANTS = {f + s: (FLIPS[f], FACTORS[s]) for s in FACTORS for f in FLIPS}
BASE = "tta4"  # the runs' own
# The profile thresholds at 0.5, not tuned on the training lab's OOF (a lighter lab's FTUs come
# with lower probabilities); the others show what that choice costs or leaves.
THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
RUN_THRESHOLD = 0.5


def member_maps(predictor: Predictor, scaled: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Per member: every variant's float map at the training scale, from one engine call per
    (flip, factor) (``predictor``'s config is replaced per call; its members are kept)."""
    out = []
    for member in predictor.members:
        atoms = {}
        for k in FLIPS["tta8"]:
            for f in FACTORS["-s3"]:
                predictor.config = replace(predictor.config, tta=(k,), scales=(f,))
                atoms[k, f] = predictor.predict_presentations(member, scaled)
        maps = {}
        for name, (flips, factors) in VARIANTS.items():
            per_factor = [sum(atoms[k, f] for k in flips) / np.float32(len(flips)) for f in factors]
            maps[name] = (
                per_factor[0] if len(factors) == 1 else sum(per_factor) / np.float32(len(factors))
            )
        out.append(maps)
    return out


def ensemble(maps: list[dict[str, np.ndarray]], name: str) -> np.ndarray:
    """The members' maps of one variant combined with equal weights, as the engine does."""
    return combine([quantize(m[name]) for m in maps], [1.0] * len(maps))


def scored(
    maps: list[dict], truth: np.ndarray, pixel_size: float, config: InferenceConfig
) -> dict[tuple[str, float], float]:
    """Dice of every variant at every threshold, post-processed as the pipeline does."""
    out = {}
    for name in VARIANTS:
        prob = to_original(ensemble(maps, name), truth.shape)
        for t in THRESHOLDS:
            out[name, t] = dice(postprocess(prob, t, pixel_size, config.min_component_um2), truth)
    return out


def rows_of(got: dict, kind: str, image_id: str, fold: int) -> list[dict]:
    return [{"variant": n, "threshold": t, "kind": kind, "id": image_id, "fold": fold, "dice": d}
            for (n, t), d in got.items()]  # fmt: skip


def run_rows(rev: str, data: Path) -> list[dict]:
    """Every variant on the run's OOF tiles (each by its fold's model, threshold 0.5 as the oof
    stage) and on the study's test images (the fold models together, the run's threshold)."""
    params = yaml.safe_load(show_at(rev, "params.yaml"))
    config = make_config(InferenceConfig, params, "inference")
    if config.tta != FLIPS[BASE] or config.scales != (1.0,):
        raise SystemExit(f"{rev}: the run predicts with tta {config.tta}, not {BASE}'s")
    if params["ensemble"]["thresholds"] != [RUN_THRESHOLD]:
        raise SystemExit(f"{rev}: the run's thresholds are not [{RUN_THRESHOLD}]")
    logged_oof = read_at(rev, "metrics/oof_per_image.csv").set_index("id")
    logged_test = read_at(rev, "metrics/test_per_image.csv").set_index("id")["dice"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        yaml_path = Path(tmp) / "ensemble.yaml"
        yaml_path.write_text(show_at(rev, "data/ensemble.yaml"))
        ens = EnsembleConfig.load(yaml_path)
        dirs = fold_models(rev, ens.members, Path(tmp))
        folds = {int(d.name.removeprefix("fold")): Predictor.from_checkpoints([(d, 1.0)], config)
                 for d in dirs}  # fmt: skip
        train = pd.read_csv(data / "train.csv", dtype={"id": str})
        for r in track(list(train.itertuples(index=False)), description="OOF tiles"):
            fold = int(logged_oof.loc[r.id, "fold"])
            image = tifffile.imread(data / "train_images" / f"{r.id}.tiff")
            truth = rle.decode(r.rle, image.shape[:2]).astype(bool)
            p = folds[fold]
            maps = member_maps(p, p.scaled_input(image, r.pixel_size, r.organ))
            got = scored(maps, truth, r.pixel_size, config)
            agree(got[BASE, RUN_THRESHOLD], logged_oof.loc[r.id, "dice"], r.id)
            rows += rows_of(got, "oof", r.id, fold)
        both = Predictor.from_checkpoints([(d, 1.0) for d in dirs], config)
        labels = pd.read_csv(data / "test_labels.csv", dtype={"id": str}).set_index("id")["rle"]
        test = pd.read_csv(data / "test.csv", dtype={"id": str})
        for r in track(list(test.itertuples(index=False)), description="test images"):
            image = tifffile.imread(data / "test_images" / f"{r.id}.tiff")
            truth = rle.decode(labels[r.id], image.shape[:2]).astype(bool)
            maps = member_maps(both, both.scaled_input(image, r.pixel_size, r.organ))
            got = scored(maps, truth, r.pixel_size, config)
            agree(got[BASE, ens.threshold(r.organ)], logged_test[r.id], r.id)
            rows += rows_of(got, "test", r.id, -1)
    return rows


def run(work: Path, names: list[str]) -> None:
    archive = pd.read_csv(ARCHIVE, dtype={"id": str}) if ARCHIVE.is_file() else None
    done = set() if archive is None else set(archive["run"])
    runs = named_runs("")
    for name in [n for n in names if n not in done]:
        if name not in runs:
            raise SystemExit(f"{name}: no finished experiment of that name in this clone")
        print(f"{name} ...", flush=True)
        new = pd.DataFrame(run_rows(runs[name], work / "data")).assign(run=name)
        new["dice"] = new["dice"].round(5)
        archive = new if archive is None else pd.concat([archive, new], ignore_index=True)
        tmp = ARCHIVE.with_suffix(".csv.tmp")
        cols = ["run", "variant", "threshold", "kind", "id", "fold", "dice"]
        archive[cols].to_csv(tmp, index=False)
        tmp.replace(ARCHIVE)


def per_image(rows: pd.DataFrame, variant: str, threshold: float) -> dict[str, pd.Series]:
    """OOF, same-lab and second-lab Dice per image of one variant and threshold, averaged over
    the runs."""
    sel = rows[(rows["variant"] == variant) & (rows["threshold"] == threshold)]
    sel = sel.groupby(["kind", "id"])["dice"].mean()
    test = sel["test"]
    second = test.index.str.startswith(LAB_B)
    return {"oof": sel["oof"], "same_lab": test[~second], "lab_b": test[second]}


def nested(rows: pd.DataFrame, variant: str) -> pd.Series:
    """OOF Dice per image (mean over the runs) with each run's threshold chosen on its *other*
    fold's tiles: what tuning the threshold on OOF would give an unseen tile."""
    oof = rows[(rows["kind"] == "oof") & (rows["variant"] == variant)]
    picked = []
    for _, run in oof.groupby("run"):
        for fold in sorted(run["fold"].unique()):
            other = run[run["fold"] != fold].groupby("threshold")["dice"].mean()
            picked.append(run[(run["fold"] == fold) & (run["threshold"] == other.idxmax())])
    return pd.concat(picked).groupby("id")["dice"].mean()


def paired(series: pd.Series, base: pd.Series) -> list[float]:
    return rounded(bootstrap((series - base.reindex(series.index)).to_numpy()))


def table(rows: pd.DataFrame) -> dict:
    """Every variant and threshold against ``tta4`` at 0.5, paired over images (each image's
    mean over the runs); per variant the nested OOF of a threshold tuned on the other fold."""
    base = per_image(rows, BASE, RUN_THRESHOLD)
    out: dict = {
        "runs": sorted(rows["run"].unique()),
        "images": {k: len(v) for k, v in base.items()},
        "rows": [],
        "nested": [],
    }
    for name, (flips, factors) in VARIANTS.items():
        for t in THRESHOLDS:
            row: dict = {"variant": name, "tta": list(flips), "scales": list(factors),
                         "threshold": t}  # fmt: skip
            for key, series in per_image(rows, name, t).items():
                row[key] = rounded(bootstrap(series.to_numpy()))
                if (name, t) != (BASE, RUN_THRESHOLD):
                    row[f"{key}_vs_base"] = paired(series, base[key])
            oof = rows[
                (rows["variant"] == name) & (rows["threshold"] == t) & (rows["kind"] == "oof")
            ]
            row["oof_per_run"] = [round(float(v), 4) for v in oof.groupby("run")["dice"].mean()]
            out["rows"].append(row)
        chosen = nested(rows, name)
        out["nested"].append({"variant": name, "oof": rounded(bootstrap(chosen.to_numpy())),
                              "oof_vs_base": paired(chosen, base["oof"])})  # fmt: skip
    return out


def report(check: bool = False) -> dict:
    rows = pd.read_csv(ARCHIVE, dtype={"id": str})
    result = {"all runs": table(rows)}
    write_tables(TABLE, result, markdown(result), "kidney_presentations.py", check)
    return result


def delta_text(v: list[float]) -> str:
    return f"{v[0]:+.4f} [{v[1]:+.4f}, {v[2]:+.4f}]"


def markdown(result: dict) -> str:
    t = result["all runs"]
    n = t["images"]

    def cell(row: dict, key: str) -> str:
        vs = row.get(f"{key}_vs_base")
        text = interval_text(row[key])
        return text if vs is None else f"{text}<br>{delta_text(vs)}"

    lines = [
        "# Kidney study: flips, presentations and threshold on the trained models",
        "",
        "Generated by `research/kidney_presentations.py --report` from "
        "`kidney_presentations_runs.csv`. Runs: " + ", ".join(f"`{r}`" for r in t["runs"]) + ".",
        "Dice per image averaged over the runs, 95 % bootstrap over images; below each value the",
        f"paired difference to `{BASE}` at {RUN_THRESHOLD} (the runs' own: four flips/rotations,",
        "the csv pixel size).",
        "",
        f"| variant | flips | pixel size × | threshold | OOF ({n['oof']}) | OOF per run "
        f"| same lab ({n['same_lab']}) | second lab ({n['lab_b']}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in t["rows"]:
        per_run = " / ".join(f"{v:.4f}" for v in r["oof_per_run"])
        factors = " / ".join(f"{f:g}" for f in r["scales"])
        lines.append(
            f"| `{r['variant']}` | {len(r['tta'])} | {factors} | {r['threshold']:g} | "
            f"{cell(r, 'oof')} | {per_run} | {cell(r, 'same_lab')} | {cell(r, 'lab_b')} |"
        )
    lines += [
        "",
        "Threshold tuned on OOF, nested (each run's threshold chosen on its other fold's tiles,",
        f"scored on this fold's), against `{BASE}` at {RUN_THRESHOLD}:",
        "",
    ]
    lines += [f"- `{r['variant']}`: {interval_text(r['oof'])}, {delta_text(r['oof_vs_base'])}"
              for r in t["nested"]]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, help="kidney_study.py's --work")
    ap.add_argument("--runs", nargs="+", default=[], help="finished experiments' names")
    ap.add_argument("--report", action="store_true", help="tables from the archive only")
    ap.add_argument("--check", action="store_true", help="fail if the tables are stale")
    args = ap.parse_args()
    if args.runs and not (args.report or args.check):
        if args.work is None:
            ap.error("--runs needs --work")
        run(args.work, args.runs)
    report(check=args.check)


if __name__ == "__main__":
    main()
