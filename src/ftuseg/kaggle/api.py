"""The Kaggle CLI, called for the user: credentials (never written anywhere), downloading the
competition data, pushing the model dataset and the kernel."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import zipfile
from collections.abc import Sequence
from pathlib import Path

from ftuseg.core.errors import DataError
from ftuseg.kaggle.bundle import COMPETITION, DATASET_DIR


def credentials_present() -> bool:
    """Whether the kaggle CLI will find credentials (checked by presence only, never read)."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    return (config_dir / "kaggle.json").is_file()


def require_credentials() -> None:
    if not credentials_present():
        raise DataError(
            "no Kaggle credentials: set KAGGLE_USERNAME/KAGGLE_KEY or create ~/.kaggle/kaggle.json"
        )


def _kaggle(args: Sequence[str], dry_run: bool, check: bool = True) -> int:
    cmd = ["kaggle", *args]
    print("$ " + shlex.join(cmd), flush=True)
    if dry_run:
        return 0
    if shutil.which("kaggle") is None:
        raise DataError("the kaggle CLI is not installed: pip install kaggle")
    code = subprocess.run(cmd).returncode  # credentials reach it through its own environment
    if check and code:
        raise DataError(f"`{shlex.join(cmd)}` failed with exit code {code}")
    return code


def download_competition(dest: str | Path, dry_run: bool = False) -> None:
    """``kaggle competitions download`` into ``dest`` and unzip it there."""
    dest = Path(dest)
    if not dry_run:
        require_credentials()
    if not dry_run:
        dest.mkdir(parents=True, exist_ok=True)
    _kaggle(["competitions", "download", "-c", COMPETITION, "-p", str(dest)], dry_run)
    archive = dest / f"{COMPETITION}.zip"
    print(f"$ unzip {archive} -d {dest}", flush=True)
    if dry_run:
        return
    if not archive.is_file():
        raise DataError(f"{archive}: the download produced no archive")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest)
    archive.unlink()


def push(
    kernel_dir: str | Path, message: str, dry_run: bool = False, create: bool | None = None
) -> None:
    """Version (or create) the model dataset, then push the kernel."""
    kernel_dir = Path(kernel_dir)
    dataset = kernel_dir / DATASET_DIR
    for required in (kernel_dir / "kernel-metadata.json", dataset / "dataset-metadata.json"):
        if not required.is_file():
            raise DataError(f"{required}: missing; build the kernel first (dvc repro)")
    if not dry_run:
        require_credentials()
    if create is None:
        dataset_id = json.loads((dataset / "dataset-metadata.json").read_text())["id"]
        create = _kaggle(["datasets", "status", dataset_id], dry_run, check=False) != 0
    if create:
        _kaggle(["datasets", "create", "-p", str(dataset), "-r", "zip"], dry_run)
    else:
        _kaggle(["datasets", "version", "-p", str(dataset), "-r", "zip", "-m", message], dry_run)
    _kaggle(["kernels", "push", "-p", str(kernel_dir)], dry_run)
