"""Reading finished `dvc exp` experiments, shared by the benchmarks that compare them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dvc(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def unfinished() -> set[str]:
    """Experiments still queued, running or failed (their `exp show` rows hold stale metrics)."""
    names = set()
    for line in dvc("queue", "status").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[-1] in {"Queued", "Running", "Failed"}:
            names.add(parts[1])
    return names


def finished_experiments() -> Iterator[tuple[str | None, dict, dict]]:
    """``(name, params.yaml, metrics by file)`` of every finished experiment, on every commit."""
    shown = json.loads(dvc("exp", "show", "--json", "--all-commits"))
    skip = unfinished()
    for rev in shown:
        for exp in [e for g in rev.get("experiments") or [] for e in g.get("revs", [])]:
            if exp.get("name") in skip or exp.get("rev") == "workspace":
                continue
            data = exp.get("data") or {}
            params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
            metrics = {k: v.get("data", {}) for k, v in (data.get("metrics") or {}).items()}
            yield exp.get("name"), params, metrics


def finished_run(rev: str) -> bool:
    """Whether experiment commit ``rev`` holds results: a running (or killed) experiment already
    has a commit, holding its params and the base commit's metrics, but its dvc.lock is the
    base's; a finished one recorded its stages in dvc.lock."""
    probe = ["git", "diff", "--quiet", f"{rev}^1", rev, "--", "dvc.lock"]
    return subprocess.run(probe, cwd=ROOT, capture_output=True).returncode == 1


def named_runs(prefix: str) -> dict[str, str]:
    """Finished experiments whose name starts with ``prefix``: name -> commit (the newest base
    commit first)."""
    shown = json.loads(dvc("exp", "show", "--json", "--all-commits", "--no-fetch"))
    found: dict[str, str] = {}
    for rev in shown:
        for exp in [e for g in rev.get("experiments") or [] for e in g.get("revs", [])]:
            name, sha = exp.get("name"), exp.get("rev")
            if name and name.startswith(prefix) and sha and finished_run(sha):
                found.setdefault(name, sha)
    return found
