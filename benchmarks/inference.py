"""Inference engine cost: the full engine against the model forward passes it makes.

Two baselines, measured in the same run on the same image:

- "own forward": the time the engine itself spends inside the model's forward (a timing
  wrapper around the member model, so exactly the engine's calls, tiles and batches). The
  engine's total can never be below it; total ÷ own forward is the engine's overhead factor
  (tile cutting, blending windows, accumulation, quantisation, resampling to the original size).
- "pure forward": the same tiles, pre-cut and batched outside the clock, through the model and a
  sigmoid, nothing else. Engine and pure forward alternate, each timed `--repeats` times, and
  the minimum is kept, so neither runs on a warmer cache than the other.

Also reported: megapixels per second, how time grows with the image side (goal: linear in
pixels), and the peak resident memory of predicting a 4500x4500 image (in a fresh process).

    python benchmarks/inference.py [--sizes 1500 3000 4500] [--tile 256] [--overlap 0.25]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ftuseg.core.utils import read_yaml
from ftuseg.infer.engine import InferenceConfig, Member, Predictor, tiles
from ftuseg.models import build_model

UM_PER_PX = 1.0  # images are given at the model's scale, so the engine sees N x N pixels


def make_predictor(tile: int, overlap: float, batch: int) -> Predictor:
    torch.manual_seed(0)
    model_cfg = read_yaml("params.yaml")["models"]["unet"]
    cfg = InferenceConfig(tile_size=tile, overlap=overlap, batch_size=batch, device="cpu")
    return Predictor([Member(TimedModel(build_model(model_cfg)), 1.0)], UM_PER_PX, cfg)


def image(side: int) -> np.ndarray:
    return np.random.default_rng(side).integers(0, 255, (side, side, 3), dtype=np.uint8)


@torch.inference_mode()
def forward_only(predictor: Predictor, img: np.ndarray) -> float:
    cfg = predictor.config
    x = torch.from_numpy(img).permute(2, 0, 1)
    boxes = tiles(img.shape[:2], cfg.tile_size, cfg.overlap)
    # Tiles are cut before the clock starts (kept as uint8 so the baseline's memory stays small).
    batches = [
        torch.stack([x[:, y : y + h, c : c + w] for y, c, h, w in boxes[i : i + cfg.batch_size]])
        for i in range(0, len(boxes), cfg.batch_size)
    ]
    model = predictor.members[0].model.model  # the bare network, without the timing wrapper
    start = time.perf_counter()
    for b in batches:
        torch.sigmoid(model(b.float().div_(255.0)))
    return time.perf_counter() - start


class TimedModel(torch.nn.Module):
    """The member model, with the seconds spent in its forward added up (CPU: synchronous)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seconds = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.model(x)
        self.seconds += time.perf_counter() - start
        return out


def engine(predictor: Predictor, img: np.ndarray) -> tuple[float, float]:
    """(total seconds, seconds inside the model's forward) of one prediction."""
    timed = predictor.members[0].model
    assert isinstance(timed, TimedModel)
    timed.seconds = 0.0
    start = time.perf_counter()
    predictor.predict(img, UM_PER_PX)
    return time.perf_counter() - start, timed.seconds


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory(args: argparse.Namespace, side: int) -> dict[str, float]:
    """In a fresh process: resident memory before one prediction and its peak during it.

    The peak is Linux's VmHWM, reset just before the prediction through /proc/self/clear_refs
    (getrusage's ru_maxrss cannot be reset and is inherited from the parent process).
    """
    predictor = make_predictor(args.tile, args.overlap, args.batch)
    img = image(side)
    predictor.predict(image(64), UM_PER_PX)  # warm-up allocations outside the measurement
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_mib("VmRSS")
    predictor.predict(img, UM_PER_PX)
    return {
        "side": side,
        "rss_mib": before,
        "peak_mib": _status_mib("VmHWM"),
        "image_mib": img.nbytes / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1500, 3000, 4500])
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-side", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    if args.memory_side:
        print(json.dumps(peak_memory(args, args.memory_side)))
        return

    predictor = make_predictor(args.tile, args.overlap, args.batch)
    predictor.predict(image(256), UM_PER_PX)  # warm-up
    print(f"model: params.yaml models.unet, tile {args.tile}, overlap {args.overlap}, batch {args.batch}, "
          f"{torch.get_num_threads()} CPU threads")  # fmt: skip
    print(
        f"{'side':>6} {'tiles':>6} {'pure fwd s':>10} {'engine s':>9} {'own fwd s':>9} "
        f"{'eng/own':>7} {'eng/pure':>8} {'MP/s':>6} {'s/MP':>6}"
    )
    per_mp = []
    for side in args.sizes:
        img = image(side)
        pure, total, own = [], [], []
        for _ in range(args.repeats):  # alternate, keep the minimum of each
            pure.append(forward_only(predictor, img))
            t, f = engine(predictor, img)
            total.append(t)
            own.append(f)
        i = int(np.argmin(total))
        t_pure, t_engine, t_own = min(pure), total[i], own[i]
        mp = side * side / 1e6
        per_mp.append(t_engine / mp)
        n_tiles = len(tiles((side, side), args.tile, args.overlap))
        print(f"{side:>6} {n_tiles:>6} {t_pure:>10.2f} {t_engine:>9.2f} {t_own:>9.2f} "
              f"{t_engine / t_own:>7.3f} {t_engine / t_pure:>8.3f} {mp / t_engine:>6.3f} "
              f"{t_engine / mp:>6.2f}")  # fmt: skip
    print(
        f"time per megapixel, largest / smallest image: {per_mp[-1] / per_mp[0]:.2f} (1.00 = linear in pixels)"
    )

    side = max(args.sizes)
    out = subprocess.run(
        [sys.executable, __file__, "--memory-side", str(side), "--tile", str(args.tile),
         "--overlap", str(args.overlap), "--batch", str(args.batch)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"peak RSS predicting {side}x{side}: {mem['peak_mib']:.0f} MiB, "
        f"+{mem['peak_mib'] - mem['rss_mib']:.0f} MiB over the process holding the model and image "
        f"(the uint8 image alone is {mem['image_mib']:.0f} MiB; one float32 map of it is "
        f"{mem['image_mib'] / 3 * 4:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
