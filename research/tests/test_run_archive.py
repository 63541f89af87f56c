"""research/experiments.RunArchive: per-image results of finished runs, kept in one CSV so a
benchmark's tables rebuild on a clone without the experiment refs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from experiments import RunArchive

FILES = {"test": "metrics/test_per_image.csv", "oof": "metrics/plots/oof_per_image.csv"}


def fake_runs(dice: dict[str, float]):
    """A reader of per-image CSVs by (commit, path): the test file without a fold column, as the
    pipeline writes it; the OOF file with one."""

    def read(rev: str, path: str) -> pd.DataFrame:
        base = dice[rev]
        if path == FILES["test"]:
            return pd.DataFrame({"id": ["0007", "12"], "organ": "x", "dice": [base, base / 2]})
        return pd.DataFrame({"id": ["3", "4", "5"], "organ": "x", "fold": [0, 1, 1],
                             "dice": [base, base + 0.1, base + 0.2]})  # fmt: skip

    return read


def test_archive_round_trip_keeps_ids_folds_and_values(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    archive = RunArchive(path, FILES)
    assert archive.add({"run-a": "ra", "run-b": "rb"}, fake_runs({"ra": 0.5, "rb": 0.8})) == [
        "run-a", "run-b"]  # fmt: skip
    archive.save()
    again = RunArchive(path, FILES)
    assert again.names() == {"run-a", "run-b"}
    test = again.table("run-b", "test")
    assert test["id"].tolist() == ["0007", "12"]  # ids stay strings: leading zeros survive
    assert test["dice"].tolist() == [0.8, 0.4]
    assert test["fold"].isna().all()
    oof = again.table("run-a", "oof")
    assert oof["fold"].tolist() == [0, 1, 1]
    assert oof["dice"].tolist() == pytest.approx([0.5, 0.6, 0.7])


def test_an_archived_run_is_never_replaced(tmp_path: Path) -> None:
    """A re-run of the same name elsewhere (not byte-identical on another CPU) does not silently
    change the committed numbers."""
    path = tmp_path / "runs.csv"
    archive = RunArchive(path, FILES)
    archive.add({"run-a": "ra"}, fake_runs({"ra": 0.5}))
    archive.save()
    again = RunArchive(path, FILES)
    assert again.add({"run-a": "other", "run-c": "rc"}, fake_runs({"other": 0.9, "rc": 0.2})) == [
        "run-c"]  # fmt: skip
    assert again.table("run-a", "test")["dice"].tolist() == [0.5, 0.25]
    assert again.table("run-c", "test")["dice"].tolist() == [0.2, 0.1]


def test_missing_run_and_bad_files_are_errors(tmp_path: Path) -> None:
    archive = RunArchive(tmp_path / "runs.csv", FILES)
    with pytest.raises(KeyError, match="run-x"):
        archive.table("run-x", "test")
    with pytest.raises(ValueError, match="no dice column"):
        archive.add({"bad": "r"}, lambda rev, path: pd.DataFrame({"id": ["1"]}))
    bad = tmp_path / "bad.csv"
    bad.write_text("run,kind,id,dice\n")
    with pytest.raises(ValueError, match="columns"):
        RunArchive(bad, FILES)
    bad.write_text("run,kind,id,fold,dice\nr,other,1,,0.5\n")
    with pytest.raises(ValueError, match="unknown kinds"):
        RunArchive(bad, FILES)


def test_save_is_atomic_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    archive = RunArchive(path, FILES)
    archive.add({"run-a": "ra"}, fake_runs({"ra": 0.5}))
    archive.save()
    assert [p.name for p in tmp_path.iterdir()] == ["runs.csv"]


def test_extra_columns_are_kept_as_text_and_required(tmp_path: Path) -> None:
    """The sample ablation's report needs each image's organ: an extra column survives the
    round trip, and a run whose file lacks it is refused by name."""
    path = tmp_path / "runs.csv"
    archive = RunArchive(path, FILES, extra=("organ",))
    archive.add({"run-a": "ra"}, fake_runs({"ra": 0.5}))
    archive.save()
    again = RunArchive(path, FILES, extra=("organ",))
    test = again.table("run-a", "test")
    assert list(test.columns) == ["id", "fold", "organ", "dice"]
    assert test["organ"].tolist() == ["x", "x"]
    assert test["dice"].tolist() == [0.5, 0.25]
    with pytest.raises(ValueError, match="columns"):  # read without the extra column
        RunArchive(path, FILES)
    no_organ = lambda rev, path: pd.DataFrame({"id": ["1"], "dice": [0.5]})  # noqa: E731
    with pytest.raises(ValueError, match="run-b: .* no organ column"):
        again.add({"run-b": "rb"}, no_organ)
