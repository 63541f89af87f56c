"""A picture of the stain stage's `recolour` method: one HPA-like sample image, its H&E and PAS
copies at three concentration draws each, and the two bundled references they aim at.

    python research/recolour_gallery.py [--out research/results/recolour.jpg]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
import tifffile

from ftuseg.data.sample import SampleConfig, generate
from ftuseg.domain.recolour import Recolourer, target_stains
from ftuseg.domain.references import reference_image

SIDE = 320


def hpa_image() -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), SampleConfig(train_per_organ=1, test_per_organ=0, field_um=480))
        first = sorted((Path(tmp) / "train_images").glob("*.tiff"))[0]
        return tifffile.imread(first)


def tile(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("research/results/recolour.jpg"))
    args = parser.parse_args()
    image = hpa_image()
    source = Recolourer(image, dab_share=0.5)
    rows = []
    for target in ("he", "pas"):
        stains = target_stains(target)
        copies = [tile(source.render(stains, np.array([s, s]))) for s in (0.8, 1.0, 1.2)]
        ref = reference_image(target)
        side = min(ref.shape[:2])
        rows.append(np.concatenate([tile(image), *copies, tile(ref[:side, :side])], axis=1))
    grid = np.concatenate(rows, axis=0)
    cv2.imwrite(
        str(args.out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    print(
        f"HPA-like image | copies at 0.8, 1.0, 1.2 x the reference's amounts | reference "
        f"(rows: H&E, PAS) -> {args.out}"
    )


if __name__ == "__main__":
    main()
