"""The architecture zoo on CPU: size, training cost and sample-dataset OOF Dice per architecture.

For every architecture in conf/models/ and both its configs (sample, full), prints parameters
and CPU forward+backward time per image at that config's training crop (sample profile 160 px,
full-sample profile 512 px), as a ratio to the baseline measured in the same run: the sample
U-Net (smp, EfficientNet-B0). OOF Dice on the sample dataset comes from `dvc exp` experiments
of the sample profile, one per architecture (`dvc exp run -S model=<name>`, a fresh clone runs
them with `--train`); full-size configs are not trained on CPU.

    python benchmarks/models.py [--train] [--json metrics/models.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml
from experiments import ROOT, dvc, finished_experiments

from ftuseg.models import build_model
from ftuseg.models.losses import SegmentationLoss

CONF = ROOT / "conf"
CROP = {"sample": 160, "full": 512}
BASELINE = ("unet", "sample")


def architectures() -> list[str]:
    return sorted(p.name for p in (CONF / "models").iterdir() if p.is_dir())


def model_config(name: str, size: str) -> dict:
    cfg = yaml.safe_load((CONF / "models" / name / f"{size}.yaml").read_text())
    return {**cfg, "pretrained": False, "weights_file": None}  # timing needs no weights


def seconds_per_image(cfg: dict, crop: int, batch: int = 2, repeats: int = 1) -> float:
    """Forward + backward (with the config's training heads) per image, best of ``repeats``."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    criterion = SegmentationLoss()
    x = torch.rand(batch, 3, crop, crop)
    target = (torch.rand(batch, 1, crop, crop) > 0.7).float()
    organ = torch.zeros(batch, dtype=torch.long)
    log_px = torch.zeros(batch)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss, _ = criterion(model(x, heads=model.has_heads), target, organ, log_px)
        loss.backward()

    step()  # warm-up: allocations, lazy initialisation
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return best / batch


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
    parser.add_argument(
        "--reuse", type=Path, help="take parameters and timings from an earlier --json output"
    )
    args = parser.parse_args()
    names = architectures()
    if args.train:
        missing = [n for n in names if n not in sample_oof_dice()]
        for name in missing:
            # A specialist trains beside the baseline generalist it completes.
            specialist = model_config(name, "sample")["organs"]
            choice = f"ensemble.models=[{BASELINE[0]},{name}]" if specialist else f"model={name}"
            print(f"training {name} on the sample dataset (dvc exp run -S {choice}) ...")
            dvc("exp", "run", "-S", choice, "-n", f"arch-{name}", "--temp")
    oof = sample_oof_dice()

    rows = []
    earlier = (
        {(r["model"], r["size"]): r for r in json.loads(args.reuse.read_text())["rows"]}
        if args.reuse
        else {}
    )
    for name in names:
        for size in ("sample", "full"):
            if (name, size) in earlier:
                rows.append(
                    {**earlier[name, size], "oof": oof.get(name) if size == "sample" else None}
                )
                continue
            cfg = model_config(name, size)
            model = build_model(cfg)
            rows.append(
                {
                    "model": name,
                    "size": size,
                    "arch": cfg["arch"],
                    "encoder": cfg["encoder"],
                    "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                    "crop": CROP[size],
                    "s_per_image": round(seconds_per_image(cfg, CROP[size]), 3),
                    "oof": oof.get(name) if size == "sample" else None,
                }
            )
            del model
    base = next(r for r in rows if (r["model"], r["size"]) == BASELINE)["s_per_image"]
    print(
        f"\nCPU forward+backward per image ({torch.get_num_threads()} threads); baseline = "
        f"{BASELINE[0]} {BASELINE[1]} ({base:.3f} s/image at {CROP[BASELINE[1]]} px)\n"
    )
    header = (
        f"{'model':<10} {'size':<7} {'arch':<14} {'encoder':<34} {'params M':>8} {'crop':>5} "
        f"{'s/img':>7} {'x base':>7} {'OOF@0.5':>8} {'OOF tuned':>9} {'lung':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        o = r["oof"] or {}

        def fmt(v: float | None) -> str:
            return f"{v:.3f}" if isinstance(v, float) else "n/a"

        print(
            f"{r['model']:<10} {r['size']:<7} {r['arch']:<14} {r['encoder']:<34} "
            f"{r['params_m']:>8.2f} {r['crop']:>5} {r['s_per_image']:>7.3f} "
            f"{r['s_per_image'] / base:>7.2f} {fmt(o.get('dice_at_0.5')):>8} "
            f"{fmt(o.get('dice_tuned')):>9} {fmt(o.get('dice_lung_tuned')):>6}"
        )
    for r in rows:
        o = r["oof"] or {}
        if r["size"] == "sample" and len(o.get("ensemble", [])) > 1:
            print(f"{r['model']}: a specialist, scored as the ensemble {' + '.join(o['ensemble'])}")
    if args.json:
        args.json.write_text(json.dumps({"baseline": list(BASELINE), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
