"""The share of a tile a model trained on is the union of what its trained neighbours cover
(the search itself is the product's: tests/test_overlap.py)."""

from __future__ import annotations

import kidney_overlap
import pandas as pd
import pytest


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


def test_each_method_is_split_by_its_own_folds():
    """A 3-fold method puts tiles in other folds than a 2-fold one: each method's seen shares
    come from its own folds, and a tile that moves fold between a method's seeds is an error."""
    h, w = kidney_overlap.SHAPE
    pairs = pd.DataFrame([("a", "b", 0, w // 2)], columns=["a", "b", "dy", "dx"])
    oof = pd.DataFrame({"run": ["m-s0"] * 3, "id": ["a", "b", "c"], "fold": [0, 1, 1]})
    seen = kidney_overlap.fold_seen(pairs, oof, "m")
    assert seen.to_dict() == {"a": 0.5, "b": 0.5, "c": 0.0}  # a and b trained on each other
    same_fold = oof.assign(fold=[0, 0, 1])
    assert kidney_overlap.fold_seen(pairs, same_fold, "m").to_dict() == {"a": 0, "b": 0, "c": 0}
    moved = pd.concat([oof, oof.assign(run="m-s1", fold=[1, 1, 1])])
    with pytest.raises(SystemExit, match="m: a tile in several folds"):
        kidney_overlap.fold_seen(pairs, moved, "m")
