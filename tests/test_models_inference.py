"""Models take any input size; the engine is consistent across OOF and submission paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ftuseg.core.metrics import dice, dice_from_counts
from ftuseg.ensemble.level_table import threshold_counts
from ftuseg.infer.engine import InferenceConfig, Member, Predictor
from ftuseg.infer.maps import binarize, combine, to_original
from ftuseg.models import build_model, list_models
from ftuseg.models.checkpoint import load_checkpoint, save_checkpoint

TINY = {"arch": "smp_unet", "encoder": "resnet18", "decoder_channels": [16, 8, 8, 8, 8]}
TILES = InferenceConfig(tile_size=256)  # the models here record no training crop


@pytest.mark.parametrize("size", [(64, 64), (77, 77), (50, 131), (3, 5)])
def test_segmenter_returns_logits_of_the_input_size(size):
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 1, *size)
    assert torch.isfinite(out).all()


def test_unknown_architecture_is_named_in_the_error():
    with pytest.raises(ValueError, match="unknown model architecture 'nope'.*smp_unet"):
        build_model({"arch": "nope"})
    assert "smp_unet" in list_models()


def test_checkpoint_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    save_checkpoint(tmp_path, model, {"model_cfg": TINY, "um_per_px": 2.0})
    loaded, meta = load_checkpoint(tmp_path)
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x), loaded(x), rtol=0, atol=0)
    assert meta["um_per_px"] == 2.0
    assert not list(tmp_path.glob(".*tmp*"))


def test_predictor_resamples_to_training_scale_and_back():
    torch.manual_seed(0)
    predictor = Predictor([Member(build_model(TINY), 1.0)], um_per_px=2.0, config=TILES)
    image = np.random.default_rng(0).integers(0, 255, (90, 70, 3), dtype=np.uint8)
    q = predictor.predict_scaled(image, pixel_size=0.5)
    assert q.dtype == np.uint8 and q.shape == (22, 18)  # 0.5 µm/px -> 2 µm/px is a 4x reduction
    prob = predictor.predict(image, pixel_size=0.5)
    assert prob.shape == (90, 70) and prob.dtype == np.float32
    np.testing.assert_array_equal(prob, to_original(q, (90, 70)))


def test_ensemble_of_members_equals_combining_their_stored_maps():
    """What the ensemble search computes from OOF maps is what the predictor outputs."""
    torch.manual_seed(0)
    a, b = build_model(TINY), build_model(TINY)
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    qa = Predictor([Member(a, 1.0)], 1.0, TILES).predict_scaled(image, 1.0)
    qb = Predictor([Member(b, 1.0)], 1.0, TILES).predict_scaled(image, 1.0)
    both = Predictor([Member(a, 3.0), Member(b, 1.0)], 1.0, TILES).predict_scaled(image, 1.0)
    np.testing.assert_array_equal(both, combine([qa, qb], [0.75, 0.25]))


def test_threshold_counts_equal_direct_dice_at_every_threshold():
    rng = np.random.default_rng(0)
    prob = rng.random((60, 50)).astype(np.float32)
    truth = (rng.random((60, 50)) < 0.3).astype(np.uint8)
    prob[truth == 1] += 0.2
    grid = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    prob[0, 0] = 0.5  # a pixel exactly on a threshold is not foreground (strict >)
    scores = dice_from_counts(*threshold_counts(prob, truth, grid))
    expected = [dice(binarize(prob, t), truth) for t in grid]
    np.testing.assert_allclose(scores, expected)


def test_dice_matches_the_competition_definition():
    p = np.array([[1, 1, 0, 0]])
    t = np.array([[0, 1, 1, 0]])
    assert dice(p, t) == pytest.approx(2 * 1 / (2 + 2))
    assert dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    assert dice(np.ones((2, 2)), np.zeros((2, 2))) == 0.0


# ---------------------------------------------------------------------------- specialists


def test_a_specialist_counts_only_on_its_organs():
    """The lung specialist: in the ensemble for lung images, absent for every other organ."""
    from ftuseg.infer.maps import member_weights

    assert member_weights([0.6, 0.4], [None, ["lung"]], "lung") == [0.6, 0.4]
    assert member_weights([0.6, 0.4], [None, ["lung"]], "kidney") == [0.6, 0.0]
    with pytest.raises(ValueError, match="covers organ 'kidney'"):
        member_weights([0.0, 1.0], [None, ["lung"]], "kidney")

    torch.manual_seed(0)
    general, lung = build_model(TINY), build_model(TINY)
    image = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    alone = Predictor([Member(general, 1.0)], 1.0, TILES).predict_scaled(image, 1.0)
    only_lung = Predictor([Member(lung, 1.0)], 1.0, TILES).predict_scaled(image, 1.0)
    ensemble = Predictor([Member(general, 1.0), Member(lung, 1.0, organs=("lung",))], 1.0, TILES)
    np.testing.assert_array_equal(ensemble.predict_scaled(image, 1.0, "kidney"), alone)
    np.testing.assert_array_equal(
        ensemble.predict_scaled(image, 1.0, "lung"), combine([alone, only_lung], [0.5, 0.5])
    )


def test_weight_search_uses_a_specialist_where_it_helps():
    """Planted: the generalist is perfect except on lung, the specialist perfect on lung only."""
    from ftuseg.ensemble.search import search_weights

    rng = np.random.default_rng(0)
    organs = ["kidney", "kidney", "lung", "lung"]
    truths = [rng.random((24, 24)) > 0.6 for _ in organs]
    noise = [rng.random((24, 24)) > 0.5 for _ in organs]
    general = [
        (t if o != "lung" else n) * 255 for t, n, o in zip(truths, noise, organs, strict=True)
    ]
    lung = [(t if o == "lung" else n) * 255 for t, n, o in zip(truths, noise, organs, strict=True)]
    maps = [[g.astype(np.uint8), s.astype(np.uint8)] for g, s in zip(general, lung, strict=True)]
    grid = [0.25, 0.5, 0.75]
    weights, best = search_weights(maps, truths, organs, grid, coverage=[None, ["lung"]])
    assert weights[1] > weights[0] and best > 0.99
    no_specialist = search_weights([[m[0]] for m in maps], truths, organs, grid)[1]
    assert best > no_specialist + 0.2


def test_level_table_objective_equals_scoring_every_pixel():
    """The compressed weight-search objective gives exactly the mean per-image Dice (best
    threshold per organ) of combining the maps pixel by pixel, specialists included."""
    from ftuseg.ensemble.level_table import best_thresholds, level_table
    from ftuseg.infer.maps import combine, member_weights

    rng = np.random.default_rng(5)
    organs = ["kidney", "lung", "lung", "spleen"]
    shapes = [(40, 30), (25, 25), (33, 17), (20, 44)]
    truths = [rng.random(s) < 0.3 for s in shapes]
    maps = [
        [np.clip(t * 150 + rng.normal(60, 50, t.shape), 0, 255).astype(np.uint8) for _ in range(3)]
        for t in truths
    ]
    grid = np.arange(0.1, 0.91, 0.05)
    coverage = [None, None, ["lung"]]
    table = level_table(maps, truths)
    assert table.tuples < table.pixels  # some pixels share a tuple
    for weights in ([1.0, 1.0, 1.0], [0.3, 2.0, 0.7], [0.0, 1.0, 5.0]):
        scores = np.array(
            [
                [
                    dice(combine(m, member_weights(weights, coverage, o)) / np.float32(255) > t, tr)
                    for t in grid
                ]
                for m, tr, o in zip(maps, truths, organs, strict=True)
            ]
        )
        expected = best_thresholds(scores, np.array(organs), grid)[1]
        assert table.objective(weights, organs, grid, coverage) == pytest.approx(
            expected, abs=1e-12
        )
    assert table.objective([0.0, 0.0, 1.0], organs, grid, coverage) == -np.inf  # kidney uncovered
