"""Cross-stain gap on kidney: real PAS tiles rendered as HPA, tested on the real PAS.

The kidney counterpart of the GlaS benchmark (:mod:`glas_domain`), on the kidney study's split
(:mod:`kidney_study`: 90 training tiles, 20 held-out tiles). Two datasets in the competition
layout, outside the project:

- ``hpa``: the 90 training tiles rendered as HPA-like hematoxylin + DAB images
  (:func:`glas_render.render_hpa`: the tile's own Macenko hematoxylin kept, its PAS replaced by
  DAB in one of five antibody patterns, the hard renderer's draws);
- ``pas``: the same 90 tiles as they are (the same-stain reference);

both tested on the 20 held-out real PAS tiles degraded as another site would deliver them
(:func:`glas_render.degrade_he`: thicker section, blur, JPEG), with ``test_labels.csv``.

Every (method, stain, seed) is one ``dvc exp run --temp`` at the kidney study's budget
(:data:`kidney_study.BUDGET`, another lab's augmentations off), named
``kgap-<stain>-<method>-s<seed>``; per-image Dice of the test and the OOF is archived in
``results/kidney_gap_runs.csv`` and ``--report`` rebuilds ``results/kidney_gap.{md,json}`` from
the archive alone. The gap ratio splits as in :mod:`glas_gap`: C (HPA-trained, degraded PAS
test), T (PAS-trained, same test), O (HPA-trained OOF on the rendered tiles), P (PAS-trained
OOF on the real tiles); ceiling R = O / P, transfer τ = (C / T) / (O / P).

    python research/kidney_gap.py --work ../kidney-study --seeds 3    # render, run, report
    python research/kidney_gap.py --report                            # tables only
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import yaml
from experiments import (
    ROOT,
    RunArchive,
    archived,
    dvc,
    interval_text,
    merged,
    rounded,
    write_tables,
)
from glas_gap import BOOTSTRAP, bootstrap, ceiling_by_group
from glas_render import degrade_he, draws, render_hpa
from kidney_study import BUDGET, DENSITY_WIDE, LAB_B, PLAIN

from ftuseg.core import rle

DIFFICULTY = "hard"  # the five antibody patterns and the test degradation
STAINS = ("hpa", "pas")
# The product's default preset (conf/domain/all.yaml, stain copies and thresholds as in
# conf/config.yaml) where the kidney-real profile of the study's budget sets its own.
DEFAULT_THRESHOLDS = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["ensemble"][
    "thresholds"
]
THRESHOLDS = f"ensemble.thresholds=[{','.join(str(t) for t in DEFAULT_THRESHOLDS)}]"
COPIES = ("stain.augment.copies=4", THRESHOLDS)
# Every method runs on both datasets: its gap ratio divides by the same recipe on real PAS. The
# two alternatives are the GlaS study's recipe candidates (research/glas_domain.py).
DEFAULT = "default"
# Paired baselines of every row's cross-stain Dice (row key, method): the default until #31,
# the `lean` preset as #31 first decided it, and `lean` with kidney's copies in PAS (today's).
BASELINES = (("default", DEFAULT), ("lean", "lean-scale"), ("today", "lean-scale-pas"))
METHODS: dict[str, tuple[tuple[str, ...], str]] = {
    "default": (
        ("domain=all", *COPIES),
        "the `all` preset, the default until #31 (recoloured H&E/PAS copies, full augmentation, "
        "OOF-tuned threshold)",
    ),
    "lean-scale": (
        ("domain=scale", *COPIES, "train.stain_copy_prob=0.5"),
        "the recoloured copies and scale handling (zoom, thickness adaptation) only",
    ),
    # Kidney is tested on PAS: the H&E half of the copies shows a stain it never meets.
    "lean-scale-pas": (
        ("domain=scale", *COPIES, "train.stain_copy_prob=0.5", "stain.augment.targets=[pas]"),
        "`lean-scale` with every recoloured copy in PAS (none in H&E)",
    ),
    # A DAB pattern marking the FTU is a shortcut no PAS image offers (the rendition's `ftu`
    # tiles sit above the ceiling, `negative` and `nuclear` far below): half of the copies
    # reduced to their hematoxylin, so some crops show the morphology without any DAB.
    "lean-scale-pas-h": (
        (
            "domain=scale",
            *COPIES,
            "train.stain_copy_prob=0.5",
            "stain.augment.targets=[pas,pas-h]",
        ),
        "`lean-scale-pas` with every other copy reduced to its hematoxylin (`pas-h`)",
    ),
    # The test's stain shifts every layer's activations: each image under its own BatchNorm
    # statistics (AdaBN; on the cross-lab proxy it took a second lab from 0.00 to 0.40).
    "lean-scale-pas-adapt1": (
        (
            "domain=scale",
            *COPIES,
            "train.stain_copy_prob=0.5",
            "stain.augment.targets=[pas]",
            "inference.adapt_norm=1",
        ),
        "`lean-scale-pas`, every image (OOF and test) predicted under its own BatchNorm "
        "statistics (`inference.adapt_norm: 1`)",
    ),
    # Half the crops are HPA, which no test image is: more of them from the PAS copies.
    "lean-scale-pas-p08": (
        ("domain=scale", *COPIES, "train.stain_copy_prob=0.8", "stain.augment.targets=[pas]"),
        "`lean-scale-pas` with 0.8 of the crops drawn from the copies instead of 0.5",
    ),
    # Another lab's staining strength: the test sections are thicker (optical density × 1.0-1.6)
    # and HuBMAP's kidney sections 10 µm against HPA's 4; the own-data profile's stain-amount
    # augmentation (optical density × U_log(0.1, 1.5) on 0.8 of the crops) on the PAS copies.
    "lean-scale-pas-density": (
        (
            "domain=scale",
            *COPIES,
            "train.stain_copy_prob=0.5",
            "stain.augment.targets=[pas]",
            *DENSITY_WIDE,
        ),
        "`lean-scale-pas` with stain-amount augmentation (`augment.density: 0.8`, range "
        "[0.1, 1.5])",
    ),
    # The test's stain brought to the training images' as well as the training images' to the
    # test's: every image (rendition, copy, test) Macenko-normalised to kidney's HuBMAP stain
    # reference (PAS), at training and inference. An HPA image's DAB comes out as the
    # reference's PAS, a thicker or darker test section at the reference's amounts.
    "lean-scale-pas-macenko": (
        (
            "domain=scale",
            *COPIES,
            "train.stain_copy_prob=0.5",
            "stain.augment.targets=[pas]",
            "stain.normalize.method=macenko",
            "stain.normalize.reference=pas",
        ),
        "`lean-scale-pas`, every image Macenko-normalised to its organ's HuBMAP stain "
        "reference (kidney PAS) at training and inference",
    ),
    # The same without staintools' luminosity standardisation, the one setting under which its
    # Macenko also fits the H&E reference (GlaS's `recolour-lean-scale-macenko`): could one
    # setting serve both organs?
    "lean-scale-pas-macenko-nolum": (
        (
            "domain=scale",
            *COPIES,
            "train.stain_copy_prob=0.5",
            "stain.augment.targets=[pas]",
            "stain.normalize.method=macenko",
            "stain.normalize.reference=pas",
            "stain.normalize.luminosity=false",
        ),
        "`lean-scale-pas-macenko` without luminosity standardisation",
    ),
    # A stain-invariant input: every image (rendition, copy, test) reduced to its hematoxylin,
    # which the rendition keeps; the PAS it replaces is given up in training and test alike.
    "hematoxylin": (
        (
            "domain=scale",
            "stain.augment.copies=0",
            THRESHOLDS,
            "stain.normalize.method=hematoxylin",
            "stain.normalize.reference=pas",
        ),
        "scale handling, every image reduced to its hematoxylin (`stain.normalize.method`)",
    ),  # fmt: skip
    "nocut": (
        ("domain=all", *COPIES, "augment.cutmix=0", "augment.cutout=0"),
        "the default without cut-mix and cut-out",
    ),
}
ARCHIVE = ROOT / "research" / "results" / "kidney_gap_runs.csv"
RESULT_FILES = {"test": "metrics/test_per_image.csv", "oof": "metrics/plots/oof_per_image.csv"}
TABLE = ROOT / "research" / "results" / "kidney_gap"


def draw_key(image_id: str) -> str:
    """The numeric key :func:`glas_render.draws` seeds an image's generator with: the tile's
    number (``train_106`` -> ``106``)."""
    number = image_id.rsplit("_", 1)[-1]
    if not number.isdigit():
        raise ValueError(f"{image_id}: no tile number to seed its rendition with")
    return number


def render(study_data: Path, out: Path) -> Path:
    """``out/hpa`` and ``out/pas`` from the kidney study's dataset (skipped where they exist)."""
    if all((out / s).is_dir() for s in STAINS):
        return out
    train = pd.read_csv(study_data / "train.csv", dtype={"id": str})
    test = pd.read_csv(study_data / "test.csv", dtype={"id": str})
    labels = pd.read_csv(study_data / "test_labels.csv", dtype={"id": str}).set_index("id")
    test = test[~test["id"].str.startswith(LAB_B)]
    tmp = {s: out / f"{s}.tmp" for s in STAINS}
    for path in tmp.values():
        shutil.rmtree(path, ignore_errors=True)
        (path / "train_images").mkdir(parents=True)
        (path / "test_images").mkdir()
    patterns = {}
    for row in train.itertuples(index=False):
        source = study_data / "train_images" / f"{row.id}.tiff"
        image = tifffile.imread(source)
        pattern, amounts, _ = draws(draw_key(row.id), DIFFICULTY)
        hpa = render_hpa(image, rle.decode(row.rle, image.shape[:2]), pattern, amounts, row.id)
        tifffile.imwrite(tmp["hpa"] / "train_images" / f"{row.id}.tiff", hpa, compression="zlib")
        shutil.copy(source, tmp["pas"] / "train_images")
        patterns[row.id] = pattern
    for row in test.itertuples(index=False):
        image = tifffile.imread(study_data / "test_images" / f"{row.id}.tiff")
        _, _, degradation = draws(draw_key(row.id), DIFFICULTY)
        degraded = degrade_he(image, degradation)
        for path in tmp.values():
            tifffile.imwrite(path / "test_images" / f"{row.id}.tiff", degraded, compression="zlib")
    for stain, path in tmp.items():
        train.assign(data_source="HPA" if stain == "hpa" else "HuBMAP").to_csv(
            path / "train.csv", index=False
        )
        test.to_csv(path / "test.csv", index=False)
        labels.loc[test["id"], ["rle"]].reset_index().to_csv(path / "test_labels.csv", index=False)
        path.rename(out / stain)
    counts = pd.Series(patterns).value_counts().to_dict()
    print(f"rendered {len(train)} training tiles as HPA, antibody patterns {counts}", flush=True)
    return out


def exp_name(stain: str, method: str, seed: int) -> str:
    return f"kgap-{stain}-{method}-s{seed}"


def finished() -> RunArchive:
    return archived(ARCHIVE, RESULT_FILES, "kgap-", extra=("organ",))


def run_missing(gap: Path, methods: list[str], seeds: int) -> None:
    """Every (method, stain, seed) not archived yet, seed by seed, one after the other."""
    done = finished().names()
    todo = [
        (m, st, s)
        for s in range(seeds)
        for m in methods
        for st in STAINS
        if exp_name(st, m, s) not in done
    ]
    for k, (m, st, s) in enumerate(todo, 1):
        name = exp_name(st, m, s)
        sets = [
            f"data.raw_dir={(gap / st).resolve()}",
            f"train.seed={2022 + 100 * s}",
            *merged(BUDGET, PLAIN, METHODS[m][0]),
        ]
        started = time.perf_counter()
        print(f"[{k}/{len(todo)}] {name} ...", flush=True)
        try:
            dvc("exp", "run", "--temp", *[a for x in sets for a in ("-S", x)], "-n", name, "submit")
        except subprocess.CalledProcessError as err:
            print(f"[{k}/{len(todo)}] {name} FAILED:\n{(err.stderr or '')[-3000:]}", flush=True)
            continue
        print(f"[{k}/{len(todo)}] {name} done in {time.perf_counter() - started:.0f} s", flush=True)
        finished()  # archive it at once: an interrupted study keeps every finished run


def seeds_of(archive: RunArchive, stain: str, method: str) -> set[int]:
    prefix = f"kgap-{stain}-{method}-s"
    return {int(n.removeprefix(prefix)) for n in archive.names() if n.startswith(prefix)}


def per_image(
    archive: RunArchive, stain: str, method: str, kind: str, seeds: set[int]
) -> pd.Series:
    """Dice per image averaged over ``seeds``."""
    frames = [
        archive.table(exp_name(stain, method, s), kind).set_index("id")["dice"]
        for s in sorted(seeds)
    ]
    return pd.concat(frames, axis=1).mean(axis=1)


def decompose(c: pd.Series, t: pd.Series, o: pd.Series, p: pd.Series) -> dict:
    """Gap ratio C / T over the test tiles, ceiling R = O / P over the training tiles (OOF),
    transfer τ = (C / T) / R, each with a 95 % percentile interval. Unlike GlaS (every image
    tested once and also OOF), here the test and the OOF tiles are two sets: each is resampled
    on its own (paired within a set: C with T, O with P), from one fixed seed."""
    for name, a, b in (("same-stain test", t, c), ("same-stain OOF", p, o)):
        if not a.index.sort_values().equals(b.index.sort_values()):
            raise ValueError(f"{name} holds other tiles than its HPA-trained side")
    c, t = c.sort_index().to_numpy(), t.reindex(c.sort_index().index).to_numpy()
    o, p = o.sort_index().to_numpy(), p.reindex(o.sort_index().index).to_numpy()
    rng = np.random.default_rng(0)
    i = rng.integers(0, len(c), size=(BOOTSTRAP, len(c)))
    j = rng.integers(0, len(o), size=(BOOTSTRAP, len(o)))
    gap = c[i].mean(axis=1) / t[i].mean(axis=1)
    ceiling = o[j].mean(axis=1) / p[j].mean(axis=1)
    points = {"gap_ratio": c.mean() / t.mean(), "ceiling": o.mean() / p.mean()}
    points["transfer"] = points["gap_ratio"] / points["ceiling"]
    samples = {"gap_ratio": gap, "ceiling": ceiling, "transfer": gap / ceiling}
    return {
        k: (float(points[k]), *(float(v) for v in np.percentile(samples[k], [2.5, 97.5])))
        for k in points
    }


def sides(archive: RunArchive, method: str) -> tuple[int, dict[str, pd.Series]] | None:
    """C, T, O, P per image (module docstring) over the seeds run on both datasets (a seed's
    HPA-trained side is read against its own same-stain side; an interrupted study leaves a
    seed half done), and how many seeds; None where no seed is."""
    seeds = seeds_of(archive, "hpa", method) & seeds_of(archive, "pas", method)
    if not seeds:
        return None
    series = {
        key: per_image(archive, stain, method, kind, seeds)
        for key, stain, kind in (("C", "hpa", "test"), ("T", "pas", "test"),
                                 ("O", "hpa", "oof"), ("P", "pas", "oof"))
    }  # fmt: skip
    return len(seeds), series


def method_row(archive: RunArchive, method: str, bases: dict[str, pd.Series | None]) -> dict | None:
    """One method's table row; ``bases``: the cross-stain Dice per test tile of each of
    BASELINES, for the paired differences."""
    found = sides(archive, method)
    if found is None:
        return None
    seeds, series = found
    c, t, o, p = (series[k] for k in "CTOP")
    parts = decompose(c, t, o, p)
    patterns = pd.Series({i: draws(draw_key(i), DIFFICULTY)[0] for i in o.index})
    return {
        "method": method, "about": METHODS[method][1], "seeds": seeds,
        "cross_stain": rounded(bootstrap(c.to_numpy())),
        "same_stain": rounded(bootstrap(t.to_numpy())),
        "gap_ratio": rounded(parts["gap_ratio"]),
        "in_domain_oof": rounded(bootstrap(o.to_numpy())),
        "same_stain_oof": rounded(bootstrap(p.to_numpy())),
        "ceiling": rounded(parts["ceiling"]), "transfer": rounded(parts["transfer"]),
        "ceiling_by_pattern": {
            k: {"images": v["images"], "ceiling": rounded(v["ceiling"])}
            for k, v in ceiling_by_group(o, p, patterns).items()
        },
        **{
            f"vs_{key}": None if base is None or method == name
            else rounded(bootstrap((c - base.reindex(c.index)).to_numpy()))
            for key, name, base in ((k, m, bases[m]) for k, m in BASELINES)
        },
    }  # fmt: skip


def report(check: bool = False) -> dict:
    """The tables from the archive; with ``check``, exit non-zero where the committed ones
    differ."""
    archive = RunArchive(ARCHIVE, RESULT_FILES, extra=("organ",))
    bases = {m: None if (b := sides(archive, m)) is None else b[1]["C"] for _, m in BASELINES}
    rows = [r for m in METHODS if (r := method_row(archive, m, bases))]
    result = {"budget": list(BUDGET), "plain": list(PLAIN), "difficulty": DIFFICULTY,
              "rows": rows}  # fmt: skip
    write_tables(TABLE, result, markdown(rows), "kidney_gap.py", check)
    return result


def markdown(rows: list[dict]) -> str:
    ci = interval_text
    lines = [
        "# Kidney, cross-stain: trained on PAS tiles rendered as HPA, tested on real PAS", "",
        "Generated by `research/kidney_gap.py --report` from `kidney_gap_runs.csv`. Budget: "
        f"`{' '.join(BUDGET)}`, another lab's augmentations off (`{' '.join(PLAIN)}`); 90 "
        "training tiles (rendered as HPA with the hard renderer's five antibody patterns, or as "
        "they are), 20 held-out real PAS tiles degraded (thickness, blur, JPEG). Dice per tile "
        "averaged over seeds, 95 % bootstrap intervals over tiles (paired). Ceiling R = in-domain "
        "OOF ÷ same-stain OOF (over the 90 training tiles); transfer τ = gap ratio ÷ R "
        "(`research/glas_gap.py`); test and OOF tiles resampled each on their own.", "",
        "| method | seeds | cross-stain (C) | same stain (T) | gap ratio C ÷ T | ceiling R | "
        "transfer τ | " + " | ".join(f"Δ cross-stain vs `{m}`" for _, m in BASELINES) + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(BASELINES),
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| `{r['method']}` | {r['seeds']} | {ci(r['cross_stain'])} | {ci(r['same_stain'])} | "
            f"{ci(r['gap_ratio'])} | {ci(r['ceiling'])} | {ci(r['transfer'])} | "
            + " | ".join("–" if r[f"vs_{k}"] is None else ci(r[f"vs_{k}"]) for k, _ in BASELINES)
            + " |"
        )
    lines += ["", "Ceiling per antibody pattern of the rendered tiles:", "",
              "| method | pattern | tiles | ceiling R |", "|---|---|---|---|"]  # fmt: skip
    for r in rows:
        for pattern, v in r["ceiling_by_pattern"].items():
            lines.append(f"| `{r['method']}` | {pattern} | {v['images']} | {ci(v['ceiling'])} |")
    lines += ["", *[f"- `{r['method']}`: {r['about']}" for r in rows], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, help="the kidney study's work folder")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="tables from the archive only")
    parser.add_argument("--check", action="store_true", help="fail if the tables are stale")
    args = parser.parse_args()
    if args.report or args.check:
        report(check=args.check)
        return
    if args.work is None:
        parser.error("--work is required to run experiments")
    study_data = args.work / "data"
    if not study_data.is_dir():
        raise SystemExit(f"{study_data}: build the kidney study first (kidney_study.py --work)")
    gap = render(study_data, args.work / "gap")
    run_missing(gap, args.methods, args.seeds)
    report()


if __name__ == "__main__":
    main()
