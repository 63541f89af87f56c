"""Rehearsal of the `kaggle` chain at the real data sizes, on this machine (CPU).

For each dataset size (``--train-per-organ``, default 3 and 12: 15 and 60 training images), in a
fresh git + DVC repository holding the project: the `rehearsal` profile (conf/profile/
rehearsal.yaml: 3000² HPA-like training images at 0.8 µm/px, 30 HuBMAP-like test images of 1 mm at
each organ's real pixel size, 768² crops, 4 loader workers, HRNet-W32 from a local weights file,
one optimiser step per fold), then every stage alone (`dvc repro -s <stage>`; through `ensemble` at the smaller sizes, the whole
chain at the largest: the test set does not change with the training set) under
`/usr/bin/time`: wall time and peak RSS (the largest single process of the stage, loader
workers included). Then the packaged kernel runs offline (ftuseg.kaggle.offline.run_offline: an
environment holding only torch, torchvision, numpy, pandas; no package index; no network; the
training weights file moved away) and its submission.csv is compared with the pipeline's.

    python benchmarks/rehearsal.py [--train-per-organ 3 12] [--json out.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ftuseg.kaggle.offline import run_offline

ROOT = Path(__file__).resolve().parents[1]
FOLDS = 3  # conf/profile/rehearsal.yaml
MODEL = "hrnet"
DATA_STAGES = ("sample", "prepare", "stain", "normalize", "unlabeled")
LATE_STAGES = ("oof", "ensemble", "submit", "kernel")


def sh(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(
            f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def weights_file(folder: Path) -> Path:
    """HRNet-W32's timm weights, randomly initialised, as the local "pretrained" file."""
    import timm
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hrnet_w32.safetensors"
    torch.manual_seed(0)
    state = timm.create_model("hrnet_w32", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def make_repo(repo: Path, weights: Path, train_per_organ: int) -> None:
    repo.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", "pyproject.toml", "README.md", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("stages", "src", "conf"):
        shutil.copytree(ROOT / name, repo / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))  # fmt: skip
    sh(["git", "init", "-q"], repo)
    sh([sys.executable, "-m", "dvc", "init", "-q"], repo)
    overrides = [
        "profile=rehearsal", f"model={MODEL}", f"models.{MODEL}.weights_file={weights}",
        f"sample.train_per_organ={train_per_organ}",
    ]  # fmt: skip
    sh([sys.executable, "-m", "ftuseg.cli", "params", *overrides], repo)
    # dvclive (and `dvc exp`) want a commit to relate the run to
    for cmd in (["git", "config", "user.email", "rehearsal@example.com"],
                ["git", "config", "user.name", "rehearsal"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "rehearsal"]):  # fmt: skip
        sh(cmd, repo)


def timed_stage(repo: Path, stage: str) -> dict[str, float]:
    """Wall seconds and peak RSS (MiB) of `dvc repro -s stage`."""
    out = repo / ".time"
    started = time.perf_counter()
    sh(["/usr/bin/time", "-o", str(out), "-f", "%e %M",
        sys.executable, "-m", "dvc", "repro", "-s", stage], repo)  # fmt: skip
    wall = time.perf_counter() - started
    _, max_kib = out.read_text().split()[-2:]
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(int(max_kib) / 1024, 1)}


def rehearse(root: Path, train_per_organ: int, weights: Path, whole_chain: bool) -> dict:
    """One dataset size; ``whole_chain``: also submit, kernel and the offline kernel run (the
    test set is the same at every size, so smaller sizes stop after the ensemble)."""
    repo = root / f"repo-{train_per_organ}"
    make_repo(repo, weights, train_per_organ)
    late = LATE_STAGES if whole_chain else LATE_STAGES[:2]
    stages = [*DATA_STAGES, *(f"train@{MODEL}-{f}" for f in range(FOLDS)), *late]
    results: dict = {"train_images": 5 * train_per_organ, "stages": {}}
    for stage in stages:
        print(f"[{5 * train_per_organ} images] {stage} ...", flush=True)
        results["stages"][stage] = timed_stage(repo, stage)
        print(f"    {results['stages'][stage]}", flush=True)
    results["oof"] = json.loads((repo / "metrics/oof.json").read_text())
    if not whole_chain:
        return results
    hidden = weights.with_name("moved-away.safetensors")
    weights.rename(hidden)
    try:
        started = time.perf_counter()
        proc, submission = run_offline(repo / "kaggle_kernel", repo / "data/sample",
                                       root / f"kaggle-{train_per_organ}")  # fmt: skip
        offline_s = time.perf_counter() - started
    finally:
        hidden.rename(weights)
    log = proc.stdout + proc.stderr
    results["offline_kernel"] = {
        "returncode": proc.returncode,
        "wall_s": round(offline_s, 1),
        "submission_identical": proc.returncode == 0
        and submission.read_bytes() == (repo / "submission.csv").read_bytes(),
        "log_tail": log.strip().splitlines()[-8:],
    }
    results["test_images"] = sum(1 for _ in (repo / "data/sample/test_images").iterdir())
    results["kernel_json"] = json.loads((repo / "metrics/kernel.json").read_text())
    results["test_metrics"] = json.loads((repo / "metrics/test.json").read_text())
    bundle = json.loads((repo / "kaggle_kernel/dataset/ftuseg-bundle.json").read_text())
    results["bundled_wheels"] = len(bundle["wheels"])
    params = yaml.safe_load((repo / "params.yaml").read_text())
    results["train"] = {k: params["train"][k] for k in ("crop_size", "batch_size", "max_steps",
                                                         "num_workers")}  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train-per-organ", type=int, nargs="+", default=[3, 12])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="ftuseg-rehearsal-"))
    root.mkdir(parents=True, exist_ok=True)
    weights = weights_file(root / "weights")
    sizes = sorted(args.train_per_organ)
    runs = [rehearse(root, n, weights, whole_chain=n == sizes[-1]) for n in sizes]
    summary: dict = {"runs": runs}
    if len(runs) >= 2:
        small, large = runs[0], runs[-1]
        summary["train_peak_rss_ratio"] = {
            f"{MODEL}-{f}": round(
                large["stages"][f"train@{MODEL}-{f}"]["peak_rss_mib"]
                / small["stages"][f"train@{MODEL}-{f}"]["peak_rss_mib"],
                3,
            )
            for f in range(FOLDS)
        }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
