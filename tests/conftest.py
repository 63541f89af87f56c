from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_LABELS = ROOT.parent / "shared" / "hubmap-labels"
FIXTURES = Path(__file__).parent / "data"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end modules first, then the slow ones, then the rest (stable within each): under
    `make test`'s two pytest-xdist workers, which take whole files in this order, the longest
    files start first instead of last."""

    def weight(item: pytest.Item) -> int:
        return 0 if item.get_closest_marker("e2e") else 1 if item.get_closest_marker("slow") else 2

    items.sort(key=weight)


@pytest.fixture(scope="session")
def real_rows() -> pd.DataFrame:
    """Real competition train.csv rows: the 141 shared ones when present, else the 10 bundled."""
    shared = SHARED_LABELS / "train_rows.csv"
    path = shared if shared.is_file() else FIXTURES / "real_rows.csv"
    return pd.read_csv(path, dtype={"id": str})


@pytest.fixture(scope="session")
def shared_labels() -> Path:
    """The shared real-label folder; only present beside a checkout in this project's workspace."""
    if not SHARED_LABELS.is_dir():
        pytest.skip(
            "../shared/hubmap-labels is not beside this checkout (bundled rows still tested)"
        )
    return SHARED_LABELS


@pytest.fixture(scope="session")
def sample_prepared(tmp_path_factory):
    """A factory of small prepared datasets: ``make(field_um, um_per_px)`` generates a sample of 2
    training images per organ (no test images) and prepares it with 2 folds, once per session and
    per arguments; returns the folder holding ``raw/`` and ``prep/``. Tests only read them."""
    from ftuseg.data.prepare import PrepareConfig, prepare
    from ftuseg.data.sample import SampleConfig, generate

    made: dict[tuple[float, float], Path] = {}

    def make(field_um: float, um_per_px: float) -> Path:
        if (field_um, um_per_px) not in made:
            root = tmp_path_factory.mktemp(f"sample-{field_um:g}um-{um_per_px:g}umpx")
            generate(
                root / "raw", SampleConfig(train_per_organ=2, test_per_organ=0, field_um=field_um)
            )
            prepare(root / "raw", root / "prep", PrepareConfig(um_per_px=um_per_px, n_folds=2))
            made[field_um, um_per_px] = root
        return made[field_um, um_per_px]

    return make


@pytest.fixture(scope="session")
def bundled_rows() -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "real_rows.csv", dtype={"id": str})


@pytest.fixture(scope="session")
def run_stage():
    """Run a stage script as DVC would (``python stages/x.py``) inside ``cwd``."""

    def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.run(
            [sys.executable, str(ROOT / "stages" / script), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    return run
