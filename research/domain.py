"""Ablation of the HPA → HuBMAP handling on the sample dataset, as `dvc exp` experiments.

One experiment per (variant, seed), all with the sample U-Net alone (`-S model=unet`), named
``domain-<variant>-s<seed>`` and run one after the other with ``dvc exp run --temp``:

- ``none``: no stain handling, every image treated as 0.4 µm/px, flips only (the baseline);
- ``copies``: + the staintools stain copies (the image's own stains jittered);
- ``recolour``: + the copies recoloured into H&E / PAS (``stain.augment.method=recolour``);
- ``normalize``: + Vahadane normalisation to the H&E reference;
- ``resample``: + the csv pixel sizes alone; ``scale``: the same with zoom and thickness;
- ``all``: the default recipe (recoloured copies, full augmentation, physical scale);
- ``lean``: the recoloured copies with scale handling only (no colour jitter, cut-mix, cut-out);
- ``nocut``: ``all`` without cut-mix and cut-out;
- ``all-staintools``: the previous default (``all`` with the staintools copies);
- ``all-od``: ``all`` with every image's optical density scaled to the H&E reference's
  (``stain.normalize.method=od``: section thickness), in training and at inference.

A seed sets ``train.seed`` and ``stain.augment.seed``. Prints the HuBMAP-like test Dice (the
sample's 10 H&E/PAS images at the real HuBMAP pixel sizes) as the mean over seeds with a 95 %
bootstrap interval over images (each image's Dice averaged over the seeds first), the paired
difference to the baseline, per organ, and the HPA OOF Dice (the ensemble stage's, at its tuned
thresholds).

Every finished run's per-image Dice (HuBMAP-like test, HPA OOF) is archived in
``research/results/domain_runs.csv`` by the next ``--run`` or report: the report reads the
archive, so once runs are archived it rebuilds on a clone without the experiment refs, and a run
already archived is not run again. The committed ``results/domain.md`` was measured before the
archive existed and its runs are gone with the clone that made them: it is a record and does not
rebuild (there is no ``domain_runs.csv`` yet).

    python research/domain.py --run [--variants all none] [--seeds 2022 2023 2024]
    python research/domain.py [--md research/results/domain.md]   # report finished runs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import numpy as np
import pandas as pd
from experiments import ROOT, RunArchive, archived, dvc

ORGANS = ("kidney", "prostate", "largeintestine", "spleen", "lung")
BASELINE = "none"
VARIANTS: dict[str, tuple[str, ...]] = {
    "none": ("domain=none",),
    "copies": ("domain=copies", "stain.augment.method=vahadane"),
    "recolour": ("domain=copies", "stain.augment.method=recolour"),
    "normalize": ("domain=normalize",),
    "resample": ("domain=resample",),
    "scale": ("domain=scale",),
    "all": ("domain=all", "stain.augment.method=recolour"),
    "all-staintools": ("domain=all", "stain.augment.method=vahadane"),
    "lean": ("domain=lean", "stain.augment.method=recolour"),
    "nocut": ("domain=all", "stain.augment.method=recolour", "augment.cutmix=0", "augment.cutout=0"),
    "all-od": ("domain=all", "stain.augment.method=recolour", "stain.normalize.method=od"),
}
BOOTSTRAP = 10_000
ARCHIVE = ROOT / "research" / "results" / "domain_runs.csv"
RESULT_FILES = {"test": "metrics/test_per_image.csv", "oof": "metrics/plots/oof_per_image.csv"}


def exp_name(variant: str, seed: int) -> str:
    return f"domain-{variant}-s{seed}"


def finished() -> RunArchive:
    """The archive of finished runs, with this clone's finished ``domain-`` experiments added."""
    return archived(ARCHIVE, RESULT_FILES, "domain-", extra=("organ",))


def run_missing(variants: list[str], seeds: list[int]) -> None:
    """Every missing (variant, seed) run, seed-major so that an interrupted ablation still has
    every variant at the first seeds."""
    done = finished().names()
    todo = [(v, s) for s in seeds for v in variants if exp_name(v, s) not in done]
    for k, (variant, seed) in enumerate(todo, 1):
        name = exp_name(variant, seed)
        sets = [
            "model=unet",
            *VARIANTS[variant],
            f"train.seed={seed}",
            f"stain.augment.seed={seed}",
        ]
        started = time.perf_counter()
        print(f"[{k}/{len(todo)}] {name} ...", flush=True)
        try:
            dvc("exp", "run", "--temp", *[a for s in sets for a in ("-S", s)], "-n", name, "submit")
        except subprocess.CalledProcessError as err:  # report it, go on with the others
            print(f"[{k}/{len(todo)}] {name} FAILED:\n{(err.stderr or '')[-2000:]}", flush=True)
            continue
        print(f"[{k}/{len(todo)}] {name} done in {time.perf_counter() - started:.0f} s", flush=True)


def interval(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    idx = rng.integers(0, len(values), size=(BOOTSTRAP, len(values)))
    lo, hi = np.percentile(values[idx].mean(axis=1), [2.5, 97.5])
    return float(values.mean()), float(lo), float(hi)


def collect(variants: list[str], seeds: list[int]) -> dict[str, dict]:
    """Per variant: per-image test Dice averaged over its finished seeds, and the OOF Dice."""
    archive, rows = finished(), {}
    done = archive.names()  # a set built from every row: once, not per (variant, seed)
    for variant in variants:
        runs = [(s, exp_name(variant, s)) for s in seeds if exp_name(variant, s) in done]
        if not runs:
            continue
        per_image = [archive.table(name, "test").set_index("id") for _, name in runs]
        # The ensemble stage's OOF Dice: the mean of its per-image Dice at the tuned thresholds.
        oof = [archive.table(name, "oof")["dice"].mean() for _, name in runs]
        rows[variant] = {
            "seeds": [s for s, _ in runs],
            "dice": pd.concat([p["dice"] for p in per_image], axis=1).mean(axis=1),
            "organ": per_image[0]["organ"],
            "per_seed": [float(p["dice"].mean()) for p in per_image],
            "oof": float(np.mean(oof)),
        }
    return rows


def report(variants: list[str], seeds: list[int]) -> tuple[str, dict]:
    # The baseline is always read, whether or not it is among the variants asked for.
    wanted = [*variants, *([] if BASELINE in variants else [BASELINE])]
    rows, rng = collect(wanted, seeds), np.random.default_rng(0)
    if BASELINE not in rows:
        raise SystemExit("no finished baseline (none) run yet: python research/domain.py --run")
    base = rows[BASELINE]["dice"]
    head = "| variant | seeds | test Dice [95 % CI] | Δ none [95 % CI] | per seed | "
    head += " | ".join(o[:6] for o in ORGANS) + " | HPA OOF |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    summary = {}
    for variant in variants:
        if variant not in rows:
            continue
        r = rows[variant]
        dice = r["dice"].loc[base.index].to_numpy()
        mean, diff = interval(dice, rng), interval(dice - base.to_numpy(), rng)
        organs = r["dice"].groupby(r["organ"]).mean()
        summary[variant] = {"test": mean, "delta_none": diff, "per_seed": r["per_seed"],
                            "per_organ": organs.to_dict(), "oof": r["oof"], "seeds": r["seeds"]}  # fmt: skip
        lines.append(
            f"| {variant} | {len(r['seeds'])} | {mean[0]:.3f} [{mean[1]:.3f}, {mean[2]:.3f}] "
            f"| {diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}] "
            f"| {' / '.join(f'{d:.3f}' for d in r['per_seed'])} | "
            + " | ".join(f"{organs.get(o, float('nan')):.3f}" for o in ORGANS)
            + f" | {r['oof']:.3f} |"
        )
    return "\n".join(lines), summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", action="store_true", help="run the missing experiments first")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[2022, 2023, 2024])
    parser.add_argument("--json", type=str, help="write the summary here")
    parser.add_argument("--md", type=str, help="write the table here (markdown)")
    args = parser.parse_args()
    if args.run:
        run_missing(args.variants, args.seeds)
    table, summary = report(args.variants, args.seeds)
    print(table)
    if args.json:
        (ROOT / args.json).write_text(json.dumps(summary, indent=1) + "\n")
    if args.md:
        (ROOT / args.md).write_text(table + "\n")


if __name__ == "__main__":
    main()
