"""`ftuseg predict` on whole slides: the same predictions as on a plain image (border effects
measured), polygons that match the mask, pixel sizes from metadata, tissue detection, and peak
memory that does not grow with the slide."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile

from ftuseg.core import rle
from ftuseg.core.errors import DataError
from ftuseg.core.metrics import dice
from ftuseg.data.annotations import rasterise, read_geojson
from ftuseg.data.contract import read_image
from ftuseg.data.prepare import PrepareConfig, prepare
from ftuseg.data.sample import SampleConfig, generate
from ftuseg.data.synthetic_slide import write_synthetic_slide
from ftuseg.infer.engine import InferenceConfig, Predictor
from ftuseg.infer.maps import postprocess
from ftuseg.infer.members import EnsembleConfig
from ftuseg.infer.slide import predict_slide
from ftuseg.infer.slide_io import open_slide
from ftuseg.train.config import RunDirs, TrainConfig
from ftuseg.train.inputs import TrainData
from ftuseg.train.loop import train_fold

MODEL = {"arch": "smp_unet", "encoder": "resnet18", "decoder_channels": [16, 8, 8, 8, 8]}
UM = 3.0  # the ensemble's training scale
PX = 0.4  # the sample's HPA images
ORGAN = "kidney"


# Every test here predicts with a trained ensemble, and one predicts 20480² slides.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """A U-Net trained for a few epochs on generated sample data (3 µm/px) and, as the "slide",
    a 1200×1500 mosaic of its kidney images at their native 0.4 µm/px."""
    root = tmp_path_factory.mktemp("slide")
    generate(root / "raw", SampleConfig(train_per_organ=2, test_per_organ=0, field_um=120))
    prepare(root / "raw", root / "prep", PrepareConfig(um_per_px=UM, n_folds=2))
    cfg = TrainConfig(epochs=4, batch_size=4, crop_size=64, samples_per_image=4, threads=2, lr=3e-3)
    data = TrainData(root / "prep", root / "raw/train.csv", UM)
    train_fold(data, "unet", MODEL, 0, cfg, RunDirs(root / "ckpt", root / "live"))
    predictor = Predictor.from_checkpoints([(root / "ckpt", 1.0)], InferenceConfig())
    meta = pd.read_csv(root / "raw/train.csv", dtype={"id": str})
    tiles = [read_image(root / f"raw/train_images/{i}.tiff") for i in meta["id"]]
    side = tiles[0].shape[0]  # 300 px
    image = np.concatenate(
        [
            np.concatenate([tiles[(r * 5 + c) % len(tiles)] for c in range(5)], axis=1)
            for r in range(4)
        ]
    )
    assert image.shape == (4 * side, 5 * side, 3)
    config = EnsembleConfig({"m": 1.0}, {ORGAN: 0.5}, UM)
    return root, predictor, config, image, predictor.predict(image, PX, ORGAN)


def test_chunked_slide_prediction_equals_plain_prediction_up_to_chunk_borders(ensemble, tmp_path):
    root, predictor, config, image, prob = ensemble
    cv2.imwrite(str(tmp_path / "plain.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    whole = postprocess(prob, 0.5, PX, 0.0)
    assert 0.05 < whole.mean() < 0.95  # the trained model finds FTUs and background
    result = predict_slide(tmp_path / "plain.png", predictor, config, ORGAN, tmp_path / "out",
                           pixel_size=PX, chunk=512, detect_tissue=False, show_progress=False,
                           want_prob=True)  # fmt: skip
    assert result.chunks == 9 and result.chunks_skipped == 0
    table = pd.read_csv(tmp_path / "out/plain.csv", dtype={"id": str})
    chunked = rle.decode(table.iloc[0]["rle"], image.shape[:2])
    with tifffile.TiffFile(tmp_path / "out/plain.prob.tif") as tif:
        chunked_prob = tif.series[0].levels[0].asarray().astype(np.float32) / 255
    gap = np.abs(chunked_prob - prob)
    differ = float(np.mean(chunked != whole))
    measured = (gap.mean(), np.percentile(gap, 99), dice(chunked, whole), differ)
    # The tile-border effect, measured: with 512 px chunks (9 here; 4096 by default, so 8 times
    # fewer border pixels) a briefly trained model's probability moves by a mean |Δp| of 0.013
    # (99th percentile 0.10), where tiles and resampling start at a chunk's margin instead of the
    # image's corner; the masks agree with Dice 0.98.
    assert measured[0] < 0.02 and measured[1] < 0.15, measured
    assert measured[2] >= 0.97 and differ < 0.03, measured
    # The pyramidal mask TIFF holds the same mask at level 0, 255 = FTU.
    with tifffile.TiffFile(tmp_path / "out/plain.mask.tif") as tif:
        assert len(tif.series[0].levels) >= 2
        assert np.array_equal(tif.series[0].levels[0].asarray() > 0, chunked.astype(bool))
    # GeoJSON polygons rasterise back onto the mask, and an FTU cut by chunk borders comes out
    # as one polygon: one polygon per 8-connected component (of 50 px or more).
    polygons = read_geojson(tmp_path / "out/plain.geojson", "FTU")
    assert dice(rasterise(polygons, image.shape[:2]), chunked) >= 0.98
    n, labels, stats, _ = cv2.connectedComponentsWithStats(chunked, connectivity=8)
    per_component = np.zeros(n, int)
    for poly in polygons:
        covered = labels[rasterise([poly], image.shape[:2]) > 0]
        per_component[np.bincount(covered[covered > 0], minlength=n).argmax()] += 1
    big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= 50)[1:]
    left, top = stats[big, cv2.CC_STAT_LEFT], stats[big, cv2.CC_STAT_TOP]
    right = left + stats[big, cv2.CC_STAT_WIDTH]
    bottom = top + stats[big, cv2.CC_STAT_HEIGHT]
    cut = np.zeros(len(big), bool)
    for b in (512, 1024):
        cut |= ((left < b) & (b < right)) | ((top < b) & (b < bottom))
    assert cut.sum() >= 3  # FTUs do cross chunk borders
    assert np.mean(per_component[big] == 1) >= 0.95, per_component[big]
    summary = json.loads((tmp_path / "out/plain.json").read_text())
    assert (
        summary["ftu_polygons"] == len(polygons) and (tmp_path / "out/plain.overlay.png").is_file()
    )


def test_a_pyramidal_ome_tiff_reads_lazily_and_gives_the_plain_images_result(ensemble, tmp_path):
    root, predictor, config, image, _ = ensemble
    with tifffile.TiffWriter(tmp_path / "s.ome.tif", bigtiff=True, ome=True) as tif:
        meta = {"axes": "YXS", "PhysicalSizeX": 400.0, "PhysicalSizeXUnit": "nm",
                "PhysicalSizeY": 400.0, "PhysicalSizeYUnit": "nm"}  # fmt: skip
        tif.write(image, subifds=1, tile=(256, 256), compression="zlib", metadata=meta)
        tif.write(image[::2, ::2], subfiletype=1, tile=(256, 256), compression="zlib")
    slide = open_slide(tmp_path / "s.ome.tif")
    assert slide.pixel_size == pytest.approx(PX) and len(slide.levels) == 2
    assert np.array_equal(slide.read(-10, 1490, 20, 20)[:10], np.full((10, 20, 3), 255))  # glass
    assert np.array_equal(slide.read(100, 200, 30, 40), image[100:130, 200:240])
    slide.close()
    cv2.imwrite(str(tmp_path / "p.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    kwargs = {"chunk": 512, "detect_tissue": False, "show_progress": False, "want_rle": True}
    predict_slide(tmp_path / "s.ome.tif", predictor, config, ORGAN, tmp_path / "a", **kwargs)
    predict_slide(
        tmp_path / "p.png", predictor, config, ORGAN, tmp_path / "b", pixel_size=PX, **kwargs
    )
    a = pd.read_csv(tmp_path / "a/s.csv")["rle"].iloc[0]
    assert a == pd.read_csv(tmp_path / "b/p.csv")["rle"].iloc[0]
    with pytest.raises(DataError, match="no pixel size"):
        predict_slide(tmp_path / "p.png", predictor, config, ORGAN, tmp_path / "c", **kwargs)


def test_tissue_detection_skips_glass(ensemble, tmp_path):
    _, predictor, config, image, _ = ensemble
    patch = image[:256, :256]
    share = write_synthetic_slide(tmp_path / "t.ome.tif", 4096, PX, patch, 0.4, cell=1024, seed=3)
    result = predict_slide(tmp_path / "t.ome.tif", predictor, config, ORGAN, tmp_path / "o",
                           chunk=1024, show_progress=False)  # fmt: skip
    tissue_cells = round(share * 16)
    assert result.chunks == 16 and result.chunks_skipped == 16 - tissue_cells
    with tifffile.TiffFile(tmp_path / "o/t.mask.tif") as tif:
        mask = tif.series[0].levels[0].asarray()
    cells = mask.reshape(4, 1024, 4, 1024).any(axis=(1, 3))
    assert cells.sum() <= tissue_cells  # nothing predicted on glass


PEAK = textwrap.dedent(
    """
    import json, resource, sys
    from ftuseg.infer.engine import InferenceConfig, Predictor
    from ftuseg.infer.members import EnsembleConfig
    from ftuseg.infer.slide import predict_slide
    ckpt, slide, out = sys.argv[1:]
    predictor = Predictor.from_checkpoints([(ckpt, 1.0)], InferenceConfig())
    config = EnsembleConfig({"m": 1.0}, {"kidney": 0.5}, 3.0)
    r = predict_slide(slide, predictor, config, "kidney", out, chunk=2048, show_progress=False)
    print(json.dumps({**r.summary(), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)


def test_peak_memory_does_not_grow_with_the_slide(ensemble, tmp_path):
    """A 16384² px pyramidal OME-TIFF (805 MB of RGB) against a 10240² one: the same peak
    memory (the larger slide's extra pixels alone would add 163 MB as a mask, 490 MB as RGB).
    Both are whole numbers of 2048 px chunks with tissue in several inner chunks (of 25 and 64),
    so both reach the steady state of one full chunk's work (the first chunks still grow the
    heap)."""
    root, _, _, image, _ = ensemble
    runs = {}
    for side in (10_240, 16_384):
        path = tmp_path / f"s{side}.ome.tif"
        write_synthetic_slide(path, side, 0.5, image[:512, :512], 0.12, cell=2048, seed=3)
        proc = subprocess.run([sys.executable, "-c", PEAK, str(root / "ckpt"), str(path),
                               str(tmp_path / "out")], capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    small, big = runs[10_240], runs[16_384]
    assert big["height"] == big["width"] == 16_384 and big["chunks"] == 64
    assert small["chunks_skipped_no_tissue"] < small["chunks"]
    assert 0 < big["chunks_skipped_no_tissue"] < big["chunks"]
    assert big["peak_mb"] - small["peak_mb"] < 50, runs


def test_cli_predicts_with_a_pipelines_models_and_ensemble(ensemble, tmp_path):
    root, _, config, image, _ = ensemble
    import shutil

    from typer.testing import CliRunner

    from ftuseg.cli import app

    shutil.copytree(root / "ckpt", tmp_path / "models/m/fold0")
    config.save(tmp_path / "ensemble.yaml")
    cv2.imwrite(str(tmp_path / "x.png"), cv2.cvtColor(image[:600, :600], cv2.COLOR_RGB2BGR))
    args = ["predict", str(tmp_path / "x.png"), "--organ", ORGAN, "--out", str(tmp_path / "o"),
            "--models", str(tmp_path / "models"), "--ensemble", str(tmp_path / "ensemble.yaml"),
            "--params", str(tmp_path / "none.yaml")]  # fmt: skip
    missing = CliRunner().invoke(app, args)
    assert missing.exit_code != 0 and "no pixel size" in missing.output
    done = CliRunner().invoke(app, [*args, "--pixel-size", str(PX)])
    assert done.exit_code == 0, done.output
    summary = json.loads((tmp_path / "o/x.json").read_text())
    assert summary["height"] == 600 and (tmp_path / "o/x.csv").is_file()
    bad = CliRunner().invoke(app, [*args, "--pixel-size", "0.4", "--organ", "liver"])
    assert bad.exit_code != 0 and "liver" in bad.output
