"""Build ``src/ftuseg/assets/kidney_pas/`` from the real HuBMAP PAS kidney tiles (``../shared/kidney-train``).

The package carries them so that the default run scores real pixels (the sample's kidney test
images) and the ``kidney-real`` profile trains on real pixels, without ``../shared`` at run time.
Sizes are kept small for git: held-out test tiles stay at their own ≈1.0 µm/px, training tiles are
resampled (area interpolation) to the pipeline's training scale; both re-encoded as JPEG.

    python research/kidney_bundle.py [--source ../shared/kidney-train]

Deterministic: the same source gives the same split and bytes (OpenCV's JPEG encoder).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "ftuseg" / "assets" / "kidney_pas"
SOURCE_UM_PER_PX = 1.0  # the source README's estimate from glomerulus diameters
TRAIN_UM_PER_PX = 2.0  # prepare.um_per_px of the kidney-real profile
N_TEST = 20
SPLIT_SEED = 2022
TEST_QUALITY = 75
TRAIN_QUALITY = 75


def tile_ids(source: Path) -> list[str]:
    ids = sorted(p.stem for p in (source / "images").glob("*.jpg"))
    missing = [i for i in ids if not (source / "masks" / f"{i}.png").exists()]
    if missing:
        raise SystemExit(f"{source}/masks: no mask for {', '.join(missing[:5])}")
    return sorted(ids, key=lambda s: int(s.split("_")[-1]))


def split(ids: list[str]) -> dict[str, str]:
    test = set(np.random.default_rng(SPLIT_SEED).choice(ids, N_TEST, replace=False).tolist())
    return {i: "test" if i in test else "train" for i in ids}


def write_tile(src: Path, mask_src: Path, dst: Path, scale: float, quality: int) -> tuple[int, int]:
    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    mask = cv2.imread(str(mask_src), cv2.IMREAD_GRAYSCALE)
    if img is None or mask is None or img.shape[:2] != mask.shape:
        raise SystemExit(f"{src}: unreadable, or its mask has another size")
    if scale != 1.0:
        size = (round(img.shape[1] * scale), round(img.shape[0] * scale))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        # Area-resampled mask, then thresholded at half: the FTU boundary moves < 1 px.
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
    mask = np.where(mask >= 128, 255, 0).astype(np.uint8)
    cv2.imwrite(str(dst / "images" / f"{src.stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    cv2.imwrite(str(dst / "masks" / f"{src.stem}.png"), mask, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return img.shape[0], img.shape[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "kidney-train")
    args = ap.parse_args()
    ids = tile_ids(args.source)
    roles = split(ids)
    if OUT.exists():
        shutil.rmtree(OUT)
    rows = []
    for role in ("train", "test"):
        for sub in ("images", "masks"):
            (OUT / role / sub).mkdir(parents=True)
    for tile in ids:
        role = roles[tile]
        um = SOURCE_UM_PER_PX if role == "test" else TRAIN_UM_PER_PX
        h, w = write_tile(
            args.source / "images" / f"{tile}.jpg",
            args.source / "masks" / f"{tile}.png",
            OUT / role,
            SOURCE_UM_PER_PX / um,
            TEST_QUALITY if role == "test" else TRAIN_QUALITY,
        )
        rows.append((tile, role, um, h, w))
    table = pd.DataFrame(rows, columns=["id", "split", "pixel_size", "img_height", "img_width"])
    table.to_csv(OUT / "tiles.csv", index=False)
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{len(ids)} tiles ({N_TEST} test) -> {OUT}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
