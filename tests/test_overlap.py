"""Overlapping images: tiles of one slide are paired at their offsets (also of unequal sizes),
other images are not, the pairs form groups, and `ftuseg import --group-overlaps` writes them
into train.csv so the folds keep each group whole."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ftuseg.cli import app
from ftuseg.core.errors import DataError
from ftuseg.data.contract import read_metadata
from ftuseg.data.importer import ImportDefaults, import_dataset
from ftuseg.data.overlap import OverlapConfig, find_overlaps, overlap_groups, thumbnail


def slide(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """Blurred colour noise: structure a few pixels wide everywhere, as tissue has."""
    noise = np.random.default_rng(seed).normal(128, 60, (*shape, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 3), 0, 255).astype(np.uint8)


TILES = {  # id: (slide seed, y, x, height, width)
    "a": (0, 0, 0, 240, 320),
    "b": (0, 120, 160, 240, 320),  # a's lower-right quarter
    "c": (0, 0, 160, 240, 320),  # a's right half
    "d": (0, 200, 0, 120, 160),  # smaller, across a's lower edge (a third of it in a)
    "other": (1, 0, 0, 240, 320),
}


def tiles() -> dict[str, np.ndarray]:
    slides = {s: slide(s, (480, 640)) for s in (0, 1)}
    return {i: slides[s][y : y + h, x : x + w] for i, (s, y, x, h, w) in TILES.items()}


def test_tiles_of_one_slide_pair_at_their_offsets_and_others_do_not():
    cfg = OverlapConfig(scale=0.25)
    pairs = find_overlaps({i: thumbnail(t, cfg.scale) for i, t in tiles().items()}, cfg)
    found = {(r.a, r.b): (r.dy, r.dx) for r in pairs.itertuples()}
    offset = {i: (y, x) for i, (_, y, x, _, _) in TILES.items()}
    expected = {
        (a, b): (offset[b][0] - offset[a][0], offset[b][1] - offset[a][1])
        for a, b in [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c")]
    }
    assert found == expected
    assert (pairs["ncc"] > 0.99).all()
    shared = pairs.set_index(["a", "b"])["shared"]
    assert shared[("a", "b")] == 0.25 and shared[("a", "d")] == 0.3333  # of the smaller image
    group = overlap_groups(pairs, list(TILES))
    assert group[["a", "b", "c", "d"]].nunique() == 1 and group["a"] == 0
    assert group["other"] == 1


def write_dataset(folder):
    (folder / "img").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i, tile in tiles().items():
        cv2.imwrite(str(folder / "img" / f"{i}.png"), tile[..., ::-1])
        mask = np.zeros(tile.shape[:2], np.uint8)
        mask[10:40, 10:40] = 255
        cv2.imwrite(str(folder / "masks" / f"{i}.png"), mask)


def test_import_groups_the_tiles_that_share_pixels(tmp_path):
    write_dataset(tmp_path)
    result = CliRunner().invoke(app, [
        "import", "masks", str(tmp_path / "img"), str(tmp_path / "masks"), "--out",
        str(tmp_path / "out"), "--organ", "kidney", "--pixel-size", "1", "--thickness", "4",
        "--group-overlaps",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "4 of them share pixels with another" in result.output
    table = read_metadata(tmp_path / "out" / "train.csv", "train").set_index("id")
    assert set(table.loc[["a", "b", "c", "d"], "group"]) == {"overlap-0"}
    assert table.loc["other", "group"] == "id:other"  # alone: its own group
    assert len(pd.read_csv(tmp_path / "out" / "overlaps.csv")) == 4


def test_groups_are_given_or_found_not_both(tmp_path):
    write_dataset(tmp_path)
    pd.DataFrame({"id": ["a"], "group": ["s1"]}).to_csv(tmp_path / "meta.csv", index=False)
    with pytest.raises(DataError, match="groups given and asked to be found"):
        import_dataset("masks", tmp_path / "img", tmp_path / "masks", tmp_path / "out",
                       ImportDefaults("kidney", 1.0, 4.0), meta_csv=tmp_path / "meta.csv",
                       group_overlaps=OverlapConfig())  # fmt: skip
    assert not (tmp_path / "out").exists()
