"""Can the input pipeline keep a GPU busy? CPU cost of one training crop, next to the model's.

Real-size data: HPA-like 3000² images from the sample generator, prepared at the `kaggle`
profile's 0.8 µm/px (1500² px), 768² crops as that profile draws them (memory-mapped arrays,
FTU-centred with probability 0.5), in one process with one OpenCV thread: what one data-loader
worker does. Reported:

- ms per crop (mean, median, 95th percentile, max) with flips only and with the "default recipe"
  (`augment` in conf/config.yaml as it stands, i.e. the `all` preset's full recipe: an upper
  bound, the default `lean` preset turns its colour transforms and cut-mix/cut-out off), and
  crops per second per worker;
- the cost of each transform alone on a 768² crop (probability 1);
- the model's forward+backward time per crop measured in the same run on this CPU (the kaggle
  profile's U-Net, EfficientNet-B7, built without downloading weights), and how many workers a
  GPU consuming 20 crops/s would need.

    python benchmarks/loader.py [--crops 200] [--model unet] [--no-model] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import OmegaConf

from ftuseg.data.prepare import PrepareConfig, prepare, read_index
from ftuseg.data.sample import SampleConfig, generate
from ftuseg.domain.augment import (
    AugmentConfig,
    add_noise,
    adjust_contrast,
    adjust_hsv,
    cutout,
    glass_edge,
    hed_jitter,
    random_dihedral,
    rotate_scale,
    scanner_response,
    thickness_adapt,
)
from ftuseg.domain.optics import scale_density
from ftuseg.models import build_model
from ftuseg.train.datasets import CropDataset

ROOT = Path(__file__).resolve().parents[1]
CROP = 768
UM_PER_PX = 0.8  # the kaggle profile
GPU_CROPS_PER_S = 20.0


def default_recipe() -> AugmentConfig:
    values = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/config.yaml"))["augment"]
    return AugmentConfig(**values)


def time_crops(dataset: CropDataset, n: int) -> np.ndarray:
    """Milliseconds per item (crop, augmentation, tensor) over ``n`` items."""
    out = []
    for i in range(n):
        started = time.perf_counter()
        dataset[(0, i % len(dataset))]
        out.append((time.perf_counter() - started) * 1e3)
    return np.array(out)


def time_transforms(image: np.ndarray, mask: np.ndarray, repeats: int = 20) -> dict[str, float]:
    """Median milliseconds of each transform alone on one crop."""
    rng = np.random.default_rng(0)
    cases = {
        "dihedral": lambda: random_dihedral(image, mask, rng),
        "rotate_scale": lambda: rotate_scale(image, mask, 17.0, 1.1),
        "thickness (kidney)": lambda: thickness_adapt(image, "kidney", UM_PER_PX, 0.15),
        "hed": lambda: hed_jitter(image, np.array([1.03, 0.97, 1.02]), np.array([0.01, 0, -0.01])),
        "hsv": lambda: adjust_hsv(image, 0.05, 1.1, 0.9),
        "contrast": lambda: adjust_contrast(image, 1.2),
        "noise": lambda: add_noise(image, 0.1, rng),
        "cutout": lambda: cutout(image, mask, rng, (0.2, 0.5)),
        "density": lambda: scale_density(image, 0.3),
        "glass": lambda: glass_edge(image, mask, rng, (0.1, 0.5)),
        "scanner": lambda: scanner_response(image, np.array([0.92, 1.0, 1.07])),
    }
    result = {}
    for name, fn in cases.items():
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) * 1e3)
        result[name] = float(np.median(times))
    return result


def model_seconds_per_crop(name: str, threads: int) -> float:
    """Forward+backward seconds per 768² crop (batch of 2, the second of two steps)."""
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / f"conf/models/{name}/full.yaml"))
    cfg = {**cfg, "pretrained": False, "weights_file": None}
    cfg.pop("train", None)
    torch.set_num_threads(threads)
    model = build_model(cfg).train()
    x = torch.rand(2, 3, CROP, CROP)
    for _ in range(2):
        started = time.perf_counter()
        out = model(x)
        out.float().mean().backward()
        elapsed = time.perf_counter() - started
        model.zero_grad(set_to_none=True)
    return elapsed / 2


def stats(ms: np.ndarray) -> dict[str, float]:
    return {
        "mean_ms": round(float(ms.mean()), 2),
        "median_ms": round(float(np.median(ms)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "max_ms": round(float(ms.max()), 2),
        "crops_per_s_per_worker": round(1e3 / float(ms.mean()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--crops", type=int, default=200)
    parser.add_argument("--model", default="unet", help="conf/models/<name>/full.yaml")
    parser.add_argument("--no-model", action="store_true", help="skip the model timing")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the model")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # what a data-loader worker runs with (ftuseg.train.datasets)
    torch.set_num_threads(1)
    results: dict = {"crop": CROP, "um_per_px": UM_PER_PX}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print("generating 10 HPA-like 3000² images, preparing at 0.8 µm/px ...", flush=True)
        generate(root / "raw", SampleConfig(train_per_organ=2, test_per_organ=0, field_um=1200))
        prepare(root / "raw", root / "prep", PrepareConfig(um_per_px=UM_PER_PX, n_folds=2))
        ids = read_index(root / "prep")["id"].tolist()
        recipes = {"flips only": AugmentConfig(), "default recipe": default_recipe()}
        for label, recipe in recipes.items():
            dataset = CropDataset(
                root / "prep", ids, CROP, samples_per_image=64, ftu_prob=0.5, augment=recipe,
                um_per_px=UM_PER_PX,
            )  # fmt: skip
            time_crops(dataset, 10)  # page the maps in, warm the caches
            results[label] = stats(time_crops(dataset, args.crops))
        plain = CropDataset(root / "prep", ids, CROP, ftu_prob=0.5, augment=None)
        item = plain[(0, 0)]
        image = item["image"].numpy()
        mask = item["mask"][0].numpy().astype(bool)
        results["per transform (median ms)"] = {
            k: round(v, 2) for k, v in time_transforms(image, mask).items()
        }
        results["per transform (median ms)"]["no augmentation (crop + tensor)"] = round(
            float(np.median(time_crops(plain, 50))), 2
        )
    if not args.no_model:
        print(f"timing {args.model} (full) forward+backward at {CROP}² ...", flush=True)
        seconds = model_seconds_per_crop(args.model, args.threads)
        results["model"] = {
            "name": args.model,
            "cpu_threads": args.threads,
            "fwd_bwd_s_per_crop": round(seconds, 3),
            "loader_ms_per_crop ÷ model_ms_per_crop": round(
                results["default recipe"]["mean_ms"] / (seconds * 1e3), 4
            ),
        }
    per_crop = results["default recipe"]["mean_ms"]
    results["workers for a GPU at 20 crops/s"] = math.ceil(GPU_CROPS_PER_S * per_crop / 1e3)
    print(json.dumps(results, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
