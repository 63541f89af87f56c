"""Sample-dataset OOF Dice per architecture, from `dvc exp` experiments of the sample profile, one
per architecture (`dvc exp run -S model=<name>`; `--train` runs the missing ones, the lung
specialist beside the baseline U-Net it completes). Full-size configs are not trained on CPU.
Their size and CPU cost are a speed benchmark, `benchmarks/models.py`.

    python research/architectures.py [--train] [--json research/results/architectures.json]

The committed ``results/architectures.json`` was measured before ``uv.lock`` existed and its
experiments are gone with the clone that ran them: a record, not rebuilt.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from experiments import ROOT, dvc, finished_experiments

BASELINE = "unet"


def architectures() -> list[str]:
    return sorted(p.name for p in (ROOT / "conf" / "models").iterdir() if p.is_dir())


def sample_oof_dice() -> dict[str, dict]:
    """OOF Dice of single-architecture experiments on the sample profile, by architecture."""
    # Only experiments trained with the current recipe (augmentation, stain, training params).
    current = yaml.safe_load((ROOT / "params.yaml").read_text())
    recipe = ("augment", "stain", "train", "inference", "prepare")
    found: dict[str, dict] = {}
    for name, params, metrics in finished_experiments():
        models = params.get("ensemble", {}).get("models", [])
        if params.get("data", {}).get("raw_dir") != "data/sample":
            continue
        if params.get("sample", {}).get("field_um") != 480:  # the sample profile only
            continue
        if any(params.get(k) != current.get(k) for k in recipe):
            continue
        # One architecture alone, or one generalist beside specialists (models with `organs`):
        # a specialist is scored by the ensemble it joins, since it only counts on its organs.
        specialists = [m for m in models if params.get("models", {}).get(m, {}).get("organs")]
        if len(models) - len(specialists) != 1:
            continue
        oof, ens = metrics.get("metrics/oof.json", {}), metrics.get("metrics/ensemble.json", {})
        if not all(m in oof for m in models) or "ensemble" not in ens:
            continue
        (generalist,) = [m for m in models if m not in specialists]
        for model in specialists or [generalist]:
            found.setdefault(
                model,
                {
                    "experiment": name,
                    "ensemble": models,
                    "dice_at_0.5": ens["ensemble_at_default_threshold"]["dice"],
                    "dice_tuned": ens["ensemble"]["dice"],
                    "dice_lung_tuned": ens["ensemble"].get("dice_lung"),
                },
            )
    # Architectures of the committed default run (the workspace's `dvc repro`): their single-model
    # scores are in its ensemble report.
    oof_path, ens_path = ROOT / "metrics/oof.json", ROOT / "metrics/ensemble.json"
    if oof_path.is_file() and ens_path.is_file():
        oof, ens = json.loads(oof_path.read_text()), json.loads(ens_path.read_text())
        for name, scores in oof.items():
            single = ens.get("single_models", {}).get(name)
            if single and name not in found:
                found[name] = {
                    "experiment": "workspace",
                    "dice_at_0.5": scores["dice"],
                    "dice_tuned": single["dice"],
                    "dice_lung_tuned": single.get("dice_lung"),
                }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", action="store_true", help="run missing sample experiments")
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    args = parser.parse_args()
    names = architectures()
    if args.train:
        for name in [n for n in names if n not in sample_oof_dice()]:
            conf = ROOT / "conf" / "models" / name / "sample.yaml"
            specialist = yaml.safe_load(conf.read_text()).get("organs")
            choice = f"ensemble.models=[{BASELINE},{name}]" if specialist else f"model={name}"
            print(f"training {name} on the sample dataset (dvc exp run -S {choice}) ...")
            dvc("exp", "run", "-S", choice, "-n", f"arch-{name}", "--temp")
    oof = sample_oof_dice()
    print(f"{'model':<10} {'OOF@0.5':>8} {'OOF tuned':>9} {'lung':>6}  experiment")
    for name in names:
        o = oof.get(name)
        if o is None:
            print(f"{name:<10} {'n/a':>8} {'n/a':>9} {'n/a':>6}  (not run: --train)")
            continue
        lung = o["dice_lung_tuned"]
        print(f"{name:<10} {o['dice_at_0.5']:>8.3f} {o['dice_tuned']:>9.3f} "
              f"{lung if lung is None else f'{lung:.3f}':>6}  {o['experiment']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"oof": oof}, indent=2) + "\n")


if __name__ == "__main__":
    main()
