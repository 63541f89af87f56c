"""Do the pipeline's bytes depend on the machine? The tiny profile run from scratch under every
instruction-set level this CPU offers and with different numbers of visible cores, each in a
fresh copy of the project; every output hash of dvc.lock compared with the pinned run's.

    python research/portability.py [--json research/results/portability.json]

Levels: ``native`` (each library picks its own code path, as before the pin) and ``avx2`` (the
pin, ``cpu.isa: avx2``), crossed with the cores the machine has (``taskset``-style affinity), plus
the pinned run in a hostile environment (variables asking every library for other code paths
and thread counts). Hashes of the two timing files (metrics/stain.json, metrics/kernel.json)
and of the kernel folder (only `submit` and its upstream stages run) are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from ftuseg.core.cpu import CONTRARY_ENVIRONMENT

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"metrics/stain.json", "metrics/kernel.json"}


def run(cmd: list[str], cwd: Path, env: dict[str, str], cpus: set[int] | None = None) -> str:
    affinity = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, preexec_fn=affinity)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def project_copy(dest: Path, env: dict[str, str], level: str) -> Path:
    """A git + DVC repository of this project on the tiny profile at CPU level ``level``."""
    dest.mkdir(parents=True)
    for name in ("dvc.yaml", "pyproject.toml", ".dvcignore"):
        shutil.copy(ROOT / name, dest / name)
    for name in ("stages", "src", "conf"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    py = [sys.executable]
    run(["git", "init", "-q"], dest, env)
    run([*py, "-m", "dvc", "init", "-q"], dest, env)
    run([*py, "-m", "dvc", "config", "hydra.enabled", "true"], dest, env)
    run([*py, "-m", "ftuseg.cli", "profile", "tiny"], dest, env)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["cpu"]["isa"] = level
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for git in (["config", "user.email", "ci@example.com"], ["config", "user.name", "ci"],
                ["add", "-A"], ["commit", "-qm", f"tiny profile, cpu.isa {level}"]):  # fmt: skip
        run(["git", *git], dest, env)  # dvclive logs against a commit
    return dest


def output_hashes(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {
        out["path"]: out.get("md5", "")
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
        if out["path"] not in TIMING
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    base = {**os.environ, "PYTHONPATH": ""}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base['PATH']}"
    runs = [(level, n, False) for level in ("avx2", "native") for n in sorted({1, len(cores)})]
    runs.append(("avx2", 1, True))
    results = {}
    with tempfile.TemporaryDirectory(prefix="ftuseg-portability-") as tmp:
        for k, (level, n, hostile) in enumerate(runs):
            env = {**base, **(CONTRARY_ENVIRONMENT if hostile else {})}
            repo = project_copy(Path(tmp) / f"run{k}", env, level)
            name = f"{level}, {n} core(s){', hostile environment' if hostile else ''}"
            print(f"[{k + 1}/{len(runs)}] {name} ...", flush=True)
            run([sys.executable, "-m", "dvc", "repro", "submit"], repo, env, set(cores[:n]))
            results[name] = output_hashes(repo)
    reference = results[f"avx2, {len(cores)} core(s)"]
    report = {"cores": len(cores), "reference": f"avx2, {len(cores)} core(s)", "runs": {}}
    for name, hashes in results.items():
        differ = sorted(p for p in reference if hashes.get(p) != reference[p])
        report["runs"][name] = {"identical": not differ, "differ": differ, "hashes": hashes}
        print(f"{name:<40} {'identical' if not differ else f'{len(differ)} outputs differ'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
