"""The README's slide picture: the shipped kidney model on real tissue, through `ftuseg predict`.

Six held-out real PAS kidney tiles (never trained on) are tiled into one 4800×2400 px pyramidal
OME-TIFF at 1.0 µm/px, predicted by ``ftuseg predict mosaic.ome.tif --organ kidney`` exactly as a
user would (the pixel size from the OME metadata, the shipped model), and drawn at a quarter of
the resolution: the truth outlined in blue, the prediction in yellow.

    python docs/slide_picture.py      # writes docs/img/kidney_slide.jpg and prints the Dice
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import tifffile

from ftuseg.core.metrics import dice
from ftuseg.data.real_tiles import load_real_tiles

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img" / "kidney_slide.jpg"
GRID = (2, 3)  # rows, columns of tiles
SHRINK = 4
TRUTH, PREDICTED = (255, 120, 0), (0, 230, 255)  # BGR: blue, yellow


def mosaic() -> tuple[np.ndarray, np.ndarray]:
    tiles = load_real_tiles("test", GRID[0] * GRID[1])
    rows = [
        np.hstack([t.image for t in tiles[r * GRID[1] : (r + 1) * GRID[1]]]) for r in range(GRID[0])
    ]
    masks = [
        np.hstack([t.mask for t in tiles[r * GRID[1] : (r + 1) * GRID[1]]]) for r in range(GRID[0])
    ]
    return np.vstack(rows), np.vstack(masks)


def write_pyramid(path: Path, image: np.ndarray, pixel_size: float) -> None:
    levels = [image]
    while max(levels[-1].shape[:2]) > 1024:
        levels.append(cv2.resize(levels[-1], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        for k, level in enumerate(levels):
            extra = (
                {"subifds": len(levels) - 1, "metadata": {"axes": "YXS", "PhysicalSizeX": pixel_size,
                 "PhysicalSizeY": pixel_size}} if k == 0 else {"subfiletype": 1, "metadata": None}
            )  # fmt: skip
            tif.write(level, tile=(256, 256), compression="zlib", photometric="rgb", **extra)


def outline(canvas: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    small = cv2.resize(mask, canvas.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, colour, 2, lineType=cv2.LINE_AA)


def main() -> None:
    image, truth = mosaic()
    with tempfile.TemporaryDirectory() as tmp:
        slide = Path(tmp) / "mosaic.ome.tif"
        write_pyramid(slide, image, 1.0)
        subprocess.run(
            [sys.executable, "-m", "ftuseg.cli", "predict", str(slide), "--organ", "kidney",
             "--out", str(Path(tmp) / "out"), "--params", str(Path(tmp) / "none.yaml")],
            check=True,
        )  # fmt: skip
        with tifffile.TiffFile(Path(tmp) / "out/mosaic.mask.tif") as tif:
            predicted = (tif.series[0].levels[0].asarray() > 0).astype(np.uint8)
    canvas = cv2.resize(
        cv2.cvtColor(image, cv2.COLOR_RGB2BGR), None, fx=1 / SHRINK, fy=1 / SHRINK,
        interpolation=cv2.INTER_AREA,
    )  # fmt: skip
    outline(canvas, truth, TRUTH)
    outline(canvas, predicted, PREDICTED)
    OUT.parent.mkdir(exist_ok=True)
    cv2.imwrite(str(OUT), canvas, [cv2.IMWRITE_JPEG_QUALITY, 80])
    print(f"{OUT.relative_to(ROOT)}: mosaic Dice {dice(predicted, truth):.3f}, "
          f"{OUT.stat().st_size / 1024:.0f} KiB")  # fmt: skip


if __name__ == "__main__":
    main()
