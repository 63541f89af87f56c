"""The architecture zoo on CPU: size and training cost per architecture.

For every architecture in conf/models/ and both its configs (sample, full), prints parameters
and CPU forward+backward time per image at that config's training crop (sample profile 160 px,
full-sample profile 512 px), as a ratio to the baseline measured in the same run: the sample
U-Net (smp, EfficientNet-B0). Their OOF Dice on the sample is a study, `research/architectures.py`.

Timed in both memory layouts, alternately, the best of ``--repeats`` each: NHWC
(``train.channels_last``, what training uses) and NCHW; ``NCHW ÷ NHWC`` above 1 means the
layout pays off for that architecture.

    python benchmarks/models.py [--json benchmarks/results/models.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from ftuseg.models import build_model
from ftuseg.models.losses import SegmentationLoss

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
CROP = {"sample": 160, "full": 512}
BASELINE = ("unet", "sample")


def architectures() -> list[str]:
    return sorted(p.name for p in (CONF / "models").iterdir() if p.is_dir())


def model_config(name: str, size: str) -> dict:
    cfg = yaml.safe_load((CONF / "models" / name / f"{size}.yaml").read_text())
    return {**cfg, "pretrained": False, "weights_file": None}  # timing needs no weights


def seconds_per_image(
    cfg: dict, crop: int, channels_last: bool, batch: int = 2, repeats: int = 1
) -> float:
    """Forward + backward (with the config's training heads) per image, best of ``repeats``,
    in the NHWC (``channels_last``) or the NCHW memory layout."""
    torch.manual_seed(0)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(cfg).train().to(memory_format=memory)
    criterion = SegmentationLoss()
    x = torch.rand(batch, 3, crop, crop).contiguous(memory_format=memory)
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    parser.add_argument(
        "--reuse", type=Path, help="take parameters and timings from an earlier --json output"
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per layout")
    args = parser.parse_args()
    names = architectures()
    rows = []
    earlier = (
        {(r["model"], r["size"]): r for r in json.loads(args.reuse.read_text())["rows"]}
        if args.reuse
        else {}
    )
    for name in names:
        for size in ("sample", "full"):
            if (name, size) in earlier:
                rows.append(earlier[name, size])
                continue
            cfg = model_config(name, size)
            model = build_model(cfg)
            params_m = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
            del model
            # alternating layouts: a slow spell of the machine hits both alike
            times: dict[bool, float] = {True: float("inf"), False: float("inf")}
            for _ in range(args.repeats):
                for layout in times:
                    times[layout] = min(times[layout], seconds_per_image(cfg, CROP[size], layout))
            rows.append(
                {
                    "model": name,
                    "size": size,
                    "arch": cfg["arch"],
                    "encoder": cfg["encoder"],
                    "params_m": params_m,
                    "crop": CROP[size],
                    "s_per_image": round(times[True], 3),
                    "nchw_s_per_image": round(times[False], 3),
                }
            )
    base = next(r for r in rows if (r["model"], r["size"]) == BASELINE)["s_per_image"]
    print(
        f"\nCPU forward+backward per image, NHWC ({torch.get_num_threads()} threads); baseline = "
        f"{BASELINE[0]} {BASELINE[1]} ({base:.3f} s/image at {CROP[BASELINE[1]]} px)\n"
    )
    header = (
        f"{'model':<10} {'size':<7} {'arch':<14} {'encoder':<34} {'params M':>8} {'crop':>5} "
        f"{'s/img':>7} {'x base':>7} {'NCHW s/img':>10} {'NCHW÷NHWC':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['model']:<10} {r['size']:<7} {r['arch']:<14} {r['encoder']:<34} "
            f"{r['params_m']:>8.2f} {r['crop']:>5} {r['s_per_image']:>7.3f} "
            f"{r['s_per_image'] / base:>7.2f} {r['nchw_s_per_image']:>10.3f} "
            f"{r['nchw_s_per_image'] / r['s_per_image']:>9.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"baseline": list(BASELINE), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
