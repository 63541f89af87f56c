"""Estimates a user can trust: bootstrap intervals, a cross-fitted OOF score that is not tuned
on the images it scores, and the optimism of best-epoch selection."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ftuseg.core.errors import DataError
from ftuseg.core.metrics import bootstrap_interval, summarise
from ftuseg.ensemble.oof import selection_optimism
from ftuseg.ensemble.search import cross_fitted


def test_the_interval_holds_the_mean_is_seeded_and_narrows_with_more_images():
    rng = np.random.default_rng(0)
    few, many = rng.uniform(0, 1, 10), rng.uniform(0, 1, 1000)
    low, high = bootstrap_interval(few)
    assert low < few.mean() < high
    assert (low, high) == bootstrap_interval(few)
    m_low, m_high = bootstrap_interval(many)
    assert m_high - m_low < (high - low) / 5
    assert bootstrap_interval(np.full(7, 0.4)) == pytest.approx((0.4, 0.4))


def test_summaries_carry_intervals_per_organ_only_when_asked():
    table = pd.DataFrame(
        {"organ": ["kidney"] * 4 + ["lung"] * 2, "dice": [1, 0.8, 0.6, 0.9, 0, 0.4]}
    )
    plain = summarise(table)
    assert list(plain) == ["dice", "n_images", "dice_kidney", "dice_lung"]
    ci = summarise(table, intervals=True)
    assert ci["dice_lung_lo95"] == 0.0 and ci["dice_lung_hi95"] == 0.4
    assert ci["dice_kidney_lo95"] <= ci["dice_kidney"] <= ci["dice_kidney_hi95"]
    assert {k: ci[k] for k in plain} == plain


def test_cross_fitting_scores_each_fold_with_thresholds_tuned_on_the_others():
    # Two folds whose best thresholds differ: tuned in-sample each fold gets its own best (1.0),
    # cross-fitted it gets the other fold's choice.
    evaluated = np.array([0.3, 0.5, 0.7])
    index = pd.DataFrame({"id": list("abcd"), "organ": ["kidney"] * 4, "fold": [0, 0, 1, 1]})
    table = np.array([[1.0, 0.5, 0.2], [1.0, 0.5, 0.2], [0.1, 0.6, 1.0], [0.1, 0.6, 1.0]])
    on_grid = np.ones(3, bool)
    scores, per_image = cross_fitted(index, evaluated, on_grid, lambda fold: table)
    np.testing.assert_allclose(per_image, [0.2, 0.2, 0.1, 0.1])
    assert scores["dice"] == pytest.approx(0.15) and "dice_lo95" in scores
    lung_alone = index.assign(organ=["kidney", "kidney", "lung", "kidney"])
    with pytest.raises(DataError, match="fold 1 holds \\['lung'\\]"):
        cross_fitted(lung_alone, evaluated, on_grid, lambda fold: table)


def test_selection_optimism_compares_the_kept_epoch_with_the_last(tmp_path):
    runs = []
    for k, (best, last) in enumerate([(0.8, 0.7), (0.6, 0.6)]):
        path = tmp_path / f"fold{k}.json"
        path.write_text(json.dumps({"best_val_dice": best, "val": {"dice": last}}))
        runs.append(path)
    assert selection_optimism(runs) == {
        "val_dice_best_epoch": 0.7, "val_dice_last_epoch": 0.65, "selection_optimism": 0.05,
    }  # fmt: skip
    with pytest.raises(DataError, match="re-run the train stage"):
        selection_optimism([tmp_path / "absent.json"])
