"""The label audit: which predicted components it lists, and the Dice it reports with the
reviewed glomeruli ignored."""

from __future__ import annotations

import kidney_labels
import numpy as np
import pandas as pd
import pytest


def disc(shape: tuple[int, int], y: int, x: int, r: int) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= r * r


def test_only_glomerulus_sized_components_off_every_annotation_are_listed():
    shape, px = (300, 400), 2.0  # µm/px: a 30 px radius is ≈ 11 300 µm², a 10 px one ≈ 1 300
    truth = disc(shape, 80, 80, 30)
    touching = disc(shape, 90, 100, 30)  # overlaps the annotation: not listed
    left_out = disc(shape, 200, 300, 30)
    fragment = disc(shape, 250, 80, 10)
    found = kidney_labels.unannotated(touching | left_out | fragment, truth, px)
    assert [(c["y"], c["x"]) for c in found] == [(200, 300)]
    assert found[0]["area_px"] == int(left_out.sum())
    assert found[0]["area_um2"] == round(left_out.sum() * px**2)


@pytest.fixture
def audit(tmp_path, monkeypatch):
    """Two tiles: one with a predicted glomerulus the mask leaves out (reviewed: glomerulus) and
    one with a listed component reviewed as something else."""
    shape = (200, 200)
    truth_a, pred_a = disc(shape, 50, 50, 20), disc(shape, 52, 50, 20) | disc(shape, 150, 150, 30)
    truth_b, pred_b = disc(shape, 50, 50, 20), disc(shape, 50, 50, 20) | disc(shape, 150, 60, 30)
    rows, components = [], []
    for tile, truth, pred in (("a", truth_a, pred_a), ("b", truth_b, pred_b)):
        rows.append({"id": tile, "set": "test", "pixel_size": 2.0, "p": int(pred.sum()),
                     "t": int(truth.sum()), "pt": int((pred & truth).sum())})  # fmt: skip
        components += [{"id": tile, "set": "test", **c}
                       for c in kidney_labels.unannotated(pred, truth, 2.0)]  # fmt: skip
    paths = {"TILES_CSV": "tiles.csv", "COMPONENTS_CSV": "components.csv", "REVIEW": "review.csv",
             "TABLE": "table"}  # fmt: skip
    for name, file in paths.items():
        monkeypatch.setattr(kidney_labels, name, tmp_path / file)
    pd.DataFrame(rows).to_csv(tmp_path / "tiles.csv", index=False)
    pd.DataFrame(components).to_csv(tmp_path / "components.csv", index=False)
    review = pd.DataFrame({"id": ["a", "b"], "component": [1, 1],
                           "verdict": ["glomerulus", "other"]})  # fmt: skip
    review.to_csv(tmp_path / "review.csv", index=False)
    return (truth_a, pred_a), (truth_b, pred_b)


def test_ignoring_a_reviewed_glomerulus_scores_the_tile_without_it(audit):
    (truth_a, pred_a), (truth_b, pred_b) = audit
    row = kidney_labels.report()["rows"][0]
    assert (row["components"], row["glomerulus"], row["other"]) == (2, 1, 1)
    assert row["tiles_with_unannotated"] == 1

    def dice(p, t):
        return 2 * (p & t).sum() / (p.sum() + t.sum())

    shape = truth_a.shape
    kept_a = pred_a & ~disc(shape, 150, 150, 30)  # the glomerulus the mask left out, ignored
    published = (dice(pred_a, truth_a) + dice(pred_b, truth_b)) / 2
    ignored = (dice(kept_a, truth_a) + dice(pred_b, truth_b)) / 2
    assert row["dice"][0] == pytest.approx(published, abs=1e-4)
    assert row["dice_ignore"][0] == pytest.approx(ignored, abs=1e-4)
    assert ignored > published + 0.1


def test_a_listed_component_without_a_verdict_is_an_error(audit):
    pd.DataFrame({"id": ["a"], "component": [1], "verdict": ["glomerulus"]}).to_csv(
        kidney_labels.REVIEW, index=False
    )
    with pytest.raises(SystemExit, match="without a verdict"):
        kidney_labels.report()
