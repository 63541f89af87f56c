"""research/domain.py: the default's decision at the sample budget, paired against `all`."""

from __future__ import annotations

from pathlib import Path

import domain
import pandas as pd
import pytest
from experiments import RunArchive

IDS = ["k1", "k2", "p1", "s1"]
ORGAN = ["kidney", "kidney", "prostate", "spleen"]


def archive_with(tmp_path: Path, runs: dict[str, list[float]]) -> RunArchive:
    """An archive holding each run's test Dice per image of IDS and a constant OOF Dice."""

    def read(rev: str, path: str) -> pd.DataFrame:
        if path == domain.RESULT_FILES["test"]:
            return pd.DataFrame({"id": IDS, "organ": ORGAN, "dice": runs[rev]})
        return pd.DataFrame({"id": ["o1"], "organ": ["kidney"], "fold": [0], "dice": [0.7]})

    archive = RunArchive(tmp_path / "runs.csv", domain.RESULT_FILES, extra=("organ",))
    archive.add({name: name for name in runs}, read)
    return archive


def test_decision_pairs_with_all_on_the_seeds_both_finished(tmp_path: Path) -> None:
    base = [0.2, 0.4, 0.6, 0.8]
    runs = {}
    for seed in (1, 2):
        runs[domain.exp_name("all", seed)] = [d + 0.1 * (seed - 1) for d in base]
        runs[domain.exp_name("lean", seed)] = [0.5, 0.7, 0.6, 0.8]
    runs[domain.exp_name("nocut", 1)] = [d - 0.1 for d in base]  # seed 1 only: paired on it
    runs[domain.exp_name("lean", 3)] = [1.0] * 4  # seed 3 lacks `all`: left out
    rows = {r["variant"]: r for r in domain.decision_rows(archive_with(tmp_path, runs), [1, 2, 3])}
    assert [r["seeds"] for r in rows.values()] == [[1, 2], [1, 2], [1]]
    assert rows["all"]["vs_all"] is None and rows["all"]["test"][0] == pytest.approx(0.55)
    # lean − all's mean over seeds 1 and 2: +0.25 on the kidney tiles, −0.05 on the others
    assert rows["lean"]["vs_all"][0] == pytest.approx(0.1)
    assert rows["lean"]["real_kidney_vs_all"] == pytest.approx([0.25, 0.25, 0.25])
    assert rows["lean"]["real_kidney"][0] == pytest.approx(0.6)
    assert rows["nocut"]["vs_all"] == pytest.approx([-0.1, -0.1, -0.1])  # not −0.15 (both seeds)
    assert rows["lean"]["per_organ"]["prostate"] == pytest.approx(0.6)
    assert rows["lean"]["per_seed"] == [0.65, 0.65]
    assert rows["lean"]["oof"] == pytest.approx(0.7)
    # Candidates after today's default are also paired with it (on the seeds all three share);
    # `all` and `lean` themselves are not.
    lean_1 = pd.Series([0.5, 0.7, 0.6, 0.8])
    nocut_1 = pd.Series(base) - 0.1
    assert rows["nocut"]["vs_today"][0] == pytest.approx((nocut_1 - lean_1).mean())
    assert rows["nocut"]["real_kidney_vs_today"][0] == pytest.approx((nocut_1 - lean_1)[:2].mean())
    assert rows["lean"]["vs_today"] is None and rows["all"]["vs_today"] is None


def test_decision_without_the_default_before_it_is_an_error(tmp_path: Path) -> None:
    runs = {domain.exp_name("all", 1): [0.5] * 4, domain.exp_name("lean", 2): [0.5] * 4}
    with pytest.raises(SystemExit, match="no all run"):
        domain.decision_rows(archive_with(tmp_path, runs), [2])
