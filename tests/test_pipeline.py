"""End to end: `dvc repro` on the tiny profile in a fresh git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ftuseg import rle
from ftuseg.organs import ORGANS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def sh(*cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DVC_ROOT", None)
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def dvc(*args: str, cwd: Path) -> str:
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd).stdout


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("e2e") / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("stages", "src", "profiles"):
        shutil.copytree(
            ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    sh("git", "init", "-q", cwd=repo)
    sh("git", "config", "user.email", "ci@example.com", cwd=repo)
    sh("git", "config", "user.name", "ci", cwd=repo)
    dvc("init", "-q", cwd=repo)
    sh(sys.executable, "-m", "ftuseg.cli", "profile", "tiny", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "tiny profile", cwd=repo)
    return repo


@pytest.fixture(scope="module")
def first_run(repo) -> str:
    return dvc("repro", cwd=repo)


def test_repro_runs_every_stage(first_run):
    assert ran_stages(first_run) == {
        "sample", "prepare", "train@unet-0", "train@unet-1", "oof", "ensemble", "submit"
    }  # fmt: skip


def test_metrics_report_per_organ_dice(repo, first_run):
    oof = json.loads((repo / "metrics/oof.json").read_text())["unet"]
    assert oof["n_images"] == 10
    for organ in ORGANS:
        assert 0.0 <= oof[f"dice_{organ}"] <= 1.0
    ensemble = json.loads((repo / "metrics/ensemble.json").read_text())
    assert ensemble["ensemble"]["dice"] >= ensemble["ensemble_at_default_threshold"]["dice"]
    config = yaml.safe_load((repo / "data/ensemble.yaml").read_text())
    assert set(config["thresholds"]) == set(ORGANS)
    assert config["members"] == {"unet": 1.0}
    assert ensemble["weights"] == {"unet": 1.0}
    assert ensemble["best_single_model"]["name"] == "unet"
    curves = pd.read_csv(repo / "metrics/plots/thresholds.csv")
    assert list(curves.columns) == ["threshold", *ORGANS]
    assert (curves[list(ORGANS)].max() <= 1).all()
    assert (repo / "logs/train/unet/fold0/plots/metrics/val/dice.tsv").is_file()


def test_badcase_gallery_has_the_worst_images_of_every_organ(repo, first_run):
    pictures = sorted(p.name for p in (repo / "metrics/gallery").glob("*.png"))
    assert len(pictures) == 2 * len(ORGANS)  # gallery_worst_k = 2 per organ
    assert {name.split("_")[0] for name in pictures} == set(ORGANS)
    assert "image" in sh(sys.executable, "-m", "dvc", "plots", "show", "--json", cwd=repo).stdout


def test_submission_covers_the_test_set_and_is_scored(repo, first_run):
    test = pd.read_csv(repo / "data/sample/test.csv", dtype={"id": str})
    sub = pd.read_csv(repo / "submission.csv", dtype={"id": str}, keep_default_na=False)
    assert list(sub.columns) == ["id", "rle"]
    assert list(sub["id"]) == list(test["id"])
    for row, text in zip(test.itertuples(), sub["rle"], strict=True):
        assert rle.decode(text, (row.img_height, row.img_width)).shape == (
            row.img_height,
            row.img_width,
        )
    scored = json.loads((repo / "metrics/test.json").read_text())
    assert scored["scored"] is True and scored["n_images"] == 5
    assert 0.0 <= scored["dice"] <= 1.0


def test_second_repro_does_nothing(repo, first_run):
    out = dvc("repro", cwd=repo)
    assert ran_stages(out) == set()
    assert "Data and pipelines are up to date." in out


def test_changing_a_training_param_reruns_only_what_depends_on_it(repo, first_run):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["lr"] = params["train"]["lr"] / 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc("repro", cwd=repo)
    assert ran_stages(out) == {"train@unet-0", "train@unet-1", "oof", "ensemble", "submit"}
    assert "Stage 'sample' didn't change" in out and "Stage 'prepare' didn't change" in out
