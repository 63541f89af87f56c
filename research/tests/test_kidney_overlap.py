"""The share of a tile a model trained on is the union of what its trained neighbours cover
(the search itself is the product's: tests/test_overlap.py)."""

from __future__ import annotations

import kidney_overlap
import pandas as pd


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
