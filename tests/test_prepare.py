"""Prepare stage: physical scale, stratified folds, clean failures that leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ftuseg.core.errors import DataError
from ftuseg.core.layout import prepared_path
from ftuseg.core.scale import resize_mask, scaled_shape
from ftuseg.data.prepare import PrepareConfig, assign_folds, load_array, load_prepared, prepare
from ftuseg.data.sample import SampleConfig, generate
from ftuseg.train.datasets import CropDataset, random_crop


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


def test_the_ftu_index_lists_the_mask_pixels(raw, tmp_path):
    index = prepare(raw, tmp_path / "prep", PrepareConfig(um_per_px=1.0, n_folds=2))
    for row in index.itertuples():
        mask = load_array(tmp_path / "prep", row.id, "mask")
        np.testing.assert_array_equal(
            load_array(tmp_path / "prep", row.id, "ftu"), np.flatnonzero(mask)
        )


def test_ftu_centred_crops_are_the_same_with_the_stored_index_and_after_padding():
    rng_mask = np.random.default_rng(3)
    mask = (rng_mask.random((50, 70)) > 0.97).astype(np.uint8)
    image = rng_mask.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    for size in (32, 96):  # 96: padded first, the index is remapped to the padded width
        for seed in range(20):
            a = random_crop(image, mask, size, np.random.default_rng(seed), 1.0)
            b = random_crop(
                image, mask, size, np.random.default_rng(seed), 1.0, np.flatnonzero(mask)
            )
            np.testing.assert_array_equal(a[0], b[0])
            assert a[1].any()  # centred on an FTU pixel (±size/4): it is inside the crop


def _mapped_rss_kib(path) -> int:
    """Resident KiB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isalnum() and "-" in line.split()[0]:  # a mapping's header line
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_a_training_crop_reads_only_its_own_rows(tmp_path):
    """A 4096² prepared image (48 MiB) is memory-mapped: one 64² FTU-centred crop pages in
    about its 64 rows, not the whole image (so memory does not grow with the dataset)."""
    prepared, side = tmp_path / "prep", 4096
    (prepared / "images").mkdir(parents=True)
    mask = np.zeros((side, side), np.uint8)
    mask[3000:3040, 1000:1040] = 1
    np.save(prepared_path(prepared, "big", "image"), np.full((side, side, 3), 200, np.uint8))
    np.save(prepared_path(prepared, "big", "mask"), mask)
    np.save(prepared_path(prepared, "big", "ftu"), np.flatnonzero(mask).astype(np.int64))
    pd.DataFrame({"id": ["big"], "organ": ["kidney"], "fold": [0]}).to_csv(
        prepared / "index.csv", index=False
    )
    del mask
    dataset = CropDataset(prepared, ["big"], crop_size=64, ftu_prob=1.0, augment=None)
    image_file = prepared_path(prepared, "big", "image").resolve()
    assert _mapped_rss_kib(image_file) == 0  # opened, nothing read yet
    item = dataset[0]
    assert item["mask"].sum() > 0  # the crop is centred on the FTU
    resident = _mapped_rss_kib(image_file)
    # The crop's rows are 768 KiB; the kernel maps whole readahead/fault-around windows around
    # them (2 MiB measured here), still a small fraction of the 48 MiB image.
    image_kib = side * side * 3 // 1024
    assert 0 < resident <= image_kib // 8, f"{resident} KiB of a {image_kib} KiB image"


def test_folds_are_stratified_by_organ():
    organs = pd.Series(["kidney"] * 6 + ["lung"] * 3 + ["spleen"] * 3)
    folds = assign_folds(organs, 3, seed=0)
    table = pd.crosstab(organs, folds)
    assert (table.to_numpy() >= 1).all()
    np.testing.assert_array_equal(folds, assign_folds(organs, 3, seed=0))
    with pytest.raises(DataError, match="organ 'lung' has 3 training image"):
        assign_folds(organs, 4, seed=0)


def test_folds_keep_each_group_whole():
    # Tiles of four slides, cut with overlap: a slide's tiles must share a fold, or a model is
    # scored on pixels it trained on (research/results/kidney_overlap.md).
    organs = pd.Series(["kidney"] * 12 + ["lung"] * 6)
    groups = pd.Series(["k1"] * 5 + ["k2"] * 4 + ["k3"] * 3 + ["l1"] * 3 + ["l2"] * 3)
    folds = assign_folds(organs, 2, seed=0, groups=groups)
    assert (pd.Series(folds).groupby(groups).nunique() == 1).all()
    assert (pd.crosstab(organs, folds).to_numpy() >= 1).all()
    ungrouped = assign_folds(organs, 2, seed=0)
    assert (pd.Series(ungrouped).groupby(groups).nunique() > 1).any()  # what groups prevent
    with pytest.raises(DataError, match="organ 'lung' has 2 group"):
        assign_folds(organs, 3, seed=0, groups=groups)
    # Enough groups per organ, but the splitter leaves fold 0 without lung: an error, not a fold
    # that cannot score an organ.
    organs = pd.Series(["kidney"] * 4 + ["lung"] * 2)
    with pytest.raises(DataError, match="fold 0 has no lung image once groups are kept whole"):
        assign_folds(organs, 2, seed=0, groups=pd.Series(list("daadba")))


def test_a_group_column_reaches_the_folds_and_the_index(raw, tmp_path):
    grouped = tmp_path / "grouped"
    grouped.mkdir()
    (grouped / "train_images").symlink_to(raw / "train_images")
    train = pd.read_csv(raw / "train.csv", dtype={"id": str})
    # Every organ's two images in one group, but one row left blank (its own group).
    train["group"] = train["organ"]
    train.loc[0, "group"] = ""
    train.to_csv(grouped / "train.csv", index=False)
    with pytest.raises(DataError, match="organ '[a-z]+' has 1 group"):
        prepare(grouped, tmp_path / "bad", PrepareConfig(um_per_px=1.0, n_folds=2))
    assert not (tmp_path / "bad").exists()
    train["group"] = train["organ"] + "-" + (train.groupby("organ").cumcount() % 2).astype(str)
    train.loc[0, "group"] = ""
    train.to_csv(grouped / "train.csv", index=False)
    index = prepare(grouped, tmp_path / "prep", PrepareConfig(um_per_px=1.0, n_folds=2))
    assert index.loc[0, "group"] == f"id:{train.loc[0, 'id']}"
    assert (index.groupby("group")["fold"].nunique() == 1).all()
    assert (pd.crosstab(index["organ"], index["fold"]).to_numpy() == 1).all()


def test_mask_resampling_keeps_coverage():
    mask = np.zeros((300, 300), np.uint8)
    mask[50:200, 100:250] = 1
    small = resize_mask(mask, (60, 60))
    assert abs(small.mean() - mask.mean()) < 0.01


def test_stage_fails_cleanly_on_bad_row_and_keeps_previous_output(raw, tmp_path, run_stage):
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
        "cpu": {"isa": "avx2", "threads": 2},
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


def test_stage_fails_cleanly_on_a_missing_image(raw, tmp_path, run_stage):
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
        "cpu": {"isa": "avx2", "threads": 2},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_stage("prepare.py", "--out", "out", cwd=tmp_path)
    assert result.returncode == 1
    assert f"{train['id'][0]}.tiff: image file not found" in result.stderr
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))
