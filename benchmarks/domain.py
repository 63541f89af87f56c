"""Ablation of the HPA → HuBMAP handling on the sample dataset, as `dvc exp` experiments.

One experiment per `domain` preset (conf/domain/), all with the sample U-Net alone
(`-S model=unet`): `none` (no stain handling, every image treated as 0.4 µm/px, flips only) is
the baseline; `copies` adds the stain stage's recoloured copies, `normalize` Vahadane
normalisation to the H&E reference, `resample` the csv pixel sizes alone (resampling to the
training scale and back), `scale` the same with zoom and thickness augmentation, `all`
everything (the default). Prints HuBMAP-like test Dice (the sample test
split: H&E/PAS at the real HuBMAP pixel sizes) and HPA OOF Dice, overall and per organ, with
the difference to the baseline measured in the same set of experiments.

    python benchmarks/domain.py [--train]     # --train queues and runs the missing experiments
"""

from __future__ import annotations

import argparse
import sys

from experiments import dvc, finished_experiments

PRESETS = ("none", "copies", "normalize", "resample", "scale", "all")
ORGANS = ("kidney", "prostate", "largeintestine", "spleen", "lung")


def preset_of(params: dict) -> str | None:
    """Which domain preset an experiment's params correspond to (compared on the switches)."""
    if params.get("ensemble", {}).get("models") != ["unet"] or "augment" not in params:
        return None  # other models, or a version of the pipeline before these switches
    if params.get("sample", {}).get("field_um") != 480:
        return None
    aug, train = params.get("augment", {}), params.get("train", {})
    key = (
        train.get("stain_copy_prob", 0) > 0,
        params.get("stain", {}).get("normalize", {}).get("method", "none") != "none",
        params.get("inference", {}).get("scale_handling", True),
        aug.get("hed", 0) > 0,
        aug.get("rotate_scale", 0) > 0 or aug.get("thickness", 0) > 0,
    )
    return {
        (False, False, False, False, False): "none",
        (True, False, False, False, False): "copies",
        (False, True, False, False, False): "normalize",
        (False, False, True, False, False): "resample",
        (False, False, True, False, True): "scale",
        (True, False, True, True, True): "all",
    }.get(key)


def collect() -> dict[str, dict]:
    found: dict[str, dict] = {}
    for name, params, metrics in finished_experiments():
        preset = preset_of(params)
        test = metrics.get("metrics/test.json", {})
        oof = metrics.get("metrics/ensemble.json", {}).get("ensemble", {})
        if preset and test.get("scored") and preset not in found:
            found[preset] = {"name": name or "workspace", "test": test, "oof": oof}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", action="store_true", help="run the missing experiments")
    args = parser.parse_args()
    if args.train:
        missing = [p for p in PRESETS if p not in collect()]
        for preset in missing:
            dvc("exp", "run", "--queue", "-S", "model=unet", "-S", f"domain={preset}",
                "-n", f"domain-{preset}")  # fmt: skip
        if missing:
            dvc("queue", "start", "-j", "1")
            print(f"queued {missing}; run again without --train when `dvc queue status` is done")
            return
    found = collect()
    if "none" not in found:
        sys.exit("no baseline (domain=none) experiment yet: run with --train")
    base = found["none"]["test"]["dice"]
    cols = "".join(f"{o[:6]:>8}" for o in ORGANS)
    print("HuBMAP-like test Dice (10 images) and HPA OOF Dice (tuned thresholds), U-Net\n")
    print(f"{'preset':<10} {'experiment':<18} {'test':>6} {'Δ base':>7}{cols} {'OOF':>6}")
    for preset in PRESETS:
        if preset not in found:
            print(f"{preset:<10} (not run)")
            continue
        f = found[preset]
        per_organ = "".join(f"{f['test'].get(f'dice_{o}', float('nan')):>8.3f}" for o in ORGANS)
        print(
            f"{preset:<10} {f['name']:<18} {f['test']['dice']:>6.3f} "
            f"{f['test']['dice'] - base:>+7.3f}{per_organ} {f['oof'].get('dice', float('nan')):>6.3f}"
        )


if __name__ == "__main__":
    main()
