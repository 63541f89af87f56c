"""What the submission and the kernel read: thresholds per organ and the model bundle."""

from __future__ import annotations

import pytest

from ftuseg.core.errors import DataError
from ftuseg.infer.members import EnsembleConfig, ensemble_members
from ftuseg.kaggle.runtime import BUNDLE_ENV, BUNDLE_MARKER, find_bundle


def config(**kwargs) -> EnsembleConfig:
    return EnsembleConfig(
        members={"unet": 0.75, "coat": 0.25},
        thresholds={"kidney": 0.35, "lung": 0.2},
        um_per_px=2.0,
        **kwargs,
    )


def test_an_organ_without_a_tuned_threshold_is_an_error_by_default():
    cfg = config(source_thresholds={"Hubmap": {"lung": 0.6}})
    assert cfg.threshold("kidney") == 0.35
    assert cfg.threshold("lung", "Hubmap") == 0.6 and cfg.threshold("lung", "HPA") == 0.2
    with pytest.raises(DataError, match="no threshold for organ 'spleen'.*untuned_threshold"):
        cfg.threshold("spleen")


def test_an_explicit_untuned_threshold_is_used_and_survives_a_round_trip(tmp_path):
    cfg = config(untuned_threshold=0.45)
    assert cfg.threshold("spleen") == 0.45 and cfg.threshold("kidney") == 0.35
    cfg.save(tmp_path / "ensemble.yaml")
    assert EnsembleConfig.load(tmp_path / "ensemble.yaml") == cfg


def test_a_broken_ensemble_file_names_itself(tmp_path):
    (tmp_path / "ensemble.yaml").write_text("members: {unet: 1.0}\n")
    with pytest.raises(DataError, match=r"ensemble\.yaml: not a valid ensemble config"):
        EnsembleConfig.load(tmp_path / "ensemble.yaml")


def test_each_model_weight_is_split_evenly_over_its_folds(tmp_path):
    members = ensemble_members(tmp_path, config(), [0, 1])
    assert [(p.relative_to(tmp_path).as_posix(), w) for p, w in members] == [
        ("unet/fold0", 0.375),
        ("unet/fold1", 0.375),
        ("coat/fold0", 0.125),
        ("coat/fold1", 0.125),
    ]


def test_several_attached_bundles_are_an_error_unless_one_is_chosen(tmp_path, monkeypatch):
    monkeypatch.delenv(BUNDLE_ENV, raising=False)
    for name in ("old-models", "new-models"):
        (tmp_path / name).mkdir()
        (tmp_path / name / BUNDLE_MARKER).write_text("{}")
    with pytest.raises(DataError, match="2 model bundles attached.*FTUSEG_KAGGLE_BUNDLE"):
        find_bundle(tmp_path)
    monkeypatch.setenv(BUNDLE_ENV, str(tmp_path / "new-models"))
    assert find_bundle(tmp_path) == tmp_path / "new-models"
    monkeypatch.setenv(BUNDLE_ENV, str(tmp_path))
    with pytest.raises(DataError, match="no ftuseg-bundle.json in that folder"):
        find_bundle(tmp_path)
    monkeypatch.delenv(BUNDLE_ENV)
    (tmp_path / "old-models" / BUNDLE_MARKER).unlink()
    assert find_bundle(tmp_path) == tmp_path / "new-models"
