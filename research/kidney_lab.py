"""A proxy of a second lab's PAS kidney slides, rendered from the real HuBMAP tiles.

The failure it imitates (#31): a model trained on one lab's PAS tiles (tissue mean RGB ≈
(150, 89, 161)) scored 0.03 Dice on another lab's PAS biopsies (≈ (212, 193, 216): much lighter
staining, 4 µm sections, ≈ 0.5 µm/px, another scanner, biopsy edges with glass). Each held-out
tile is re-rendered, seeded by its id, as that lab would have produced it:

1. **biopsy**: only a band of tissue (a needle core, 45–70 % of the tile's height, tilted,
   ragged edges) stays; the rest is glass, and glomeruli outside the band leave the mask;
2. **lighter, thinner**: the optical density above the glass × U(0.13, 0.24) (every stain
   alike; the 20 renditions' tissue mean is then ≈ the other lab's: `python kidney_lab.py`);
3. **another scanner**: its own colour response (per-channel gamma 0.9–1.1, glass tint),
   scanned at 0.5 µm/px (2× cubic upsampling: no new detail) with its optics' blur
   (Gaussian σ 0.8–1.6 px), sensor noise and JPEG (quality 60–80).

The test csv gives pixel size 0.5 and thickness 4, as the other lab's would.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np

from ftuseg.domain.optics import scale_density

PIXEL_SIZE = 0.5  # µm/px of the rendition (the source tiles: 1.0)
THICKNESS = 4.0
DENSITY = (0.13, 0.24)
GLASS_RGB = np.array([236.0, 234.0, 240.0])


def seed_of(tile_id: str) -> int:
    return zlib.crc32(f"lab-b/{tile_id}".encode())


def biopsy_band(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W) float in [0, 1]: 1 inside a tilted band of tissue with ragged, soft edges, its
    centre line through a random glomerulus pixel (a biopsy taken for its glomeruli)."""
    h, w = mask.shape
    angle = np.deg2rad(rng.uniform(-35.0, 35.0))
    half = rng.uniform(0.45, 0.70) * h / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    along = (xx - w / 2) * np.cos(angle) + (yy - h / 2) * np.sin(angle)
    across = -(xx - w / 2) * np.sin(angle) + (yy - h / 2) * np.cos(angle)
    ys, xs = np.nonzero(mask)
    if len(ys):
        k = int(rng.integers(len(ys)))
        across = across - across[ys[k], xs[k]]
    # Ragged edges: each edge's half-width wobbles along the band (two low frequencies).
    edges = []
    for _ in range(2):
        f1, f2 = rng.uniform(1.0, 3.0, 2) * 2 * np.pi / w
        p1, p2 = rng.uniform(0, 2 * np.pi, 2)
        edges.append(
            half * (1 + 0.12 * np.sin(f1 * along + p1) + 0.06 * np.sin(3.7 * f2 * along + p2))
        )
    inside = np.where(across >= 0, across < edges[0], -across < edges[1]).astype(np.float32)
    return cv2.GaussianBlur(inside, (0, 0), 3.0)


# The rendition's steps; :func:`render_lab_b` can leave any out (``--ablate``), every random
# draw still made in the same order, so the full rendition is the same bytes either way.
STEPS = ("biopsy", "density", "colour", "optics")


def render_lab_b(
    image: np.ndarray, mask: np.ndarray, tile_id: str, steps: tuple[str, ...] = STEPS
) -> tuple[np.ndarray, np.ndarray]:
    """One tile (RGB uint8 at 1.0 µm/px, its bool mask) as the other lab's: RGB uint8 and mask
    at 0.5 µm/px (twice the size). ``steps``: which of STEPS to apply (the 2× resampling always
    happens: it is the presentation)."""
    rng = np.random.default_rng(seed_of(tile_id))
    band = biopsy_band(mask, rng)
    factor = rng.uniform(*DENSITY)
    out = (scale_density(image, factor) if "density" in steps else image).astype(np.float32)
    glass = GLASS_RGB + rng.normal(0.0, 1.5, image.shape)
    if "biopsy" in steps:
        out = out * band[..., None] + glass * (1 - band[..., None])
        mask = mask & (band > 0.5)
    # The scanner: colour response per channel, then its resolution, optics, noise and codec.
    gamma = rng.uniform(0.9, 1.1, 3)
    if "colour" in steps:
        out = 255.0 * (np.clip(out, 0, 255) / 255.0) ** gamma
    h, w = mask.shape
    size = (2 * w, 2 * h)
    out = cv2.resize(out, size, interpolation=cv2.INTER_CUBIC)
    sigma = rng.uniform(0.8, 1.6)
    noise = rng.normal(0.0, 2.0, out.shape)
    quality = int(rng.integers(60, 81))
    if "optics" in steps:
        out = cv2.GaussianBlur(out, (0, 0), sigma) + noise
    big = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    rgb = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if "optics" not in steps:
        return rgb, big
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"{tile_id}: JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy(), big


def ablate(count: int) -> dict:
    """The shipped kidney model on ``count`` held-out tiles rendered with no step, each step
    alone, and all: which step the failure comes from."""
    from ftuseg.core.metrics import dice
    from ftuseg.data.real_tiles import load_real_tiles
    from ftuseg.infer.shipped import shipped_bundle
    from ftuseg.kaggle.runtime import load_bundle

    predictor, ensemble, _ = load_bundle(shipped_bundle("kidney"))
    threshold = ensemble.threshold("kidney")
    tiles = load_real_tiles("test", count)
    variants = {"none": (), **{s: (s,) for s in STEPS}, "all": STEPS}
    result = {}
    for name, steps in variants.items():
        scores = []
        for t in tiles:
            image, mask = render_lab_b(t.image, t.mask, t.id, steps)
            scores.append(dice(predictor.predict(image, PIXEL_SIZE, "kidney") >= threshold, mask))
        result[name] = round(float(np.mean(scores)), 4)
        print(f"{name:18s} {result[name]:.4f}", flush=True)
    return {"model": "shipped kidney model", "tiles": count, "dice": result}


def tissue_mean(image: np.ndarray) -> np.ndarray:
    """Mean RGB of the tissue (optical density above the glass), as the issue measured."""
    from ftuseg.domain.optics import glass_corrected, optical_density, tissue_mask

    return image[tissue_mask(glass_corrected(optical_density(image)))].mean(axis=0)


if __name__ == "__main__":
    import argparse
    import json
    from pathlib import Path

    from ftuseg.data.real_tiles import load_real_tiles

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ablate", type=int, metavar="TILES",
                    help="score the shipped model on TILES tiles per step (results/kidney_lab_ablation.json)")  # fmt: skip
    args = ap.parse_args()
    if args.ablate:
        out = Path(__file__).resolve().parent / "results" / "kidney_lab_ablation.json"
        out.write_text(json.dumps(ablate(args.ablate), indent=2) + "\n")
    else:  # the renditions' tissue colour against the source tiles'
        tiles = load_real_tiles("test")
        src = np.mean([tissue_mean(t.image) for t in tiles], axis=0)
        out = np.mean([tissue_mean(render_lab_b(t.image, t.mask, t.id)[0]) for t in tiles], axis=0)
        print(
            f"tissue mean RGB: source tiles {np.round(src)}, renditions {np.round(out)} "
            "(the other lab's, #31: [212 193 216])"
        )
