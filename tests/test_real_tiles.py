"""The bundled real HuBMAP PAS kidney tiles: in the sample's test split, and as the kidney-real
profile's training data, with their truth intact and no tile on both sides."""

from __future__ import annotations

import hashlib
from importlib import resources

import cv2
import numpy as np
import pandas as pd
import pytest

from ftuseg.core.errors import DataError
from ftuseg.data.contract import image_path, read_image, read_metadata, row_mask
from ftuseg.data.real_tiles import ID_PREFIX, load_real_tiles, tile_table
from ftuseg.data.sample import SampleConfig, generate

SMALL = SampleConfig(train_per_organ=2, test_per_organ=1, field_um=80)
ASSETS = resources.files("ftuseg") / "assets" / "kidney_pas"


def test_the_bundled_split_is_disjoint_and_at_its_pixel_sizes():
    table = tile_table()
    assert table["id"].is_unique and len(table) == 110
    assert (table["split"] == "test").sum() == 20
    sizes = table.groupby("split")["pixel_size"].unique().to_dict()
    assert list(sizes["test"]) == [1.0] and list(sizes["train"]) == [2.0]
    for row in table.itertuples():  # every file is there, at the size the table says
        mask = cv2.imread(str(ASSETS / row.split / "masks" / f"{row.id}.png"), cv2.IMREAD_GRAYSCALE)
        assert mask.shape == (row.img_height, row.img_width), row.id
        assert set(np.unique(mask)) == {0, 255}, row.id  # every tile holds a glomerulus


def test_real_kidney_tiles_stand_in_for_the_synthetic_kidney_test_images(tmp_path):
    synthetic, real = tmp_path / "synthetic", tmp_path / "real"
    generate(synthetic, SMALL)
    generate(real, SampleConfig(**{**SMALL.__dict__, "real_kidney_test": 3}))
    test = read_metadata(real / "test.csv", "test")
    kidney = test[test["organ"] == "kidney"]
    assert list(kidney["id"]) == [t.id for t in load_real_tiles("test", 3)]
    assert kidney["id"].str.startswith(ID_PREFIX).all() and (kidney["pixel_size"] == 1.0).all()
    labels = pd.read_csv(real / "test_labels.csv", dtype={"id": str}).set_index("id")["rle"]
    for row, tile in zip(kidney.itertuples(), load_real_tiles("test", 3), strict=True):
        assert np.array_equal(read_image(image_path(real, "test", row.id)), tile.image)
        assert np.array_equal(row_mask(row, "labels", labels[row.id]), tile.mask)
    # everything else is the synthetic sample, byte for byte
    before = read_metadata(synthetic / "test.csv", "test")
    others = before[before["organ"] != "kidney"]
    assert list(test[test["organ"] != "kidney"]["id"]) == list(others["id"])
    for image_id in [*others["id"], *read_metadata(real / "train.csv", "train")["id"]]:
        split = "test" if image_id in set(others["id"]) else "train"
        a, b = image_path(synthetic, split, image_id), image_path(real, split, image_id)
        assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def test_the_kidney_real_source_is_the_real_tiles_alone(tmp_path):
    generate(tmp_path / "s", SampleConfig(train_source="kidney_pas", real_kidney_test=2))
    train = read_metadata(tmp_path / "s/train.csv", "train")
    test = read_metadata(tmp_path / "s/test.csv", "test")
    assert len(train) == 90 and set(train["organ"]) == {"kidney"} == set(test["organ"])
    assert (train["pixel_size"] == 2.0).all() and len(test) == 2
    assert not set(train["id"]) & set(test["id"])
    row = next(train.itertuples())
    truth = row_mask(row, "train.csv")
    assert np.array_equal(truth, load_real_tiles("train", 1)[0].mask)


def test_impossible_real_tile_requests_are_refused(tmp_path):
    with pytest.raises(DataError, match="21 real kidney test tiles asked, 20 bundled"):
        generate(tmp_path / "a", SampleConfig(**{**SMALL.__dict__, "real_kidney_test": 21}))
    with pytest.raises(DataError, match="needs sample.real_kidney_test >= 1"):
        generate(tmp_path / "b", SampleConfig(train_source="kidney_pas"))
    with pytest.raises(DataError, match="train_source must be one of"):
        generate(tmp_path / "c", SampleConfig(train_source="hpa"))
    assert not any(tmp_path.iterdir())  # nothing written
