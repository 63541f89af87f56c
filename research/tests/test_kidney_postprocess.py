"""Post-processing study: hole filling, the variants' scores and the nested choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
from kidney_postprocess import BASE, fill_holes, nested, scores


def ring(size: int = 40) -> np.ndarray:
    """A square ring (a tuft with a hole) and a bar touching the border (a bay, not a hole)."""
    mask = np.zeros((size, size), np.uint8)
    mask[5:25, 5:25] = 1
    mask[10:20, 10:20] = 0
    mask[30:, 0:3] = 1
    return mask


def test_fill_holes_fills_enclosed_background_only():
    mask = ring()
    filled = fill_holes(mask)
    assert filled[10:20, 10:20].all()  # the hole
    assert filled.sum() == mask.sum() + 100
    bay = np.zeros((20, 20), np.uint8)
    bay[:, 5:15] = 1
    bay[:10, 8:12] = 0  # open to the top border: stays background
    np.testing.assert_array_equal(fill_holes(bay), bay)


def test_scores_remove_small_components_by_physical_area():
    truth = np.zeros((60, 60), bool)
    truth[10:40, 10:40] = True
    prob = truth.astype(np.float32) * 0.9
    prob[50:53, 50:53] = 0.9  # a 9-pixel speckle
    at_1um = scores(prob, truth, 0.5, 1.0)
    assert at_1um[BASE] < 1.0
    assert at_1um["min250"] == 1.0  # 9 µm²
    # At 10 µm/px the speckle is 900 µm²: it survives a 500 µm² minimum, not a 1000 one.
    at_10um = scores(prob, truth, 0.5, 10.0)
    assert at_10um["min500"] == at_10um[BASE] < at_10um["min1000"] == 1.0


def test_nested_choice_is_made_on_the_other_fold():
    # Variant `a` wins on fold 0's tiles, `b` on fold 1's: each fold gets the other's winner.
    rows = [
        ("r", "a", 0, "x", 0.9), ("r", "b", 0, "x", 0.5),
        ("r", "a", 1, "y", 0.4), ("r", "b", 1, "y", 0.8),
    ]  # fmt: skip
    archive = pd.DataFrame(rows, columns=["run", "variant", "fold", "id", "dice"]).assign(
        kind="oof"
    )
    got = nested(archive)
    assert got.to_dict() == {"x": 0.5, "y": 0.4}
