"""The cross-lab kidney study: the second lab's rendition and the table built from the archive."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import kidney_study
import numpy as np
import pandas as pd
import pytest
from experiments import RunArchive
from kidney_lab import render_lab_b, tissue_mean

from ftuseg.data.real_tiles import load_real_tiles


@pytest.fixture(scope="module")
def tile():
    """The first held-out tile at half size (the renderer is size-agnostic; 4× quicker)."""
    t = load_real_tiles("test", 1)[0]
    image = cv2.resize(t.image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    mask = cv2.resize(t.mask.astype(np.uint8), None, fx=0.5, fy=0.5,
                      interpolation=cv2.INTER_NEAREST) > 0  # fmt: skip
    return replace(t, image=image, mask=mask)


def test_the_second_lab_is_lighter_finer_and_keeps_a_glomerulus(tile):
    image, mask = render_lab_b(tile.image, tile.mask, tile.id)
    again = render_lab_b(tile.image, tile.mask, tile.id)
    np.testing.assert_array_equal(image, again[0])  # seeded by the tile's id
    assert image.shape == (2 * tile.image.shape[0], 2 * tile.image.shape[1], 3)  # 0.5 µm/px
    up = np.repeat(np.repeat(tile.mask, 2, axis=0), 2, axis=1)
    assert mask.any() and not (mask & ~up).any()  # a band of the tile: never a new glomerulus
    source, lab_b = tissue_mean(tile.image), tissue_mean(image)
    assert (lab_b - source).min() > 30, (source, lab_b)  # much lighter, as the issue measured
    glass = (image.astype(int).sum(axis=2) > 690).mean()
    assert 0.15 < glass < 0.7, glass  # a biopsy: glass beside the tissue


def fake_archive(
    path, dice: dict[str, tuple[float, float]], oof: dict[str, list[float]] | None = None
) -> RunArchive:
    """Runs whose same-lab tiles score ``same`` and second-lab tiles ``lab_b`` (two tiles), and
    whose two OOF tiles score ``oof[run]`` (default 0.8, 0.9)."""

    def read(rev: str, file: str) -> pd.DataFrame:
        same, lab_b = dice[rev]
        if file == kidney_study.RESULT_FILES["test"]:
            return pd.DataFrame({"id": ["t1", "t2", "labb_t1", "labb_t2"], "organ": "kidney",
                                 "dice": [same, same, lab_b, lab_b - 0.1]})  # fmt: skip
        return pd.DataFrame({"id": ["a", "b"], "organ": "kidney", "fold": [0, 1],
                             "dice": (oof or {}).get(rev, [0.8, 0.9])})  # fmt: skip

    archive = RunArchive(path, kidney_study.RESULT_FILES, extra=("organ",))
    archive.add({n: n for n in dice}, read)
    archive.save()
    return archive


def test_report_averages_seeds_and_pairs_the_second_lab_with_the_same_tiles(tmp_path, monkeypatch):
    runs = {"kidney-scale-s0": (0.8, 0.2), "kidney-scale-s1": (0.6, 0.4),
            "kidney-od-s0": (0.7, 0.6)}  # fmt: skip
    fake_archive(tmp_path / "runs.csv", runs)
    monkeypatch.setattr(kidney_study, "ARCHIVE", tmp_path / "runs.csv")
    monkeypatch.setattr(kidney_study, "TABLE", tmp_path / "table")
    result = kidney_study.report()
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"scale", "od"}
    scale, od = rows["scale"], rows["od"]
    assert scale["seeds"] == 2 and od["seeds"] == 1
    assert scale["same_lab"][0] == pytest.approx(0.7)  # (0.8 + 0.6) / 2 on both tiles
    assert scale["lab_b"][0] == pytest.approx(0.25)  # (0.3 + 0.2) / 2
    assert scale["hold"][0] == pytest.approx(0.25 / 0.7, abs=1e-4)
    assert od["lab_b_vs_base"][0] == pytest.approx(0.55 - 0.25)
    assert "lab_b_vs_base" not in scale
    assert json.loads((tmp_path / "table.json").read_text()) == result
    assert "| `od` | 1 |" in (tmp_path / "table.md").read_text()


def test_oof_is_paired_tile_by_tile_with_the_profile_before_its_post_processing(
    tmp_path, monkeypatch
):
    base, new = "kidney-labhalf-t05-110-tta", "kidney-labhalf-t05-110-min4000"
    runs = {f"{base}-s0": (0.8, 0.8), f"{new}-s0": (0.8, 0.8), f"{new}-s1": (0.8, 0.8)}
    oof = {f"{base}-s0": [0.8, 0.9], f"{new}-s0": [0.85, 0.9], f"{new}-s1": [0.83, 0.92]}
    fake_archive(tmp_path / "runs.csv", runs, oof)
    monkeypatch.setattr(kidney_study, "ARCHIVE", tmp_path / "runs.csv")
    monkeypatch.setattr(kidney_study, "TABLE", tmp_path / "table")
    rows = {r["method"]: r for r in kidney_study.report()["rows"]}
    assert "oof_vs_profile" not in rows["labhalf-t05-110-tta"]
    # Per tile over the seeds (0.84, 0.91) against (0.80, 0.90): +0.04 and +0.01.
    assert rows["labhalf-t05-110-min4000"]["oof_vs_profile"][0] == pytest.approx(0.025)
    assert rows["labhalf-t05-110-min4000"]["oof"][0] == pytest.approx(0.875)


def test_test_time_variants_are_listed_after_their_method_without_an_oof(tmp_path, monkeypatch):
    fake_archive(tmp_path / "runs.csv", {"kidney-scale-s0": (0.8, 0.0)})
    archive = RunArchive(tmp_path / "runs.csv", kidney_study.RESULT_FILES, extra=("organ",))
    test = pd.DataFrame({"id": ["t1", "t2", "labb_t1", "labb_t2"], "organ": "kidney",
                         "dice": [0.7, 0.7, 0.5, 0.4]})  # fmt: skip
    archive.add({"kidney-scale+adapt1-s0": "r"},
                lambda rev, path: test if path == kidney_study.RESULT_FILES["test"] else None)  # fmt: skip
    archive.save()
    monkeypatch.setattr(kidney_study, "ARCHIVE", tmp_path / "runs.csv")
    monkeypatch.setattr(kidney_study, "TABLE", tmp_path / "table")
    rows = kidney_study.report()["rows"]
    assert [r["method"] for r in rows] == ["scale", "scale+adapt1"]
    adapted = rows[1]
    assert adapted["oof"] is None and adapted["lab_b"][0] == pytest.approx(0.45)
    assert adapted["lab_b_vs_base"][0] == pytest.approx(0.45 - (-0.05))  # base: 0.0 and -0.1
    assert "adapt_norm: 1" in adapted["about"]


def test_every_method_starts_with_another_labs_augmentations_off():
    """A method names the same settings whatever the profile holds: PLAIN first, the method's
    own values replace it key by key, and no key is given twice (Hydra would take either)."""
    for method in kidney_study.METHODS:
        sets = kidney_study.overrides(method)
        keys = [s.split("=", 1)[0] for s in sets]
        assert len(keys) == len(set(keys)), method
    assert "augment.glass=0" in kidney_study.overrides("scale")
    lab = kidney_study.overrides("lab-t05")
    assert {"augment.glass=0.5", "augment.density_range=[0.1,1.5]"} <= set(lab)
    assert "ensemble.thresholds=[0.5]" in lab and "augment.glass=0" not in lab
    assert "train.epochs=8" in lab and "profile=kidney-real" in lab
    full = kidney_study.overrides("lab-t05-full")
    assert "train.epochs=25" in full and "train.epochs=8" not in full
