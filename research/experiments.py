"""Reading finished `dvc exp` experiments, shared by the benchmarks that compare them."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def merged(*groups: tuple[str, ...]) -> list[str]:
    """``key=value`` overrides in order, a later group's value replacing an earlier one's for the
    same key (a method's budget over the study's), so no key is passed twice (Hydra would take
    either)."""
    out: dict[str, str] = {}
    for group in groups:
        for item in group:
            key = item.split("=", 1)[0]
            out.pop(key, None)
            out[key] = item
    return list(out.values())


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


def show_at(rev: str, path: str) -> str:
    """A file's text as committed in experiment commit ``rev``."""
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout  # fmt: skip


def read_at(rev: str, path: str) -> pd.DataFrame:
    """A per-image CSV as committed in experiment commit ``rev`` (ids kept as strings)."""
    return pd.read_csv(io.StringIO(show_at(rev, path)), dtype={"id": str})


class RunArchive:
    """Per-image results of finished runs, kept in one CSV beside a benchmark's tables.

    A ``dvc exp`` run lives in one clone's ``.git`` (``refs/exps``) and is gone with it, and a
    re-run on another CPU is not byte-identical (torch's CPU kernels differ), so a table built
    from experiment refs alone cannot be rebuilt elsewhere. The archive keeps, per run and per
    kind of result (``files``: kind -> the per-image CSV a run writes), the columns ``id``,
    ``fold``, the ``extra`` ones a report needs (e.g. ``organ``) and ``dice``; a report reads
    runs from it, and a run it holds counts as finished and is never re-run. A run is archived
    once: a later experiment of the same name does not replace it (delete its rows to re-run it).
    """

    def __init__(self, path: Path, files: Mapping[str, str], extra: Sequence[str] = ()) -> None:
        self.path, self.files, self.extra = path, dict(files), tuple(extra)
        self.columns = ("run", "kind", "id", "fold", *self.extra, "dice")
        if path.is_file():
            self.rows = pd.read_csv(
                path, dtype={"run": str, "kind": str, "id": str, **dict.fromkeys(self.extra, str)}
            )
            if tuple(self.rows.columns) != self.columns:
                raise ValueError(f"{path}: columns {list(self.rows.columns)}, expected "
                                 f"{list(self.columns)}")  # fmt: skip
            unknown = set(self.rows["kind"]) - set(self.files)
            if unknown:
                raise ValueError(f"{path}: unknown kinds {sorted(unknown)}")
        else:
            self.rows = pd.DataFrame(columns=list(self.columns))
        self.rows["fold"] = self.rows["fold"].astype("Int64")

    def names(self) -> set[str]:
        return set(self.rows["run"])

    def add(
        self, runs: Mapping[str, str], read: Callable[[str, str], pd.DataFrame | None] = read_at
    ) -> list[str]:
        """Archive every run of ``runs`` (name -> experiment commit) not archived yet, reading
        each kind's per-image CSV with ``read(commit, path)`` (None: the run has no result of
        that kind); returns the names added."""
        new = sorted(set(runs) - self.names())
        frames = [self.rows] if len(self.rows) else []
        for name in new:
            for kind, path in self.files.items():
                t = read(runs[name], path)
                if t is None:
                    continue
                missing = [c for c in ("id", *self.extra, "dice") if c not in t]
                if missing:
                    raise ValueError(f"run {name}: {path} has no {'/'.join(missing)} column")
                frames.append(pd.DataFrame({
                    "run": name, "kind": kind, "id": t["id"].astype(str),
                    "fold": t.get("fold", pd.NA), **{c: t[c].astype(str) for c in self.extra},
                    "dice": t["dice"],
                }))  # fmt: skip
        if new:
            self.rows = pd.concat(frames, ignore_index=True)
            self.rows["fold"] = self.rows["fold"].astype("Int64")
        return new

    def table(self, name: str, kind: str) -> pd.DataFrame:
        """One run's per-image results of one kind: ``id``, ``fold`` (where the run wrote one),
        the extra columns and ``dice``, in the order the run wrote them."""
        sel = self.rows[(self.rows["run"] == name) & (self.rows["kind"] == kind)]
        if sel.empty:
            raise KeyError(f"{self.path.name}: no {kind} results of run {name}")
        return sel[list(self.columns[2:])].reset_index(drop=True)

    def save(self) -> None:
        """Write atomically (a temporary file renamed over the archive), sorted for stable
        diffs."""
        out = self.rows.sort_values(["run", "kind"], kind="stable")
        tmp = self.path.with_name(self.path.name + ".tmp")
        out.to_csv(tmp, index=False)
        os.replace(tmp, self.path)


def archived(
    path: Path, files: Mapping[str, str], prefix: str, extra: Sequence[str] = ()
) -> RunArchive:
    """The archive at ``path`` with this clone's finished experiments named ``prefix...`` that
    it does not hold yet added (and saved)."""
    archive = RunArchive(path, files, extra)
    if added := archive.add(named_runs(prefix)):
        archive.save()
        print(f"archived {len(added)} run(s) in {path.relative_to(ROOT)}", flush=True)
    return archive


def rounded(stat: tuple[float, ...]) -> list[float]:
    """(point, low, high) rounded for a study's JSON."""
    return [round(v, 4) for v in stat]


def interval_text(v: list[float]) -> str:
    """(point, low, high) as a table cell: ``0.812 [0.770, 0.850]``."""
    return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"


def table_args(doc: str) -> argparse.Namespace:
    """The command line of a study that measures, then reports: ``--report`` (tables from its
    archive only) and ``--check`` (fail if the committed tables are stale)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--report", action="store_true", help="tables from the archive only")
    ap.add_argument("--check", action="store_true", help="fail if the tables are stale")
    return ap.parse_args()


def between_markers(text: str, table: str, start: str, end: str) -> str:
    """``text`` with what stands between its ``start`` and ``end`` markers replaced by ``table``
    (a page's generated part)."""
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{table}\n{end}{tail}"


def write_or_check(outputs: Sequence[tuple[Path, str]], check: bool) -> list[str]:
    """Write each (path, text); with ``check``, write nothing and return the stale files' names."""
    stale = []
    for path, text in outputs:
        if not check:
            path.write_text(text)
        elif not path.is_file() or path.read_text() != text:
            stale.append(path.name)
    return stale


def write_tables(table: Path, result: dict, markdown: str, script: str, check: bool) -> None:
    """``table``.json and .md of a study; with ``check``, write nothing and exit non-zero when
    the committed ones differ (``script`` rebuilds them with ``--report``)."""
    texts = {".json": json.dumps(result, indent=2) + "\n", ".md": markdown}
    for suffix, text in texts.items():
        path = table.with_suffix(suffix)
        if not check:
            path.write_text(text)
        elif not path.is_file() or path.read_text() != text:
            raise SystemExit(f"{path}: stale, rebuild with `python research/{script} --report`")
