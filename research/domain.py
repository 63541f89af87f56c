"""Ablation of the HPA → HuBMAP handling on the sample dataset, as `dvc exp` experiments.

One experiment per (variant, seed), all with the sample U-Net alone (`-S model=unet`), named
``domain-<variant>-s<seed>`` and run one after the other with ``dvc exp run --temp``:

- ``none``: no stain handling, every image treated as 0.4 µm/px, flips only (the baseline);
- ``copies``: + the staintools stain copies (the image's own stains jittered);
- ``recolour``: + the copies recoloured into H&E / PAS (``stain.augment.method=recolour``);
- ``normalize``: + Vahadane normalisation to the H&E reference;
- ``resample``: + the csv pixel sizes alone; ``scale``: the same with zoom and thickness;
- ``all``: the default before ``lean`` (recoloured copies, full augmentation, physical scale);
- ``lean``: the default: the recoloured copies with scale handling only (no colour jitter,
  cut-mix, cut-out);
- ``nocut``: ``all`` without cut-mix and cut-out;
- ``all-staintools``: the previous default (``all`` with the staintools copies);
- ``all-od``: ``all`` with every image's optical density scaled to the H&E reference's
  (``stain.normalize.method=od``: section thickness), in training and at inference.

A seed sets ``train.seed`` and ``stain.augment.seed``. Prints the HuBMAP-like test Dice (the
sample's test images: H&E/PAS at the real HuBMAP pixel sizes, 10 when ``results/domain.md`` was
measured; 60 today, the 20 kidney ones real PAS tiles) as the mean over seeds with a 95 %
bootstrap interval over images (each image's Dice averaged over the seeds first), the paired
difference to the baseline, per organ, and the HPA OOF Dice (the ensemble stage's, at its tuned
thresholds).

Every finished run's per-image Dice (HuBMAP-like test, HPA OOF) is archived in
``research/results/domain_runs.csv`` by the next ``--run`` or report: the report reads the
archive, so once runs are archived it rebuilds on a clone without the experiment refs, and a run
already archived is not run again. The committed ``results/domain.md`` was measured before the
archive existed and its runs are gone with the clone that made them: it is a record and does not
rebuild (its runs are not in ``domain_runs.csv``, which starts with the default's decision below).

    python research/domain.py --run [--variants all none] [--seeds 2022 2023 2024]
    python research/domain.py [--md research/results/domain.md]   # report finished runs

The default's decision at the sample budget (#31: the real-pixel studies ran at a fifth of it)
compares the default before it, ``all``, with the two candidates of the real-pixel studies,
``lean`` and ``nocut``, each paired image by image with ``all`` on the seeds both finished; the
sample's kidney test images are 20 real HuBMAP PAS tiles (another lab's pixels than the
synthetic HPA-like training images), so that column is also reported on its own. It rebuilds
from the archive alone:

    python research/domain.py --run --variants all lean nocut   # then
    python research/domain.py --report    # results/domain_default.{md,json} (--check: compare)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import numpy as np
import pandas as pd
from experiments import ROOT, RunArchive, archived, dvc, rounded, write_tables

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
    "nocut": (
        "domain=all",
        "stain.augment.method=recolour",
        "augment.cutmix=0",
        "augment.cutout=0",
    ),
    "hematoxylin": ("domain=hematoxylin",),
    # `lean` with every kidney copy in PAS, its HuBMAP stain (the kidney rendition: +0.076), the
    # other organs' copies still alternating H&E and PAS (H&E alone cost GlaS 0.10).
    "lean-organ": (
        "domain=lean",
        "stain.augment.method=recolour",
        "+stain.augment.organ_targets.kidney=[pas]",
    ),
    # `lean-organ` with every organ but kidney reduced to its hematoxylin (training and test):
    # hematoxylin is ahead of lean on GlaS and on the sample's synthetic organs, behind on the
    # sample's real kidney tiles, so kidney keeps its PAS copies.
    "lean-hx": (
        "domain=lean",
        "stain.augment.method=recolour",
        "stain.normalize.method=hematoxylin",
        "stain.normalize.reference=he",
        "+stain.normalize.organ_references.kidney=none",
    ),
    # `lean` with every kidney image (training, copies, test) Macenko-normalised to the PAS
    # reference at training and inference, the other organs left as they are: the kidney
    # rendition's `lean-scale-pas-macenko` (+0.169 there) on kidney tiles from another source.
    # (staintools' Macenko cannot fit the H&E reference once luminosity-standardised.)
    "lean-macenko-kidney": (
        "domain=lean",
        "stain.augment.method=recolour",
        "stain.normalize.method=macenko",
        "stain.normalize.reference=pas",
        *(f"+stain.normalize.organ_references.{o}=none" for o in ORGANS if o != "kidney"),
    ),
    # Every organ Macenko-normalised without luminosity standardisation, the one setting that
    # fits both references: kidney to PAS, the others to H&E (ahead on the kidney rendition,
    # +0.238; level on GlaS). Normalising kidney alone left the other organs to fall.
    "lean-macenko-nolum": (
        "domain=lean",
        "stain.augment.method=recolour",
        "stain.normalize.method=macenko",
        "stain.normalize.reference=he",
        "stain.normalize.luminosity=false",
        "+stain.normalize.organ_references.kidney=pas",
    ),
    "all-od": ("domain=all", "stain.augment.method=recolour", "stain.normalize.method=od"),
}
BOOTSTRAP = 10_000
ARCHIVE = ROOT / "research" / "results" / "domain_runs.csv"
RESULT_FILES = {"test": "metrics/test_per_image.csv", "oof": "metrics/plots/oof_per_image.csv"}
# The default's decision: the default before it first (the paired differences are against it).
DECISION = (
    "all",
    "lean",
    "nocut",
    "hematoxylin",
    "lean-organ",
    "lean-hx",
    "lean-macenko-kidney",
    "lean-macenko-nolum",
)
TODAY = "lean"  # the default since the decision; later candidates are also paired with it
DECISION_TABLE = ROOT / "research" / "results" / "domain_default"


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


def seed_mean(
    archive: RunArchive, variant: str, seeds: list[int]
) -> tuple[pd.Series, pd.Series, list[float]]:
    """A variant's test Dice per image averaged over ``seeds``, each image's organ, and each
    seed's mean Dice."""
    tables = [archive.table(exp_name(variant, s), "test").set_index("id") for s in seeds]
    dice = pd.concat([t["dice"] for t in tables], axis=1).mean(axis=1)
    return dice, tables[0]["organ"].reindex(dice.index), [t["dice"].mean() for t in tables]


def decision_rows(archive: RunArchive, seeds: list[int]) -> list[dict]:
    """Per DECISION variant, on the seeds both it and ``all`` finished: test Dice, its paired
    difference to ``all`` (on the same seeds) over all test images and over the real kidney
    tiles, per organ, OOF. A variant without such a seed has no row."""
    done = archive.names()
    base_seeds = [s for s in seeds if exp_name(DECISION[0], s) in done]
    if not base_seeds:
        raise SystemExit(f"no {DECISION[0]} run archived for seeds {seeds}: --run it first")
    rng, rows = np.random.default_rng(0), []
    for variant in DECISION:
        common = [s for s in base_seeds if exp_name(variant, s) in done]
        if not common:
            continue
        dice, organ, per_seed = seed_mean(archive, variant, common)
        diff = (dice - seed_mean(archive, DECISION[0], common)[0].reindex(dice.index)).to_numpy()
        kidney = (organ == "kidney").to_numpy()
        first = variant == DECISION[0]
        today = [s for s in common if exp_name(TODAY, s) in done]
        later = DECISION.index(variant) > DECISION.index(TODAY) and bool(today)
        if later:
            mean, _, _ = seed_mean(archive, variant, today)
            vs_today = (mean - seed_mean(archive, TODAY, today)[0].reindex(mean.index)).to_numpy()
        rows.append({
            "variant": variant, "sets": list(VARIANTS[variant]), "seeds": common,
            "images": len(dice), "test": rounded(interval(dice.to_numpy(), rng)),
            "vs_all": None if first else rounded(interval(diff, rng)),
            "real_kidney": rounded(interval(dice.to_numpy()[kidney], rng)),
            "real_kidney_vs_all": None if first else rounded(interval(diff[kidney], rng)),
            "vs_today": rounded(interval(vs_today, rng)) if later else None,
            "real_kidney_vs_today": rounded(interval(vs_today[kidney], rng)) if later else None,
            "per_seed": [round(float(d), 4) for d in per_seed],
            "per_organ": {o: round(float(dice[organ == o].mean()), 4) for o in ORGANS},
            "oof": round(float(np.mean([archive.table(exp_name(variant, s), "oof")["dice"].mean()
                                        for s in common])), 4),
        })  # fmt: skip
    return rows


def decision_markdown(rows: list[dict]) -> str:
    def ci(v: list[float] | None, sign: str = "") -> str:
        return "–" if v is None else f"{v[0]:{sign}.3f} [{v[1]:{sign}.3f}, {v[2]:{sign}.3f}]"

    lines = [
        "# The default's decision at the sample budget", "",
        "Generated by `research/domain.py --report` from `domain_runs.csv`. One `dvc exp run` per "
        "(variant, seed) of the sample U-Net (`-S model=unet`: 15 epochs of 8 crops, 2 folds, 20 "
        "synthetic HPA-like training images). Test: the sample's 60 images, of which the 20 "
        "kidney ones are real HuBMAP PAS tiles and the rest HuBMAP-like renditions; each image's "
        "Dice averaged over the seeds, 95 % bootstrap intervals over images, differences paired "
        "image by image against `all` (the default before `lean`). OOF: the ensemble stage's "
        "HPA-like out-of-fold Dice at its tuned thresholds.", "",
        "| variant | seeds | test Dice | Δ vs `all` | real kidney | Δ real kidney | "
        f"Δ vs `{TODAY}` | Δ real kidney vs `{TODAY}` | per seed | "
        + " | ".join(o[:6] for o in ORGANS) + " | OOF |",
        "|" + "---|" * (10 + len(ORGANS)),
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| `{r['variant']}` | {len(r['seeds'])} | {ci(r['test'])} | {ci(r['vs_all'], '+')} "
            f"| {ci(r['real_kidney'])} | {ci(r['real_kidney_vs_all'], '+')} | "
            f"{ci(r['vs_today'], '+')} | {ci(r['real_kidney_vs_today'], '+')} | "
            + " / ".join(f"{d:.3f}" for d in r["per_seed"])
            + " | "
            + " | ".join(f"{r['per_organ'][o]:.3f}" for o in ORGANS)
            + f" | {r['oof']:.3f} |"
        )
    lines += ["", *[f"- `{r['variant']}`: `{' '.join(r['sets'])}`" for r in rows], ""]
    return "\n".join(lines)


def decision(seeds: list[int], check: bool) -> list[dict]:
    """results/domain_default.{md,json} from the archive alone (the same on every clone)."""
    rows = decision_rows(RunArchive(ARCHIVE, RESULT_FILES, extra=("organ",)), seeds)
    result = {"seeds_asked": seeds, "rows": rows}
    write_tables(DECISION_TABLE, result, decision_markdown(rows), "domain.py", check)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", action="store_true", help="run the missing experiments first")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[2022, 2023, 2024])
    parser.add_argument("--json", type=str, help="write the summary here")
    parser.add_argument("--md", type=str, help="write the table here (markdown)")
    parser.add_argument(
        "--report",
        action="store_true",
        help="results/domain_default.{md,json} from the archive alone",
    )
    parser.add_argument("--check", action="store_true", help="fail if those tables are stale")
    args = parser.parse_args()
    if args.report or args.check:
        decision(args.seeds, args.check)
        return
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
