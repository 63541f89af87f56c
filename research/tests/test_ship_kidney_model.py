"""Shipping the kidney model: the card's second-lab numbers and what the card says of them."""

from __future__ import annotations

import pandas as pd
import pytest
import ship_kidney_model as ship

FACTS = {
    "run_commit": "0123456789abcdef", "fold": 1, "um_per_px": 4.0, "threshold": 0.5,
    "threshold_tuned": False, "trained_on": "somewhere", "wall_minutes": 41.6, "wall_note": "",
    "test_dice": 0.81234, "test_dice_lo95": 0.77, "test_dice_hi95": 0.85, "test_tiles": 20,
    "oof_dice": 0.8, "oof_cross_fitted": 0.79, "oof_cross_fitted_lo95": 0.75,
    "oof_cross_fitted_hi95": 0.83,
}  # fmt: skip
PARAMS = {
    "train": {"epochs": 25, "crop_size": 128, "samples_per_image": 8, "batch_size": 8, "lr": 0.002},
    "models": {"unet": {"encoder": "tu-efficientnet_b0", "decoder_channels": [64, 32]}},
    "augment": {"density": 0.8, "density_range": [0.1, 1.5], "glass": 0.5, "scanner": 0.8},
    "inference": {"tta": [0]},
}


def test_the_hold_pairs_each_second_lab_tile_with_the_same_tile(monkeypatch, tmp_path):
    # Listed out of order: the pairing goes by tile, not by position.
    table = pd.DataFrame({"id": ["labb_t2", "t1", "labb_t1", "t2"], "dice": [0.2, 0.8, 0.6, 0.4]})
    monkeypatch.setattr(ship, "score", lambda bundle, data: table)
    facts = ship.second_lab(tmp_path, tmp_path)
    assert facts["second_lab_tiles"] == 2
    assert facts["second_lab_dice"] == pytest.approx(0.4)
    assert facts["second_lab_same_dice"] == pytest.approx(0.6)
    assert facts["second_lab_hold"][0] == pytest.approx(0.4 / 0.6, abs=1e-4)


def test_a_tile_without_its_second_lab_rendition_is_an_error(monkeypatch, tmp_path):
    table = pd.DataFrame({"id": ["t1", "t2", "labb_t1"], "dice": [0.8, 0.4, 0.6]})
    monkeypatch.setattr(ship, "score", lambda bundle, data: table)
    with pytest.raises(SystemExit, match="labb_"):
        ship.second_lab(tmp_path, tmp_path)


def test_the_card_says_how_the_threshold_was_chosen_and_what_another_lab_keeps():
    card = ship.model_card(FACTS, PARAMS)
    assert "**0.812**" in card and "not tuned" in card and "second lab" not in card
    assert "U_log(0.1, 1.5)" in card
    assert "validated every 1 epoch(s); no test-time augmentation" in card
    tta = ship.model_card(FACTS, {**PARAMS, "train": {**PARAMS["train"], "val_every": 5},
                                  "inference": {"tta": [0, 1, 2, 3]}})  # fmt: skip
    assert "validated every 5 epoch(s); test-time: the mean of 4 flips/rotations" in tta
    tuned = ship.model_card({**FACTS, "threshold_tuned": True}, PARAMS)
    assert "tuned on the run's out-of-fold" in tuned
    lab = {"second_lab_dice": 0.5, "second_lab_dice_lo95": 0.4, "second_lab_dice_hi95": 0.6,
           "second_lab_tiles": 20, "second_lab_same_dice": 0.625,
           "second_lab_hold": [0.8, 0.7, 0.9]}  # fmt: skip
    card = ship.model_card({**FACTS, **lab}, PARAMS)
    assert "a second lab (proxy) | 0.500 [0.400, 0.600]" in card
    assert "keeps 0.80 [0.70, 0.90] of its Dice" in card
