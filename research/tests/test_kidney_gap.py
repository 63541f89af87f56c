"""The kidney cross-stain gap: the HPA rendition of PAS tiles and the decomposition's table."""

from __future__ import annotations

import json

import cv2
import kidney_gap
import kidney_study
import numpy as np
import pandas as pd
import pytest
import tifffile
from experiments import RunArchive, merged
from glas_render import HPA_GLASS_OD

from ftuseg.core import rle
from ftuseg.data.real_tiles import load_real_tiles
from ftuseg.domain.recolour import HPA_STAINS


def small(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A quarter of the tile's pixels (the renderer is size-agnostic; 4× quicker)."""
    half = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    m = cv2.resize(mask.astype(np.uint8), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_NEAREST)
    return half, m > 0


@pytest.fixture(scope="module")
def study_data(tmp_path_factory):
    """The kidney study's layout with 2 training tiles, 1 held-out tile and its second-lab copy."""
    root = tmp_path_factory.mktemp("study") / "data"
    (root / "train_images").mkdir(parents=True)
    (root / "test_images").mkdir()
    train, test = [], []
    for split, rows, folder in (("train", train, "train_images"), ("test", test, "test_images")):
        for t in load_real_tiles(split, 2 if split == "train" else 1):
            image, mask = small(t.image, t.mask)
            tifffile.imwrite(root / folder / f"{t.id}.tiff", image)
            rows.append({"id": t.id, "organ": "kidney", "data_source": "HuBMAP",
                         "img_height": image.shape[0], "img_width": image.shape[1],
                         "pixel_size": 2.0, "tissue_thickness": 4.0, "rle": rle.encode(mask)})  # fmt: skip
    lab_b = {**test[0], "id": f"labb_{test[0]['id']}"}
    tifffile.imwrite(root / "test_images" / f"{lab_b['id']}.tiff",
                     tifffile.imread(root / "test_images" / f"{test[0]['id']}.tiff"))  # fmt: skip
    pd.DataFrame(train).to_csv(root / "train.csv", index=False)
    tests = pd.DataFrame([*test, lab_b])
    tests.drop(columns="rle").to_csv(root / "test.csv", index=False)
    tests[["id", "rle"]].to_csv(root / "test_labels.csv", index=False)
    return root


def test_training_tiles_become_hematoxylin_and_dab_and_the_test_is_degraded_alike(
    study_data, tmp_path
):
    out = kidney_gap.render(study_data, tmp_path / "gap")
    train = pd.read_csv(study_data / "train.csv", dtype={"id": str})
    hpa, pas = out / "hpa", out / "pas"
    assert set(pd.read_csv(hpa / "train.csv")["data_source"]) == {"HPA"}
    assert set(pd.read_csv(pas / "train.csv")["data_source"]) == {"HuBMAP"}
    for image_id in train["id"]:
        real = tifffile.imread(study_data / "train_images" / f"{image_id}.tiff")
        np.testing.assert_array_equal(
            tifffile.imread(pas / "train_images" / f"{image_id}.tiff"), real
        )
        rendered = tifffile.imread(hpa / "train_images" / f"{image_id}.tiff")
        assert rendered.shape == real.shape
        # Every rendered pixel's optical density lies in the plane of the HPA stains (+ glass):
        # no PAS magenta is left.
        od = -np.log(np.maximum(rendered.reshape(-1, 3).astype(np.float64), 1) / 255.0)
        od -= HPA_GLASS_OD
        basis = np.asarray(HPA_STAINS[:2], np.float64)
        fit, *_ = np.linalg.lstsq(basis.T, od.T, rcond=None)
        residual = np.abs(od.T - basis.T @ fit).max(axis=0)
        dense = od.sum(axis=1) > 0.3  # away from rounding at near-white pixels
        assert np.percentile(residual[dense], 99) < 0.05
    # The held-out tile only (not its second-lab copy), degraded, the same bytes in both
    for folder in (hpa, pas):
        assert len(ids := pd.read_csv(folder / "test.csv")["id"]) == 1
        assert not ids.str.startswith("labb_").any()
    (test_id,) = pd.read_csv(hpa / "test.csv")["id"]
    a = tifffile.imread(hpa / "test_images" / f"{test_id}.tiff")
    np.testing.assert_array_equal(a, tifffile.imread(pas / "test_images" / f"{test_id}.tiff"))
    source = tifffile.imread(study_data / "test_images" / f"{test_id}.tiff")
    assert a.shape == source.shape and np.abs(a.astype(int) - source).mean() > 2
    labels = pd.read_csv(hpa / "test_labels.csv")
    assert labels["id"].tolist() == [test_id]


def fake_archive(path, dice: dict[str, float]) -> RunArchive:
    """Runs whose test tiles (two) and OOF tiles (two) score the given Dice."""

    def read(rev: str, file: str) -> pd.DataFrame:
        value = dice[rev]
        if file == kidney_gap.RESULT_FILES["test"]:
            return pd.DataFrame({"id": ["t1", "t2"], "organ": "kidney",
                                 "dice": [value, value - 0.1]})  # fmt: skip
        return pd.DataFrame({"id": ["train_1", "train_2"], "organ": "kidney", "fold": [0, 1],
                             "dice": [value + 0.1, value + 0.1]})  # fmt: skip

    archive = RunArchive(path, kidney_gap.RESULT_FILES, extra=("organ",))
    archive.add({n: n for n in dice}, read)
    archive.save()
    return archive


def test_report_splits_the_gap_into_ceiling_and_transfer(tmp_path, monkeypatch):
    runs = {"kgap-hpa-default-s0": 0.5, "kgap-hpa-default-s1": 0.3, "kgap-pas-default-s0": 0.8,
            "kgap-pas-default-s1": 0.8}  # fmt: skip
    fake_archive(tmp_path / "runs.csv", runs)
    monkeypatch.setattr(kidney_gap, "ARCHIVE", tmp_path / "runs.csv")
    monkeypatch.setattr(kidney_gap, "TABLE", tmp_path / "table")
    (row,) = kidney_gap.report()["rows"]
    c, t = (0.4 + 0.3) / 2, (0.8 + 0.7) / 2  # seeds averaged per tile, then tiles
    o, p = 0.5, 0.9
    assert row["seeds"] == 2
    assert row["cross_stain"][0] == pytest.approx(c)
    assert row["gap_ratio"][0] == pytest.approx(c / t, abs=1e-4)
    assert row["ceiling"][0] == pytest.approx(o / p, abs=1e-4)
    assert row["transfer"][0] == pytest.approx((c / t) / (o / p), abs=1e-4)
    assert sum(v["images"] for v in row["ceiling_by_pattern"].values()) == 2
    assert json.loads((tmp_path / "table.json").read_text())["rows"] == [row]
    assert "| `default` | 2 |" in (tmp_path / "table.md").read_text()
    assert row["vs_default"] is None


def test_another_recipe_is_compared_with_the_default_tile_by_tile(tmp_path, monkeypatch):
    fake_archive(tmp_path / "runs.csv", {"kgap-hpa-default-s0": 0.5, "kgap-pas-default-s0": 0.8,
                                         "kgap-hpa-nocut-s0": 0.6, "kgap-pas-nocut-s0": 0.8})  # fmt: skip
    monkeypatch.setattr(kidney_gap, "ARCHIVE", tmp_path / "runs.csv")
    monkeypatch.setattr(kidney_gap, "TABLE", tmp_path / "table")
    rows = {r["method"]: r for r in kidney_gap.report()["rows"]}
    assert set(rows) == {"default", "nocut"}
    assert rows["nocut"]["vs_default"] == pytest.approx([0.1, 0.1, 0.1], abs=1e-6)


def test_a_seed_run_on_one_dataset_only_is_left_out(tmp_path, monkeypatch):
    fake_archive(tmp_path / "runs.csv", {"kgap-hpa-default-s0": 0.5, "kgap-hpa-default-s1": 0.3,
                                         "kgap-pas-default-s0": 0.8})  # fmt: skip
    monkeypatch.setattr(kidney_gap, "ARCHIVE", tmp_path / "runs.csv")
    monkeypatch.setattr(kidney_gap, "TABLE", tmp_path / "table")
    (row,) = kidney_gap.report()["rows"]
    assert row["seeds"] == 1 and row["cross_stain"][0] == pytest.approx((0.5 + 0.4) / 2)


def test_every_method_is_a_recipe_at_the_study_budget_with_no_key_twice():
    for method, (own, _) in kidney_gap.METHODS.items():
        sets = merged(kidney_study.BUDGET, kidney_study.PLAIN, own)
        keys = [s.split("=", 1)[0] for s in sets]
        assert len(keys) == len(set(keys)), method
        assert "augment.glass=0" in sets, method
        # Copies set explicitly (the profile has none): 4, or 0 where no image is recoloured.
        copies = {"stain.augment.copies=4", "stain.augment.copies=0"} & set(sets)
        assert len(copies) == 1, method
        thresholds = next(s for s in sets if s.startswith("ensemble.thresholds="))
        assert thresholds.count(",") >= 10  # the default grid, not the profile's 0.5 alone
    assert "domain=all" in kidney_gap.METHODS["default"][0]
    assert kidney_gap.draw_key("train_106") == "106"
    with pytest.raises(ValueError, match="no tile number"):
        kidney_gap.draw_key("tile")
