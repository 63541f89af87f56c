"""research/glas_gap: the gap ratio's split into the rendition's ceiling and the transfer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from glas_gap import bootstrap, ceiling_by_group, decompose


def _series(values, ids=None) -> pd.Series:
    ids = ids if ids is not None else [f"{k:03d}" for k in range(len(values))]
    return pd.Series(np.asarray(values, dtype=float), index=ids)


def test_gap_ratio_is_ceiling_times_transfer() -> None:
    rng = np.random.default_rng(1)
    cross, test, oof, oof_ref = (_series(rng.uniform(0.3, 0.9, 40)) for _ in range(4))
    parts = decompose(cross, test, oof, oof_ref)
    gap = cross.mean() / test.mean()
    assert parts["ceiling"][0] == pytest.approx(oof.mean() / oof_ref.mean())
    assert parts["ceiling"][0] * parts["transfer"][0] == pytest.approx(gap)
    for lo_point_hi in parts.values():
        lo, hi = lo_point_hi[1], lo_point_hi[2]
        assert lo < lo_point_hi[0] < hi


def test_a_lossless_transfer_is_one_and_the_gap_is_the_ceiling() -> None:
    """The HPA-trained model keeps on the H&E test what the same-stain one keeps (both × 1.1 of
    their own OOF): transfer 1, and the whole gap is the rendition's."""
    oof_ref = _series(np.linspace(0.5, 0.9, 30))
    oof = oof_ref * 0.9
    parts = decompose(oof * 1.1, oof_ref * 1.1, oof, oof_ref)
    assert parts["transfer"] == pytest.approx((1.0, 1.0, 1.0))
    assert parts["ceiling"][0] == pytest.approx(0.9)


def test_series_are_paired_by_image_not_by_position() -> None:
    ids = ["a", "b", "c", "d"]
    cross = _series([0.2, 0.4, 0.6, 0.8], ids)
    shuffled = cross.iloc[::-1]
    parts = decompose(cross, shuffled, shuffled, cross)
    assert parts["ceiling"] == pytest.approx((1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="same-stain OOF holds other images"):
        decompose(cross, cross, cross, _series([0.5] * 4, ["a", "b", "c", "e"]))


def test_ceiling_per_group() -> None:
    ids = [f"{k}" for k in range(6)]
    oof_ref = _series([0.8] * 6, ids)
    oof = _series([0.8, 0.8, 0.8, 0.4, 0.4, 0.4], ids)
    groups = pd.Series(["negative"] * 3 + ["ftu"] * 3, index=ids)
    out = ceiling_by_group(oof, oof_ref, groups)
    assert out["negative"]["images"] == 3 and out["ftu"]["images"] == 3
    assert out["negative"]["ceiling"] == pytest.approx((1.0, 1.0, 1.0))
    assert out["ftu"]["ceiling"] == pytest.approx((0.5, 0.5, 0.5))


def test_bootstrap_mean_and_ratio() -> None:
    values = np.array([0.1, 0.5, 0.9, 0.3])
    mean, lo, hi = bootstrap(values)
    assert mean == pytest.approx(0.45) and lo < mean < hi
    assert bootstrap(values, values * 2)[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one length"):
        bootstrap(values, values[:3])
