"""What the CPU pin costs: the same workloads with every library at AVX2 (the pipeline's
``cpu.isa: avx2``) and at each library's own choice (``native``, the baseline), in the same run.

Each workload runs in a fresh process per level (the libraries read the pin at import), levels
interleaved and repeated; the ratio is pinned ÷ native of the median times. Workloads: the sample
U-Net's forward + backward on a batch of 160² crops (training), the inference engine on a 1500²
image (OOF, submit), and OpenCV + numpy preprocessing (resampling, blur, colour conversion).

    python benchmarks/cpu_pin.py [--repeats 5] [--json benchmarks/results/cpu_pin.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ftuseg.core.cpu import pin_environment  # noqa: E402  (stdlib only: no library imported)

WORKLOADS = {
    "train_step": """
import torch, yaml
from ftuseg.models import build_model
from ftuseg.models.losses import SegmentationLoss
cfg = {**yaml.safe_load(open("conf/models/unet/sample.yaml")), "pretrained": False}
torch.manual_seed(0)
model, loss_fn = build_model(cfg).train(), SegmentationLoss()
x, y = torch.rand(8, 3, 160, 160), (torch.rand(8, 1, 160, 160) > 0.7).float()
o, p = torch.zeros(8, dtype=torch.long), torch.zeros(8)
def work():
    for _ in range(3):
        model.zero_grad(set_to_none=True)
        loss, _ = loss_fn(model(x, heads=model.has_heads), y, o, p)
        loss.backward()
""",
    "inference": """
import numpy as np, torch, yaml
from ftuseg.infer.engine import InferenceConfig, Member, Predictor
from ftuseg.models import build_model
cfg = {**yaml.safe_load(open("conf/models/unet/sample.yaml")), "pretrained": False}
torch.manual_seed(0)
member = Member(build_model(cfg).eval(), 1.0, "unet", None, 256)
predictor = Predictor([member], 2.0, InferenceConfig(tile_size=256))
image = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)
def work():
    predictor.predict(image, 0.5)
""",
    "preprocessing": """
import cv2, numpy as np
image = np.random.default_rng(0).integers(0, 255, (3000, 3000, 3), dtype=np.uint8)
def work():
    small = cv2.resize(image, (1500, 1500), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(small, (0, 0), 2.0)
    hsv = cv2.cvtColor(blurred, cv2.COLOR_RGB2HSV)
    od = -np.log(np.maximum(small.astype(np.float32), 1.0) / 255.0)
    np.exp(-od).sum(), hsv.mean()
""",
}
TIMER = """
import time
work()  # warm-up
started = time.perf_counter()
work()
print(time.perf_counter() - started)
"""


def time_once(workload: str, level: str, threads: int) -> float:
    env = dict(os.environ)
    pin_environment(level, threads, env)
    env["PYTHONPATH"] = str(ROOT / "src")
    out = subprocess.run(
        [sys.executable, "-c", WORKLOADS[workload] + TIMER],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    for name in WORKLOADS:
        times: dict[str, list[float]] = {"native": [], "avx2": []}
        for _ in range(args.repeats):
            for level in times:  # interleaved: a load change hits both levels alike
                times[level].append(time_once(name, level, args.threads))
        native, pinned = (statistics.median(times[k]) for k in ("native", "avx2"))
        results[name] = {
            "native_s": round(native, 4),
            "avx2_s": round(pinned, 4),
            "ratio": round(pinned / native, 3),
            "repeats": args.repeats,
        }
        print(f"{name:<14} native {native:.3f} s  avx2 {pinned:.3f} s  ratio {pinned / native:.3f}")
    report = {"threads": args.threads, "baseline": "native", "workloads": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
