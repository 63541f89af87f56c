"""Do the kidney tiles share pixels, and did a model that scores a tile train on its pixels?

The 110 tiles of ``../shared/kidney-train`` were cut from whole-slide images; neighbouring tiles
of a sliding window share pixels, and a split made tile by tile (the bundle's held-out test, the
pipeline's folds) can then score a model on pixels it trained on. This script finds every pair
of tiles that share pixels with the product's search (:mod:`ftuseg.data.overlap`, what
``ftuseg import --group-overlaps`` runs) at a quarter of the resolution: NCC ≥ ``MIN_NCC`` over
at least ``MIN_SHARED`` of a tile. Overlapping tiles form groups (connected components). For every score a tile gets, the share of its area
the scoring model trained on is measured:

- OOF of each archived kidney study run (``kidney_runs.csv``): the tiles of the other fold;
- the shipped glomerulus model on its validation and held-out tiles (``kidney_labels_tiles.csv``,
  the per-tile counts of the label audit): the 45 tiles of its training fold.

Each score is then split into the tiles whose model saw none of their pixels (*unseen*) and the
others (*seen*); the difference has a 95 % percentile bootstrap interval (the two sets resampled
independently). The pairs are archived in ``results/kidney_overlap_pairs.csv``, so on a fresh
clone (no ``../shared``) ``--report`` rebuilds ``results/kidney_overlap.{md,json}``.

    python research/kidney_overlap.py            # find the pairs (≈ 15 s on 2 cores), report
    python research/kidney_overlap.py --report   # tables from the archive only
    python research/kidney_overlap.py --check    # fail if the tables are stale
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from experiments import ROOT, interval_text, rounded, table_args, write_tables
from glas_gap import bootstrap
from kidney_labels import TILES_CSV as SHIPPED
from kidney_study import ARCHIVE as RUNS
from kidney_study import METHODS, SOURCE, split
from scipy import stats

from ftuseg.data.overlap import OverlapConfig, find_overlaps, overlap_groups, thumbnail
from ftuseg.data.real_tiles import ID_PREFIX

RESULTS = ROOT / "research" / "results"
PAIRS = RESULTS / "kidney_overlap_pairs.csv"
TABLE = RESULTS / "kidney_overlap"
SCALE = 4  # tiles searched at a quarter of their resolution (1600×1200 -> 400×300)
SHAPE = (1200, 1600)  # every source tile (README), height × width
MIN_NCC = 0.95  # the same pixels (1.00 at every pair found); serial sections reach ≈ 0.85
MIN_SHARED = 0.05  # of a tile's area


def load_gray(source: Path) -> dict[str, np.ndarray]:
    """Every tile's thumbnail for the search (grey at 1/SCALE, mean-subtracted)."""
    out = {}
    for path in sorted((source / "images").glob("*.jpg")):
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if grey is None or grey.shape != SHAPE:
            raise SystemExit(f"{path}: unreadable, or not {SHAPE[1]}×{SHAPE[0]}")
        out[path.stem] = thumbnail(grey, 1 / SCALE)
    return out


def seen_share(pairs: pd.DataFrame, tile: str, trained: set[str]) -> float:
    """Share of ``tile``'s area covered by the tiles in ``trained``."""
    h, w = SHAPE
    covered = np.zeros((h, w), bool)
    mine = pairs[(pairs["a"] == tile) & pairs["b"].isin(trained)]
    theirs = pairs[(pairs["b"] == tile) & pairs["a"].isin(trained)]
    shifts = pd.concat([mine[["dy", "dx"]], -theirs[["dy", "dx"]]])
    for dy, dx in shifts.itertuples(index=False):
        covered[max(dy, 0) : max(dy + h, 0), max(dx, 0) : max(dx + w, 0)] = True
    return float(covered.mean())


def unpaired(a: np.ndarray, b: np.ndarray) -> list[float]:
    """mean(a) − mean(b) and its 95 % percentile bootstrap interval (each set resampled on its
    own; one fixed seed)."""
    res = stats.bootstrap((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis),
                          n_resamples=10_000, method="percentile", random_state=0)  # fmt: skip
    ci = res.confidence_interval
    return rounded((a.mean() - b.mean(), ci.low, ci.high))


def split_row(name: str, model: str, dice: pd.Series, seen: pd.Series) -> dict:
    """One score split into tiles whose model saw none of their pixels and the others."""
    unseen, touched = dice[seen.reindex(dice.index) == 0], dice[seen.reindex(dice.index) > 0]
    row = {"score": name, "model": model, "n_unseen": len(unseen), "n_seen": len(touched),
           "mean_seen_share": round(float(seen.reindex(touched.index).mean()), 3),
           "all": rounded(bootstrap(dice.to_numpy()))}  # fmt: skip
    if len(unseen) >= 2 and len(touched) >= 2:
        row["unseen"] = rounded(bootstrap(unseen.to_numpy()))
        row["seen"] = rounded(bootstrap(touched.to_numpy()))
        row["seen_minus_unseen"] = unpaired(touched.to_numpy(), unseen.to_numpy())
    return row


def fold_seen(pairs: pd.DataFrame, oof: pd.DataFrame, label: str) -> pd.Series:
    """Share of each OOF tile's area its fold model trained on (the other folds' tiles). The
    folds are one method's (a 3-fold method splits otherwise than the 2-fold ones)."""
    folds = oof.groupby("id")["fold"].agg(set)
    if (folds.map(len) != 1).any():
        raise SystemExit(f"{RUNS.name}: {label}: a tile in several folds across seeds")
    fold = folds.map(min)
    return pd.Series({t: seen_share(pairs, t, set(fold.index[fold != f])) for t, f in fold.items()})


def oof_rows(pairs: pd.DataFrame) -> list[dict]:
    """Each archived study method's OOF (Dice per tile averaged over its seeds), split by what
    the tile's fold model trained on."""
    runs = pd.read_csv(RUNS, dtype={"id": str})
    oof = runs[runs["kind"] == "oof"].copy()
    oof["method"] = oof["run"].str.removeprefix("kidney-").str.replace(r"-s\d+$", "", regex=True)
    unknown = set(oof["method"]) - set(METHODS)
    if unknown:
        raise SystemExit(f"{RUNS.name}: runs of unknown methods {sorted(unknown)}")
    rows = []
    for method in [m for m in METHODS if m in set(oof["method"])]:
        group = oof[oof["method"] == method]
        dice = group.groupby("id")["dice"].mean()
        seeds = group["run"].nunique()
        model = f"`{method}` ({seeds} seed{'s' if seeds > 1 else ''})"
        rows.append(split_row("OOF (90 tiles)", model, dice, fold_seen(pairs, group, method)))
    return rows


def shipped_rows(pairs: pd.DataFrame) -> list[dict]:
    """The shipped model on its validation and held-out tiles, split by what it trained on."""
    tiles = pd.read_csv(SHIPPED, dtype={"id": str})
    tiles["id"] = "train_" + tiles["id"].str.removeprefix(ID_PREFIX)
    val = set(tiles.loc[tiles["set"] == "validation", "id"])
    trained = {t for t, s in split().items() if s == "train"} - val
    dice = (2 * tiles["pt"] / (tiles["p"] + tiles["t"])).set_axis(tiles["id"])
    seen = pd.Series({t: seen_share(pairs, t, trained) for t in tiles["id"]})
    rows = []
    for which, name in (("validation", "validation (45 tiles)"), ("test", "held-out (20 tiles)")):
        ids = tiles.loc[tiles["set"] == which, "id"]
        rows.append(split_row(name, "shipped", dice[ids], seen))
    return rows


def summary(pairs: pd.DataFrame) -> dict:
    split_of = pd.Series(split())
    group = overlap_groups(pairs, list(split_of.index))
    biggest = group[group == 0].index
    sizes = group.value_counts()
    return {
        "pairs": len(pairs), "tiles": len(split_of),
        "shifts": sorted(set(pairs[["dy", "dx"]].abs().itertuples(index=False, name=None))),
        "largest_group": {"tiles": len(biggest), **split_of[biggest].value_counts().to_dict()},
        "groups_of_several": int((sizes > 1).sum()),
        "alone": {"tiles": int((sizes == 1).sum()),
                  **split_of[group.map(sizes) == 1].value_counts().to_dict()},
    }  # fmt: skip


def report(check: bool = False) -> dict:
    pairs = pd.read_csv(PAIRS, dtype={"a": str, "b": str})
    result = {"min_ncc": MIN_NCC, "min_shared": MIN_SHARED, "scale": SCALE,
              "summary": summary(pairs), "rows": shipped_rows(pairs) + oof_rows(pairs)}  # fmt: skip
    write_tables(TABLE, result, markdown(result), "kidney_overlap.py", check)
    return result


def markdown(result: dict) -> str:
    s = result["summary"]
    big, alone = s["largest_group"], s["alone"]

    def ci(v: list[float] | None) -> str:
        return "–" if v is None else interval_text(v)

    lines = [
        "# Kidney tiles: shared pixels between training and scoring",
        "",
        "Generated by `research/kidney_overlap.py --report` from `kidney_overlap_pairs.csv`, "
        "`kidney_runs.csv` and `kidney_labels_tiles.csv`. A pair of tiles shares pixels when "
        f"their cross-correlation peak has NCC ≥ {result['min_ncc']} over at least "
        f"{result['min_shared']:.0%} of a tile.",
        "",
        f"- {s['pairs']} pairs of the {s['tiles']} tiles share pixels, at offsets (|dy|, |dx|) "
        f"of {', '.join(f'({y}, {x})' for y, x in s['shifts'])} px: a sliding window at half a "
        f"tile's stride. Groups of overlapping tiles: {s['groups_of_several']}; the largest "
        f"holds {big['tiles']} tiles ({big.get('train', 0)} training, {big.get('test', 0)} "
        f"held-out). {alone['tiles']} tiles share no pixel with any other "
        f"({alone.get('train', 0)} training, {alone.get('test', 0)} held-out).",
        "- *unseen*: the tiles whose scoring model trained on none of their pixels; *seen*: the "
        "others, with the mean share of their area the model trained on. Dice per tile (OOF: "
        "averaged over a method's seeds), 95 % bootstrap intervals over tiles; the difference "
        "resamples the two sets independently.",
        "",
        "| score | model | Dice, all tiles | unseen: n | Dice unseen | seen: n | share seen "
        "| Dice seen | seen − unseen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['score']} | {r['model']} | {ci(r['all'])} | {r['n_unseen']} | "
            f"{ci(r.get('unseen'))} | {r['n_seen']} | {r['mean_seen_share']:.2f} | "
            f"{ci(r.get('seen'))} | {ci(r.get('seen_minus_unseen'))} |"
        )
    return "\n".join([*lines, ""])


def main() -> None:
    args = table_args(__doc__)
    if not (args.report or args.check):
        if not SOURCE.is_dir():
            raise SystemExit(f"{SOURCE}: the source tiles are needed to find the pairs")
        cfg = OverlapConfig(scale=1 / SCALE, min_ncc=MIN_NCC, min_shared=MIN_SHARED)
        find_overlaps(load_gray(SOURCE), cfg).to_csv(PAIRS, index=False)
    print(json.dumps(report(check=args.check), indent=2))


if __name__ == "__main__":
    main()
