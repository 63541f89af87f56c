"""Write docs/results.md from the committed JSON: the pipeline's `metrics/` and the speed and memory
benchmarks' `benchmarks/results/`. Nothing here measures anything; it only lays numbers out.

    python docs/build_results.py           # rewrite docs/results.md (`make docs`)
    python docs/build_results.py --check   # exit 1 if docs/results.md is stale (a test runs it)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results.md"
ORGANS = ("kidney", "prostate", "largeintestine", "spleen", "lung")


def load(relative: str) -> Any:
    path = ROOT / relative
    if not path.is_file():
        sys.exit(f"{relative}: not found (run the stage or benchmark that writes it)")
    return (
        json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    )


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def dice(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def interval(m: dict[str, Any], key: str = "dice") -> str:
    """``0.612 [0.571, 0.650]`` where the summary holds a 95 % interval for ``key``."""
    if f"{key}_lo95" not in m:
        return dice(m.get(key, "–"))
    return f"{m[key]:.3f} [{m[key + '_lo95']:.3f}, {m[key + '_hi95']:.3f}]"


def organ_row(name: str, m: dict[str, Any]) -> list[Any]:
    organs = (dice(m.get(f"dice_{o}", "–")) for o in ORGANS)
    return [name, interval(m), *organs, m.get("n_images", "–")]


def pipeline_section() -> str:
    oof, ens, test = (
        load("metrics/oof.json"),
        load("metrics/ensemble.json"),
        load("metrics/test.json"),
    )
    config, kernel = load("data/ensemble.yaml"), load("metrics/kernel.json")
    rows = [organ_row("HuBMAP-like test: the submission", test)] if test.get("scored") else []
    rows += [
        organ_row("OOF: ensemble, cross-fitted (the estimate)", ens["ensemble_cross_fitted"]),
        organ_row("OOF: ensemble, tuned on the same images", ens["ensemble"]),
        organ_row("OOF: ensemble at 0.5", ens["ensemble_at_default_threshold"]),
        *(organ_row(f"OOF: {name} at 0.5", m) for name, m in oof.items()),
    ]
    weights = ", ".join(f"{k} {v:g}" for k, v in ens["weights"].items())
    thresholds = ", ".join(f"{k} {v:g}" for k, v in config["thresholds"].items())
    return "\n\n".join([
        "## The committed pipeline run (`make repro`, sample profile)",
        "Every number from `metrics/*.json` of the committed `dvc.lock` run. The sample's training "
        "images are synthetic (HPA-like); its kidney test images are "
        f"{real_kidney_test()} **real** HuBMAP PAS tiles, the other organs' synthetic HuBMAP-like ones "
        "(see [pipeline.md](pipeline.md#the-embedded-sample-dataset)).",
        table(["what", "Dice [95 % interval]", *ORGANS, "images"], rows),
        "Cross-fitted: each fold scored with the weights and thresholds tuned on the other folds. "
        "Intervals: percentile bootstrap over images (2000 resamples, fixed seed).",
        table(
            ["model", "val Dice, best epoch", "val Dice, last epoch", "selection optimism"],
            [[n, dice(m["val_dice_best_epoch"]), dice(m["val_dice_last_epoch"]),
              dice(m["selection_optimism"])] for n, m in oof.items()],
        ),
        f"Ensemble weights: {weights}. Thresholds per organ: {thresholds}.",
        f"Kernel (`metrics/kernel.json`): {kernel['seconds_per_megapixel']} s per megapixel on "
        f"{kernel['threads']} {kernel['device']} threads; projected {kernel['projected_total_hours']}"
        f" h for the hidden test set against the {kernel['limit_hours']:g} h limit.",
    ])  # fmt: skip


def loader_section() -> str:
    data = load("benchmarks/results/loader.json")
    recipes = [k for k in ("flips only", "default recipe") if k in data]
    rows = [
        [r, data[r]["mean_ms"], data[r]["p95_ms"], data[r]["crops_per_s_per_worker"]]
        for r in recipes
    ]
    steps = data["per transform (median ms)"]
    return "\n\n".join([
        f"### Input pipeline (`benchmarks/loader.py`): one {data['crop']}² crop, one worker",
        table(["recipe", "mean ms", "p95 ms", "crops/s per worker"], rows),
        "Median ms per transform: " + ", ".join(f"{k} {v}" for k, v in steps.items()) + ".",
    ])  # fmt: skip


def ensemble_section() -> str:
    d = load("benchmarks/results/ensemble.json")
    rows = [
        ["one objective evaluation", d["baseline_per_pixel_objective_s"], d["level_table_objective_s"], d["objective_speedup"]],
        ["whole search", d["search_per_pixel_projected_s"], d["search_s"] + d["level_table_build_s"], d["search_speedup_incl_build"]],
    ]  # fmt: skip
    return "\n\n".join([
        f"### Ensemble search (`benchmarks/ensemble.py`): {d['images']} images of {d['side']}², "
        f"{d['members']} members",
        table(["what", "per-pixel baseline s", "level table s", "speed-up"], rows),
        f"Same objective value: {d['objective_equal']}; peak RSS {d['peak_rss_gib']} GiB.",
    ])  # fmt: skip


def slide_section() -> str:
    d = load("benchmarks/results/slide.json")
    rows = [
        [k.replace("_", " "), v["megapixels"], v["wall_s"], v["megapixels_per_s"], v["peak_rss_mb"]]
        for k, v in d.items()
        if isinstance(v, dict)
    ]
    return "\n\n".join([
        "### Whole-slide prediction (`benchmarks/slide.py`): memory does not grow with the slide",
        table(["slide", "MP", "wall s", "MP/s", "peak RSS MB"], rows),
        f"Tissue detection saves {d['time_saved_by_tissue_detection']:.0%} of the time on the "
        "8192² slide.",
    ])  # fmt: skip


def models_section() -> str:
    d = load("benchmarks/results/models.json")
    base = next(r for r in d["rows"] if [r["model"], r["size"]] == d["baseline"])["s_per_image"]
    rows = [
        [
            r["model"],
            r["size"],
            r["params_m"],
            r["crop"],
            r["s_per_image"],
            round(r["s_per_image"] / base, 2),
            round(r["nchw_s_per_image"] / r["s_per_image"], 2),
        ]
        for r in d["rows"]
    ]
    return "\n\n".join([
        f"### Architectures (`benchmarks/models.py`): CPU forward+backward, baseline "
        f"{' '.join(d['baseline'])}",
        table(["model", "size", "params M", "crop", "s/image (NHWC)", "× baseline",
               "NCHW ÷ NHWC"], rows),  # fmt: skip
        "Their OOF Dice on the sample: [research/](../research/studies/architectures.md).",
    ])  # fmt: skip


def rehearsal_section() -> str:
    d = load("benchmarks/results/rehearsal.json")
    sizes = [run["train_images"] for run in d["runs"]]
    rows = [[k, v] for k, v in d["train_peak_rss_ratio"].items()]
    return "\n\n".join([
        f"### Rehearsal at real sizes (`make rehearsal`): {sizes[-1]} vs {sizes[0]} training images",
        table(["train stage", f"peak RSS ratio ({sizes[-1]} ÷ {sizes[0]} images)"], rows),
    ])  # fmt: skip


def text_section(title: str, relative: str) -> str:
    return f"### {title} (`{relative}`)\n\n```\n{(ROOT / relative).read_text().rstrip()}\n```"


def cpu_pin_section() -> str:
    d = load("benchmarks/results/cpu_pin.json")
    rows = [[k, v["native_s"], v["avx2_s"], v["ratio"]] for k, v in d["workloads"].items()]
    return "\n\n".join([
        f"### The CPU pin (`benchmarks/cpu_pin.py`): AVX2 ÷ each library's own choice, "
        f"{d['threads']} threads",
        table(["workload", "native s", "avx2 s", "ratio"], rows),
    ])  # fmt: skip


def real_kidney_test() -> int:
    """How many real HuBMAP PAS kidney tiles the committed run's test split holds."""
    return int(load("params.yaml")["sample"]["real_kidney_test"])


def shipped_section() -> str:
    card = load("src/ftuseg/assets/models/kidney/card.json")
    return "\n\n".join([
        "## The shipped kidney glomerulus model (`ftuseg predict --organ kidney`)",
        f"From `src/ftuseg/assets/models/kidney/card.json` (profile `kidney-real`, fold {card['fold']}"
        f", fp16): held-out test Dice {interval(card, 'test_dice')} over {card['test_tiles']} real "
        f"PAS tiles; OOF Dice of the run {dice(card['oof_dice'])}, cross-fitted ensemble "
        f"{dice(card['oof_cross_fitted'])}; {card['wall_minutes']:.0f} min on 2 CPU cores."
        f"{second_lab(card)} Model card: "
        "[MODEL_CARD.md](../src/ftuseg/assets/models/kidney/MODEL_CARD.md).",
    ])  # fmt: skip


def second_lab(card: dict) -> str:
    """The card's second-lab proxy sentence (empty for a card without one)."""
    if "second_lab_dice" not in card:
        return ""
    hold = card["second_lab_hold"]
    return (
        f" A second lab (the kidney study's proxy): {interval(card, 'second_lab_dice')} over "
        f"{card['second_lab_tiles']} tiles; it keeps {hold[0]:.2f} [{hold[1]:.2f}, {hold[2]:.2f}] "
        "of its Dice on the same tiles as their lab made them."
    )


def estimate_line() -> str:
    """The README's one generated line: what the committed sample run measures, and where the
    shipped model's real-pixel numbers are."""
    ens, test = load("metrics/ensemble.json"), load("metrics/test.json")
    line = (
        "The committed sample run is a check of the pipeline, not a model to use: it trains on "
        "synthetic HPA-like images at a CPU budget and is tested across the competition's stain "
        f"shift. Cross-fitted OOF Dice (HPA-like) {interval(ens['ensemble_cross_fitted'])}"
    )
    if test.get("scored"):
        line += (
            f"; HuBMAP-like test Dice {interval(test)} over {test['n_images']} images, of which "
            f"the {real_kidney_test()} kidney tiles are **real** HuBMAP PAS: "
            f"{interval(test, 'dice_kidney')}"
        )
    card = load("src/ftuseg/assets/models/kidney/card.json")
    return line + (
        f". The shipped glomerulus model, trained on real PAS tiles, scores "
        f"{card['test_dice']:.3f} on the same {card['test_tiles']} real tiles (same lab; "
        "[results](docs/results.md#the-shipped-kidney-glomerulus-model-ftuseg-predict---organ-kidney))."
    )


README = ROOT / "README.md"
START, END = "<!-- estimate: generated by make docs -->", "<!-- end of estimate -->"


def readme_with_estimate(text: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{estimate_line()}\n{END}{tail}"


def render() -> str:
    parts = [
        "# Results",
        "Generated by `make docs` (`docs/build_results.py`) from committed JSON; a test fails when "
        "this page is stale. How a number moved is in the commit log. The domain-shift studies "
        "(real pixels, seeds, intervals) are in [research/README.md](../research/README.md).",
        pipeline_section(),
        shipped_section(),
        "## Speed and memory (`make bench`; 2 CPU cores, no GPU)",
        loader_section(),
        ensemble_section(),
        slide_section(),
        models_section(),
        rehearsal_section(),
        cpu_pin_section(),
        text_section("Stain stage cost", "benchmarks/results/stain.txt"),
    ]
    return "\n\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    pages = {OUT: render(), README: readme_with_estimate(README.read_text())}
    if args.check:
        stale = [p.name for p, text in pages.items() if not p.is_file() or p.read_text() != text]
        if stale:
            sys.exit(f"{stale} stale: run `make docs` and commit")
        return
    for path, text in pages.items():
        path.write_text(text)


if __name__ == "__main__":
    main()
