"""The archived tables (GlaS, kidney, the default's decision) rebuild byte for byte from the
committed run archives."""

import subprocess
import sys
from pathlib import Path

import pytest

RESEARCH = Path(__file__).resolve().parents[1]


def test_the_archived_tables_are_fresh():
    result = subprocess.run(
        [sys.executable, str(RESEARCH / "tables.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize(
    "script",
    [
        "kidney_study.py",
        "kidney_gap.py",
        "domain.py",
        "kidney_labels.py",
        "kidney_overlap.py",
        "kidney_postprocess.py",
        "kidney_presentations.py",
    ],
)
def test_the_study_tables_are_fresh(script):
    result = subprocess.run(
        [sys.executable, str(RESEARCH / script), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr + result.stdout
