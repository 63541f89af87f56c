"""Presentations study: each variant averages its own flips and factors, as the engine does."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
from kidney_presentations import BASE, VARIANTS, member_maps, table

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
            bump = name != BASE
            rows += [
                (run, name, "oof", "x", 0, 0.80 + 0.02 * bump),
                (run, name, "oof", "y", 1, 0.60 + gain_y * bump),
                (run, name, "test", "t1", -1, 0.7),
                (run, name, "test", "labb_t1", -1, 0.5),
            ]
    archive = pd.DataFrame(rows, columns=["run", "variant", "kind", "id", "fold", "dice"])
    got = {r["variant"]: r for r in table(archive)["rows"]}
    assert got[BASE]["oof"][0] == 0.7 and "oof_vs_base" not in got[BASE]
    assert got["tta8"]["oof_vs_base"][0] == round((0.02 + 0.02) / 2, 4)
    assert got["tta8"]["oof_per_run"] == [round((0.82 + 0.64) / 2, 4), round((0.82 + 0.60) / 2, 4)]
