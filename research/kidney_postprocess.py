"""Post-processing on the kidney study's trained models: small components and holes.

The study's runs threshold the network's probability (0.5) and do nothing else
(``inference.min_component_um2: 0``). A glomerulus is a solid object of ≈ 2-5 × 10⁴ µm²;
speckles of false positives and holes in a predicted tuft both cost Dice. This measures, on
models the study trained, what removing components below an area (the product's
``inference.min_component_um2``) and filling holes would change, without training anything
(the ``kidney-real`` profile removes components under 4000 µm² since):

- OOF: each training tile's quantised out-of-fold probability, read from the experiment's
  ``data/oof`` in this clone's DVC cache (exactly what the oof stage thresholded);
- test: the experiment's fold models (read the same way) predict the study's 40 test images
  (20 same-lab tiles, 20 second-lab renditions) with the run's own ``inference`` params.

``--shipped`` does the same for the glomerulus model that ships (one fold of a run of the
profile's recipe, ``src/ftuseg/assets/models/kidney``), on what it never trained on: its 45
validation tiles (as OOF) and the 20 held-out tiles as bundled (2 µm/px; its Dice there must
match ``results/kidney_labels_tiles.csv``), and the study's 20 second-lab renditions.

Every variant's per-image Dice is archived in ``results/kidney_postprocess_runs.csv`` (run,
variant, kind, id, fold, dice); ``--report`` rebuilds ``results/kidney_postprocess.{md,json}``
from it on a fresh clone. The OOF gain of the best variant is also given *nested*: the variant
is chosen on one fold's tiles and scored on the other's, so choosing it adds no optimism.

    python research/kidney_postprocess.py --work ../kidney-study --runs kidney-labquarter-t05-110-tta-s0
    python research/kidney_postprocess.py --work ../kidney-study --shipped
    python research/kidney_postprocess.py --report
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import tifffile
import yaml
from experiments import ROOT, interval_text, named_runs, read_at, rounded, show_at, write_tables
from glas_gap import bootstrap
from kidney_adapt import cached, fold_models
from kidney_labels import TILES_CSV, audited_tiles
from kidney_study import LAB_B
from scipy import ndimage

from ftuseg.core import rle
from ftuseg.core.metrics import dice
from ftuseg.core.stage import make_config
from ftuseg.infer.engine import InferenceConfig, Predictor
from ftuseg.infer.maps import binarize, remove_small_components, to_original
from ftuseg.infer.members import EnsembleConfig
from ftuseg.infer.shipped import shipped_bundle
from ftuseg.kaggle.runtime import load_bundle

ARCHIVE = ROOT / "research" / "results" / "kidney_postprocess_runs.csv"
TABLE = ROOT / "research" / "results" / "kidney_postprocess"
# Areas in µm² at the tiles' ≈ 1 µm/px; a glomerulus is ≈ 150-250 µm across (≈ 2-5 × 10⁴ µm²).
MIN_AREAS = (0, 250, 500, 1000, 2000, 4000, 8000)
BASE = "min0"
SHIPPED = "shipped-kidney"  # the archive's run name for the shipped model


def variants() -> list[tuple[str, float, bool]]:
    """(name, min_component_um2, fill_holes) for every combination; ``min0``: the runs' own."""
    return [
        (f"min{a}{'-fill' if f else ''}", float(a), f) for f in (False, True) for a in MIN_AREAS
    ]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background that does not reach the image border (4-connected) becomes foreground."""
    return ndimage.binary_fill_holes(mask).astype(np.uint8)


def scores(prob: np.ndarray, truth: np.ndarray, threshold: float, um_per_px: float) -> dict:
    """Dice of every variant on one probability map at the original resolution."""
    base = binarize(prob, threshold)
    out = {}
    for name, area, fill in variants():
        mask = remove_small_components(base, area / um_per_px**2)
        out[name] = dice(fill_holes(mask) if fill else mask, truth)
    return out


def oof_rows(rev: str, data: Path) -> list[dict]:
    """Every variant on the experiment's stored OOF maps (threshold 0.5, as the oof stage)."""
    lock = yaml.safe_load(show_at(rev, "dvc.lock"))
    out = next(o for o in lock["stages"]["oof"]["outs"] if o["path"] == "data/oof")
    maps = {e["relpath"]: e["md5"] for e in json.loads(cached(out["md5"]).read_text())}
    train = pd.read_csv(data / "train.csv", dtype={"id": str})
    logged = read_at(rev, "metrics/oof_per_image.csv").set_index("id")
    rows = []
    for r in train.itertuples(index=False):
        q = cv2.imread(str(cached(maps[f"unet/{r.id}.png"])), cv2.IMREAD_UNCHANGED)
        truth = rle.decode(r.rle, (r.img_height, r.img_width)).astype(bool)
        prob = to_original(q, truth.shape)
        got = scores(prob, truth, 0.5, r.pixel_size)
        agree(got[BASE], logged.loc[r.id, "dice"], r.id)
        rows += [{"variant": n, "kind": "oof", "id": r.id, "fold": int(logged.loc[r.id, "fold"]),
                  "dice": d} for n, d in got.items()]  # fmt: skip
    return rows


def agree(ours: float, logged: float, image_id: str) -> None:
    """``min0`` must give the Dice the run logged: the same maps, threshold
    and arithmetic as the pipeline, or this study measures something else."""
    if abs(ours - logged) > 1e-4:
        raise SystemExit(f"{image_id}: Dice {ours:.5f} here, {logged:.5f} in the run")


def test_rows(rev: str, data: Path) -> list[dict]:
    """Every variant on the study's test images, predicted by the experiment's fold models."""
    params = yaml.safe_load(show_at(rev, "params.yaml"))
    config = make_config(InferenceConfig, params, "inference")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ensemble.yaml"
        path.write_text(show_at(rev, "data/ensemble.yaml"))
        ensemble = EnsembleConfig.load(path)
        predictor = Predictor.from_checkpoints(
            [(m, 1.0) for m in fold_models(rev, ensemble.members, Path(tmp))], config
        )
        labels = pd.read_csv(data / "test_labels.csv", dtype={"id": str}).set_index("id")["rle"]
        logged = read_at(rev, "metrics/test_per_image.csv").set_index("id")["dice"]
        rows = []
        for r in pd.read_csv(data / "test.csv", dtype={"id": str}).itertuples(index=False):
            image = tifffile.imread(data / "test_images" / f"{r.id}.tiff")
            truth = rle.decode(labels[r.id], image.shape[:2]).astype(bool)
            prob = predictor.predict(image, r.pixel_size, r.organ)
            got = scores(prob, truth, ensemble.threshold(r.organ), r.pixel_size)
            agree(got[BASE], logged[r.id], r.id)
            rows += [{"variant": n, "kind": "test", "id": r.id, "fold": -1, "dice": d}
                     for n, d in got.items()]  # fmt: skip
            print(f"  {r.id}: {got[BASE]:.4f} -> best {max(got.values()):.4f}", flush=True)
    return rows


def shipped_rows(data: Path) -> list[dict]:
    """Every variant for the shipped model on the tiles it never trained on."""
    bundle = shipped_bundle("kidney")
    predictor, config, manifest = load_bundle(bundle)
    model_json = json.loads((bundle / manifest["members"][0]["path"] / "model.json").read_text())
    threshold = config.threshold("kidney")
    counts = pd.read_csv(TILES_CSV).set_index("id")
    rows = []
    for which, tile in audited_tiles(model_json):
        prob = predictor.predict(tile.image, tile.pixel_size, "kidney")
        got = scores(prob, tile.mask.astype(bool), threshold, tile.pixel_size)
        c = counts.loc[tile.id]
        agree(got[BASE], 2 * c["pt"] / (c["p"] + c["t"]) if c["p"] + c["t"] else 1.0, tile.id)
        kind, fold = ("oof", int(model_json["fold"])) if which == "validation" else ("test", -1)
        image_id = "train_" + tile.id.rsplit("_", 1)[1]  # the bundle's hubmap_pas_<n>
        rows += [{"variant": n, "kind": kind, "id": image_id, "fold": fold, "dice": d}
                 for n, d in got.items()]  # fmt: skip
    meta = pd.read_csv(data / "test.csv", dtype={"id": str})
    labels = pd.read_csv(data / "test_labels.csv", dtype={"id": str}).set_index("id")["rle"]
    for r in meta[meta["id"].str.startswith(LAB_B)].itertuples(index=False):
        image = tifffile.imread(data / "test_images" / f"{r.id}.tiff")
        truth = rle.decode(labels[r.id], image.shape[:2]).astype(bool)
        got = scores(predictor.predict(image, r.pixel_size, "kidney"), truth, threshold,
                     r.pixel_size)  # fmt: skip
        rows += [{"variant": n, "kind": "test", "id": r.id, "fold": -1, "dice": d}
                 for n, d in got.items()]  # fmt: skip
    return rows


def run(work: Path, names: list[str]) -> None:
    archive = pd.read_csv(ARCHIVE, dtype={"id": str}) if ARCHIVE.is_file() else None
    done = set() if archive is None else set(archive["run"])
    runs = named_runs("")
    for name in names:
        if name in done:
            continue
        if name not in runs and name != SHIPPED:
            raise SystemExit(f"{name}: no finished experiment of that name in this clone")
        print(f"{name} ...", flush=True)
        if name == SHIPPED:
            rows = shipped_rows(work / "data")
        else:
            rows = oof_rows(runs[name], work / "data") + test_rows(runs[name], work / "data")
        new = pd.DataFrame(rows).assign(run=name)
        new["dice"] = new["dice"].round(5)
        archive = new if archive is None else pd.concat([archive, new], ignore_index=True)
        cols = ["run", "variant", "kind", "id", "fold", "dice"]
        tmp = ARCHIVE.with_suffix(".csv.tmp")
        archive[cols].to_csv(tmp, index=False)
        tmp.replace(ARCHIVE)


def per_image(rows: pd.DataFrame, kind: str, variant: str) -> pd.Series:
    """Dice per image of one run's variant."""
    sel = rows[(rows["kind"] == kind) & (rows["variant"] == variant)]
    return sel.set_index("id")["dice"].sort_index()


def nested(rows: pd.DataFrame) -> pd.Series:
    """One run's OOF Dice per image of the variant chosen on the *other* folds' tiles: what
    choosing the variant on OOF would give an unseen tile."""
    oof = rows[rows["kind"] == "oof"]
    picked = []
    for fold in sorted(oof["fold"].unique()):
        other = oof[oof["fold"] != fold].groupby("variant")["dice"].mean()
        picked.append(oof[(oof["fold"] == fold) & (oof["variant"] == other.idxmax())])
    return pd.concat(picked).set_index("id")["dice"].sort_index()


def groups(rows: pd.DataFrame, variant: str) -> dict[str, pd.Series]:
    """OOF, same-lab test and second-lab test Dice per image of one run's variant."""
    test = per_image(rows, "test", variant)
    second = test.index.str.startswith(LAB_B)
    return {"oof": per_image(rows, "oof", variant), "same_lab": test[~second],
            "lab_b": test[second]}  # fmt: skip


def run_table(rows: pd.DataFrame) -> dict:
    """Every variant of one run against ``min0`` (paired over images); the nested OOF
    where the run has two folds or more."""
    base = groups(rows, BASE)
    table: dict = {"images": {k: len(v) for k, v in base.items()}, "rows": []}
    for name, area, fill in variants():
        row = {"variant": name, "min_component_um2": area, "fill_holes": fill}
        for key, series in groups(rows, name).items():
            row[key] = rounded(bootstrap(series.to_numpy()))
            if name != BASE:
                delta = (series - base[key].reindex(series.index)).to_numpy()
                row[f"{key}_vs_min0"] = rounded(bootstrap(delta))
        table["rows"].append(row)
    if rows.loc[rows["kind"] == "oof", "fold"].nunique() > 1:
        chosen = nested(rows)
        table["nested_oof"] = rounded(bootstrap(chosen.to_numpy()))
        table["nested_oof_vs_min0"] = rounded(
            bootstrap((chosen - base["oof"].reindex(chosen.index)).to_numpy())
        )
    return table


def report(check: bool = False) -> dict:
    archive = pd.read_csv(ARCHIVE, dtype={"id": str})
    result = {run: run_table(rows) for run, rows in archive.groupby("run", sort=True)}
    write_tables(TABLE, result, markdown(result), "kidney_postprocess.py", check)
    return result


def markdown(result: dict) -> str:
    def cell(row: dict, key: str) -> str:
        value = interval_text(row[key])
        vs = row.get(f"{key}_vs_min0")
        return value if vs is None else f"{value}<br>{vs[0]:+.3f} [{vs[1]:+.3f}, {vs[2]:+.3f}]"

    lines = [
        "# Kidney study: post-processing on the trained models",
        "",
        "Generated by `research/kidney_postprocess.py --report` from "
        "`kidney_postprocess_runs.csv`. Per run: Dice per image, 95 % bootstrap over images;",
        "below each value the paired difference to `min0` (the threshold alone, as the runs",
        f"scored). `{SHIPPED}`: the shipped model, OOF = its validation tiles.",
    ]
    for run, table in result.items():
        n = table["images"]
        lines += [
            "",
            f"## `{run}`",
            "",
            f"| variant | min component (µm²) | fill holes | OOF ({n['oof']}) | "
            f"same lab ({n['same_lab']}) | second lab ({n['lab_b']}) |",
            "|---|---:|---|---|---|---|",
        ]
        for r in table["rows"]:
            lines.append(
                f"| `{r['variant']}` | {r['min_component_um2']:g} | "
                f"{'yes' if r['fill_holes'] else 'no'} | {cell(r, 'oof')} | "
                f"{cell(r, 'same_lab')} | {cell(r, 'lab_b')} |"
            )
        if "nested_oof" in table:
            v, d = table["nested_oof"], table["nested_oof_vs_min0"]
            lines += [
                "",
                f"Nested OOF (the variant chosen on the other fold's tiles): {interval_text(v)}, "
                f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] against `min0`.",
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, help="kidney_study.py's --work")
    ap.add_argument("--runs", nargs="+", default=[], help="finished experiments' names")
    ap.add_argument("--shipped", action="store_true", help="also the shipped kidney model")
    ap.add_argument("--report", action="store_true", help="tables from the archive only")
    ap.add_argument("--check", action="store_true", help="fail if the tables are stale")
    args = ap.parse_args()
    names = [*args.runs, *([SHIPPED] if args.shipped else [])]
    if names and not (args.report or args.check):
        if args.work is None:
            ap.error("--runs and --shipped need --work")
        run(args.work, names)
    report(check=args.check)


if __name__ == "__main__":
    main()
