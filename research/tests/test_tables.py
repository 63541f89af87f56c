"""The archived tables (GlaS, kidney) rebuild byte for byte from the committed run archives."""

import subprocess
import sys
from pathlib import Path

RESEARCH = Path(__file__).resolve().parents[1]


def test_the_archived_tables_are_fresh():
    result = subprocess.run(
        [sys.executable, str(RESEARCH / "tables.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_the_kidney_study_tables_are_fresh():
    result = subprocess.run(
        [sys.executable, str(RESEARCH / "kidney_study.py"), "--check"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout


def test_the_kidney_gap_tables_are_fresh():
    result = subprocess.run(
        [sys.executable, str(RESEARCH / "kidney_gap.py"), "--check"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
