"""Presentations study: each variant averages its own flips and factors, as the engine does."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
from kidney_presentations import (
    BASE,
    RUN_THRESHOLD,
    THRESHOLDS,
    VARIANTS,
    member_maps,
    nested,
    table,
)

from ftuseg.infer.engine import InferenceConfig


class Atoms:
    """A stand-in predictor whose map under flip k at factor f is the constant k + 10 f."""

    def __init__(self) -> None:
        self.members = [SimpleNamespace(name="m")]
        self.config = InferenceConfig()

    def predict_presentations(self, member, scaled):
        (k,), (f,) = self.config.tta, self.config.scales
        return np.full(scaled.shape[:2], k + 10 * f, np.float32)


def test_each_variant_averages_its_flips_then_its_factors():
    (maps,) = member_maps(Atoms(), np.zeros((3, 4, 3), np.uint8))
    for name, (flips, factors) in VARIANTS.items():
        expected = np.mean(flips) + 10 * np.mean(factors)
        np.testing.assert_allclose(maps[name], expected, rtol=1e-6)
    assert maps["tta4"][0, 0] == 1.5 + 10  # flips 0..3 at the csv pixel size
    assert maps["tta8-s3"][0, 0] != maps["tta8"][0, 0]


def test_the_table_pairs_each_image_over_the_runs_means():
    # Two runs; variant tta8 beats tta4 by 0.02 on x in both, by 0.04 on y in one run only.
    rows = []
    for run, gain_y in (("r0", 0.04), ("r1", 0.0)):
        for name in VARIANTS:
            for t in THRESHOLDS:
                bump = name != BASE
                rows += [
                    (run, name, t, "oof", "x", 0, 0.80 + 0.02 * bump),
                    (run, name, t, "oof", "y", 1, 0.60 + gain_y * bump),
                    (run, name, t, "test", "t1", -1, 0.7),
                    (run, name, t, "test", "labb_t1", -1, 0.5),
                ]
    cols = ["run", "variant", "threshold", "kind", "id", "fold", "dice"]
    got = {
        (r["variant"], r["threshold"]): r for r in table(pd.DataFrame(rows, columns=cols))["rows"]
    }
    assert got[BASE, RUN_THRESHOLD]["oof"][0] == 0.7
    assert "oof_vs_base" not in got[BASE, RUN_THRESHOLD]
    assert got[BASE, 0.4]["oof_vs_base"][0] == 0.0
    assert got["tta8", 0.5]["oof_vs_base"][0] == round((0.02 + 0.02) / 2, 4)
    assert got["tta8", 0.5]["oof_per_run"] == [
        round((0.82 + 0.64) / 2, 4),
        round((0.82 + 0.60) / 2, 4),
    ]


def test_the_nested_threshold_is_chosen_on_the_other_fold():
    # One run: 0.4 wins on fold 0's tile, 0.6 on fold 1's; each fold gets the other's winner.
    rows = [
        ("r", BASE, 0.4, "oof", "x", 0, 0.9), ("r", BASE, 0.6, "oof", "x", 0, 0.5),
        ("r", BASE, 0.4, "oof", "y", 1, 0.3), ("r", BASE, 0.6, "oof", "y", 1, 0.8),
    ]  # fmt: skip
    cols = ["run", "variant", "threshold", "kind", "id", "fold", "dice"]
    assert nested(pd.DataFrame(rows, columns=cols), BASE).to_dict() == {"x": 0.5, "y": 0.3}
