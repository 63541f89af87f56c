"""Prepare stage: physical scale, stratified folds, clean failures that leave nothing behind."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import run_stage

from ftuseg.errors import DataError
from ftuseg.prepare import PrepareConfig, assign_folds, load_prepared, prepare
from ftuseg.sample import SampleConfig, generate
from ftuseg.scale import resize_mask, scaled_shape


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw") / "sample"
    generate(out, SampleConfig(train_per_organ=2, test_per_organ=1, field_um=80))
    return out


def test_images_are_resampled_to_the_training_scale(raw, tmp_path):
    index = prepare(raw, tmp_path / "prep", PrepareConfig(um_per_px=1.0, n_folds=2))
    train = pd.read_csv(raw / "train.csv", dtype={"id": str}).set_index("id")
    for row in index.itertuples():
        image, mask = load_prepared(tmp_path / "prep", row.id)
        expected = scaled_shape((train.loc[row.id, "img_height"],) * 2, 0.4, 1.0)
        assert image.shape[:2] == mask.shape == expected == (row.height, row.width)
        assert mask.any()


def test_folds_are_stratified_by_organ():
    organs = pd.Series(["kidney"] * 6 + ["lung"] * 3 + ["spleen"] * 3)
    folds = assign_folds(organs, 3, seed=0)
    table = pd.crosstab(organs, folds)
    assert (table.to_numpy() >= 1).all()
    np.testing.assert_array_equal(folds, assign_folds(organs, 3, seed=0))
    with pytest.raises(DataError, match="organ 'lung' has 3 training image"):
        assign_folds(organs, 4, seed=0)


def test_mask_resampling_keeps_coverage():
    mask = np.zeros((300, 300), np.uint8)
    mask[50:200, 100:250] = 1
    small = resize_mask(mask, (60, 60))
    assert abs(small.mean() - mask.mean()) < 0.01


def test_stage_fails_cleanly_on_bad_row_and_keeps_previous_output(raw, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    train = pd.read_csv(raw / "train.csv", dtype={"id": str})
    (bad / "train_images").symlink_to(raw / "train_images")
    victim = train.loc[3, "id"]
    train.loc[3, "rle"] = "1 2 3"
    train.to_csv(bad / "train.csv", index=False)
    params = {
        "data": {"raw_dir": str(bad)},
        "prepare": {"um_per_px": 1.0, "seed": 0},
        "cv": {"folds": [0, 1]},
    }
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    previous = work / "data" / "prepared"
    previous.mkdir(parents=True)
    (previous / "index.csv").write_text("old")

    result = run_stage("prepare.py", "--out", "data/prepared", cwd=work)
    assert result.returncode == 1
    assert f"row id={victim}" in result.stderr and "odd number of tokens" in result.stderr
    assert "Traceback" not in result.stderr
    assert (previous / "index.csv").read_text() == "old"
    assert not [p for p in (work / "data").iterdir() if p.name != "prepared"]


def test_stage_fails_cleanly_on_a_missing_image(raw, tmp_path):
    bad = tmp_path / "bad"
    (bad / "train_images").mkdir(parents=True)
    train = pd.read_csv(raw / "train.csv", dtype={"id": str})
    train.to_csv(bad / "train.csv", index=False)
    for image_id in train["id"][1:]:
        (bad / "train_images" / f"{image_id}.tiff").symlink_to(
            raw / "train_images" / f"{image_id}.tiff"
        )
    params = {
        "data": {"raw_dir": str(bad)},
        "prepare": {"um_per_px": 1.0, "seed": 0},
        "cv": {"folds": [0, 1]},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_stage("prepare.py", "--out", "out", cwd=tmp_path)
    assert result.returncode == 1
    assert f"{train['id'][0]}.tiff: image file not found" in result.stderr
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))
