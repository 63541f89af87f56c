"""The overlap search: tiles cut from one slide at known offsets are paired with those offsets,
unrelated tiles are not, and the share of a tile a model trained on is the union of what its
neighbours cover."""

from __future__ import annotations

import cv2
import kidney_overlap
import numpy as np
import pandas as pd


def texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Blurred noise: stationary structure a few pixels wide, as tissue has at 4 µm/px."""
    return cv2.GaussianBlur(rng.normal(size=shape).astype(np.float32), (0, 0), 1.5)


def cut(slide: np.ndarray, y: int, x: int, shape: tuple[int, int]) -> np.ndarray:
    tile = slide[y : y + shape[0], x : x + shape[1]].astype(np.float32)
    return tile - tile.mean()


def test_tiles_of_one_slide_pair_at_their_offsets_and_others_do_not():
    rng = np.random.default_rng(0)
    slide = texture(rng, (120, 160))
    shape = (60, 80)
    grey = {
        "a": cut(slide, 0, 0, shape),
        "b": cut(slide, 30, 40, shape),  # a's lower-right quarter
        "c": cut(slide, 0, 40, shape),  # a's right half
        "other": cut(texture(rng, shape), 0, 0, shape),
    }
    pairs = kidney_overlap.find_pairs(grey).set_index(["a", "b"])
    s = kidney_overlap.SCALE
    assert set(pairs.index) == {("a", "b"), ("a", "c"), ("b", "c")}
    assert tuple(pairs.loc[("a", "b"), ["dy", "dx"]]) == (30 * s, 40 * s)
    assert tuple(pairs.loc[("a", "c"), ["dy", "dx"]]) == (0, 40 * s)
    assert tuple(pairs.loc[("b", "c"), ["dy", "dx"]]) == (-30 * s, 0)
    assert pairs.loc[("a", "b"), "shared"] == 0.25
    assert (pairs["ncc"] > 0.999).all()


def test_the_share_seen_is_the_union_of_the_trained_neighbours():
    h, w = kidney_overlap.SHAPE
    pairs = pd.DataFrame(
        [("t", "right", 0, w // 2), ("t", "below", h // 2, 0), ("above", "t", h // 2, 0)],
        columns=["a", "b", "dy", "dx"],
    )
    share = kidney_overlap.seen_share
    assert share(pairs, "t", set()) == 0.0
    assert share(pairs, "t", {"right"}) == 0.5
    assert share(pairs, "t", {"right", "below"}) == 0.75  # the lower-right quarter counted once
    assert share(pairs, "t", {"above"}) == 0.5  # a neighbour recorded as `a` covers t's top half
    assert share(pairs, "t", {"above", "below"}) == 1.0


def test_groups_are_the_connected_tiles_largest_first():
    pairs = pd.DataFrame([("x", "y"), ("y", "z"), ("p", "q")], columns=["a", "b"])
    group = kidney_overlap.groups(pairs, ["p", "q", "x", "y", "z", "alone"])
    assert group[["x", "y", "z"]].tolist() == [0, 0, 0]
    assert group[["p", "q"]].tolist() == [1, 1]
    assert group["alone"] == 2
