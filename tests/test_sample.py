"""The embedded sample dataset: competition layout, real HuBMAP pixel sizes, seeded."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from ftuseg.core import rle
from ftuseg.core.errors import DataError
from ftuseg.core.organs import HUBMAP, ORGANS
from ftuseg.data.contract import image_path, read_image, read_metadata
from ftuseg.data.sample import SampleConfig, generate, load_sources, split_sources

SMALL = SampleConfig(train_per_organ=2, test_per_organ=1, field_um=80)


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "data"
    generate(out, SMALL)
    return out


def digest(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_tables_follow_the_competition_format(sample_dir):
    train = read_metadata(sample_dir / "train.csv", "train")
    test = read_metadata(sample_dir / "test.csv", "test")
    assert list(pd.read_csv(sample_dir / "sample_submission.csv").columns) == ["id", "rle"]
    assert sorted(train["organ"].unique()) == sorted(ORGANS)
    assert (train.groupby("organ").size() == 2).all()
    assert (test.groupby("organ").size() == 1).all()
    assert not set(train["id"]) & set(test["id"])
    assert "rle" not in pd.read_csv(sample_dir / "test.csv").columns
    assert (train["data_source"] == "HPA").all() and (train["pixel_size"] == 0.4).all()
    assert (test["data_source"] == "Hubmap").all()
    for row in test.itertuples():
        assert row.pixel_size == HUBMAP[row.organ].pixel_size
        assert row.tissue_thickness == HUBMAP[row.organ].thickness
        assert row.img_height == round(SMALL.field_um / row.pixel_size)


def test_every_image_matches_its_row_and_holds_an_ftu(sample_dir):
    train = read_metadata(sample_dir / "train.csv", "train")
    labels = pd.read_csv(sample_dir / "test_labels.csv", dtype={"id": str}).set_index("id")
    for split, df in (("train", train), ("test", read_metadata(sample_dir / "test.csv", "test"))):
        for row in df.itertuples():
            img = read_image(image_path(sample_dir, split, row.id), (row.img_height, row.img_width))
            assert img.dtype == np.uint8 and img.shape[2] == 3
            text = row.rle if split == "train" else labels.loc[row.id, "rle"]
            assert rle.decode(text, (row.img_height, row.img_width)).any()


def test_ftus_look_different_from_their_surroundings(sample_dir):
    """The point of the texture model: FTU pixels are separable from the rest by colour stats."""
    train = read_metadata(sample_dir / "train.csv", "train")
    for row in train.itertuples():
        img = read_image(image_path(sample_dir, "train", row.id)).astype(float)
        mask = rle.decode(row.rle, (row.img_height, row.img_width)).astype(bool)
        inside, outside = img[mask].mean(axis=0), img[~mask].mean(axis=0)
        assert np.abs(inside - outside).max() > 5, f"{row.organ} {row.id}"


def test_same_seed_same_bytes_other_seed_other_pixels(tmp_path, sample_dir):
    generate(tmp_path / "again", SMALL)
    assert digest(tmp_path / "again") == digest(sample_dir)
    generate(tmp_path / "other", SampleConfig(**{**SMALL.__dict__, "seed": 7}))
    assert digest(tmp_path / "other") != digest(sample_dir)


def test_impossible_requests_are_refused(tmp_path):
    with pytest.raises(DataError, match="field_um"):
        generate(tmp_path / "x", SampleConfig(field_um=2000))
    with pytest.raises(DataError, match="bundled annotations"):
        generate(tmp_path / "y", SampleConfig(train_per_organ=9, test_per_organ=3))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_repeat_gives_more_images_than_annotations(tmp_path):
    """`sample.repeat` uses each annotation several times (turned, with its own pixels): 12
    training images per organ from 10 annotations; the test field is set on its own."""
    cfg = SampleConfig(train_per_organ=12, test_per_organ=1, field_um=80, repeat=2,
                       test_field_um=120)  # fmt: skip
    generate(tmp_path / "data", cfg)
    train = read_metadata(tmp_path / "data/train.csv", "train")
    test = read_metadata(tmp_path / "data/test.csv", "test")
    assert len(train) == 60 and train["id"].is_unique
    assert (train["organ"].value_counts() == 12).all()
    assert any(len(i) > 5 for i in train["id"])  # some are second uses ("<id>01")
    for row in test.itertuples():  # 120 µm at each organ's HuBMAP pixel size
        assert row.img_height == round(120 / row.pixel_size)
    with pytest.raises(DataError, match="repeat"):
        generate(tmp_path / "x", SampleConfig(repeat=0))


def test_the_split_keeps_every_annotation_on_one_side():
    """With repeats, a test image never shares its FTU geometry (its annotation) with a training
    image; without them the split is what it always was (the committed sample is unchanged)."""
    sources = load_sources()
    base = {s.id for s in sources}

    def annotation(image_id: str) -> str:
        return image_id if image_id in base else image_id[:-2]

    train, test = split_sources(
        sources, SampleConfig(train_per_organ=4, test_per_organ=10, repeat=2)
    )
    assert len(test) == 50 and len({s.id for s in test}) == 50
    assert not {annotation(s.id) for s in train} & {annotation(s.id) for s in test}
    assert all(s.id in base for s in train)  # four annotations per organ suffice: no repeats
    plain_train, plain_test = split_sources(sources, SampleConfig())
    assert [s.id for s in plain_train] == [s.id for s in train]
    assert {s.id for s in plain_test} <= {s.id for s in test}  # the old test images stay
    with pytest.raises(DataError, match="separate annotations"):
        split_sources(sources, SampleConfig(train_per_organ=9, test_per_organ=3, repeat=1))
