"""RLE in the competition's format: exact on real rows, agrees with the real polygons."""

from __future__ import annotations

import json
from importlib import resources

import cv2
import numpy as np
import pytest

from ftuseg.core import rle
from ftuseg.core.errors import DataError
from ftuseg.core.metrics import dice
from ftuseg.data.sample import rasterise


def classic_encode(img: np.ndarray) -> str:
    """The classic Kaggle implementation, as the reference for the format."""
    pixels = np.concatenate([[0], img.T.flatten(), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


@pytest.mark.slow
def test_decode_encode_round_trip_is_byte_exact_on_real_rows(real_rows):
    assert len(real_rows) >= 10
    for row in real_rows.itertuples():
        mask = rle.decode(row.rle, (row.img_height, row.img_width))
        assert mask.shape == (row.img_height, row.img_width)
        assert mask.any()
        assert rle.encode(mask) == row.rle, f"id {row.id}"
        assert rle.encode(np.ascontiguousarray(mask)) == row.rle


def test_decoded_masks_agree_with_real_polygons(bundled_rows):
    """The bundled polygons and the real RLE describe the same FTUs (column-major, 1-indexed)."""
    assets = resources.files("ftuseg") / "assets" / "annotations"
    wrong_orientation = []
    for row in bundled_rows.itertuples():
        polys = json.loads((assets / f"{row.id}.json").read_text())
        shape = (row.img_height, row.img_width)
        filled = rasterise([np.asarray(p, dtype=float) for p in polys], shape)
        decoded = rle.decode(row.rle, shape)
        assert dice(filled, decoded) >= 0.97, f"id {row.id}"
        # Reading the same runs row-major gives a different mask: the orientation is pinned.
        row_major = rle.decode(row.rle, shape[::-1]).T
        wrong_orientation.append(dice(filled, row_major))
    assert max(wrong_orientation) < 0.9
    assert np.mean(wrong_orientation) < 0.5


@pytest.mark.slow
def test_shared_polygons_agree_with_every_shared_row(real_rows, shared_labels):
    folder = shared_labels / "train_annotations"
    assert len(real_rows) == 141
    scores = []
    for row in real_rows.itertuples():
        polys = json.loads((folder / f"{row.id}.json").read_text())
        shape = (row.img_height, row.img_width)
        filled = rasterise([np.asarray(p, dtype=float) for p in polys if len(p) >= 3], shape)
        scores.append(dice(filled, rle.decode(row.rle, shape)))
    assert min(scores) >= 0.97
    assert np.mean(scores) >= 0.99


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (5, 4), (4, 5), (13, 11)])
def test_encode_matches_classic_on_random_masks(shape):
    rng = np.random.default_rng(sum(shape))
    for density in (0.0, 0.05, 0.5, 0.95, 1.0):
        for _ in range(50):
            mask = (rng.random(shape) < density).astype(np.uint8)
            encoded = rle.encode(mask)
            assert encoded == classic_encode(mask)
            np.testing.assert_array_equal(rle.decode(encoded, shape), mask)


def test_runs_continue_across_column_boundaries():
    mask = np.zeros((3, 3), np.uint8)
    mask[2, 0] = mask[0, 1] = 1  # bottom of column 0 then top of column 1: one run
    assert rle.encode(mask) == "3 2"
    assert rle.encode(np.ones((3, 3), bool)) == "1 9"
    assert rle.encode(np.zeros((3, 3), bool)) == ""


def test_encode_treats_any_nonzero_value_as_foreground():
    mask = np.array([[0, 255], [7, 0]], dtype=np.uint8)
    assert rle.encode(mask) == "2 2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 2 3", "odd number of tokens"),
        ("1 x", "not an integer"),
        ("1.5 2", "not an integer"),
        ("0 3", "start below 1"),
        ("-1 2", "start below 1"),
        ("1 0", "length below 1"),
        ("5 2 1 1", "overlap or are out of order"),
        ("1 3 2 2", "overlap or are out of order"),
        ("3 3", "past the image area"),
    ],
)
def test_bad_rle_is_refused_with_a_reason(text, message):
    with pytest.raises(DataError, match=message):
        rle.decode(text, (2, 2))


def test_empty_rle_decodes_to_an_empty_mask():
    assert not rle.decode("", (4, 3)).any()
    assert rle.decode("  ", (4, 3)).shape == (4, 3)


def test_decoded_mask_is_usable_by_opencv():
    mask = np.ascontiguousarray(rle.decode("2 3 8 1", (3, 3)))
    n, _ = cv2.connectedComponents(mask)
    assert n >= 2
