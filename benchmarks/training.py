"""Training wall time: 1 vs 2 processes, and a resumed run vs a full run (tiny profile data).

Baselines, measured in the same run: a single process with all CPU threads, and a full
uninterrupted training. Compared: 2 DDP processes (gloo, one thread each) with the same global
batch, and the second half of a run resumed from its persisted state after the first half.

    python benchmarks/training.py [--epochs 6]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ftuseg.data.prepare import PrepareConfig, prepare
from ftuseg.data.sample import SampleConfig, generate
from ftuseg.train.config import RunDirs, TrainConfig
from ftuseg.train.inputs import TrainData
from ftuseg.train.loop import train_fold
from ftuseg.train.resume import STATE_JSON

MODEL = {
    "arch": "smp_unet",
    "encoder": "resnet18",
    "decoder_channels": [32, 16, 16, 8, 8],
}  # tiny profile


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    cfg = TrainConfig(
        epochs=args.epochs, batch_size=4, crop_size=64, samples_per_image=8, threads=threads
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root / "raw", SampleConfig(train_per_organ=2, test_per_organ=0, field_um=160))
        prepare(root / "raw", root / "prep", PrepareConfig(um_per_px=4.0, n_folds=2))

        data = TrainData(root / "prep", root / "raw" / "train.csv", 4.0)

        def single(out: Path, c: TrainConfig, state: Path | None = None) -> float:
            start = time.perf_counter()
            train_fold(data, "unet", MODEL, 0, c, RunDirs(out / "ckpt", out / "live", state))
            return time.perf_counter() - start

        t_one = single(root / "one", cfg)
        # The same run in another process: train_fold from a JSON payload (prepared folder,
        # raw train.csv, model, train config, output folder, state folder or null).
        script = root / "ddp.py"
        script.write_text(
            "import json, sys\nfrom pathlib import Path\n"
            "from ftuseg.train.config import RunDirs, TrainConfig\n"
            "from ftuseg.train.inputs import TrainData\nfrom ftuseg.train.loop import train_fold\n"
            "p, csv, m, c, out, state = json.loads(sys.argv[1])\n"
            "dirs = RunDirs(Path(out, 'ckpt'), Path(out, 'live'), state and Path(state))\n"
            "train_fold(TrainData(Path(p), Path(csv), 4.0), 'unet', m, 0, TrainConfig(**c), dirs)\n"
        )

        def payload(c: TrainConfig, out: Path, state: Path | None = None) -> str:
            return json.dumps([str(data.prepared), str(data.train_csv), MODEL, c.__dict__,
                               str(out), state and str(state)])  # fmt: skip

        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
             str(script), payload(replace(cfg, threads=1), root / "two")],
            check=True, capture_output=True,
        )  # fmt: skip
        t_two = time.perf_counter() - start

        # Resume: a full run as the baseline, then the same run killed after half its epochs
        # and started again; the second start is what a resumed `dvc repro` costs.
        t_full = single(root / "full", cfg, root / "full_state")
        interrupted, istate = root / "interrupted", root / "istate"
        proc = subprocess.Popen(
            [sys.executable, str(script), payload(cfg, interrupted, istate)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        state_json = istate / STATE_JSON
        while proc.poll() is None:
            if (
                state_json.is_file()
                and json.loads(state_json.read_text())["epoch"] >= args.epochs // 2
            ):
                proc.kill()
                break
            time.sleep(0.01)
        proc.wait()
        reached = json.loads(state_json.read_text())["epoch"]
        shutil.rmtree(interrupted / "ckpt", ignore_errors=True)  # as DVC clears the stage's outputs
        shutil.rmtree(interrupted / "live", ignore_errors=True)
        t_resumed = single(interrupted, cfg, istate)

    print(
        f"tiny profile: 10 images, {args.epochs} epochs, global batch 4, crop 64, {threads} CPU threads"
    )
    print(f"1 process ({threads} threads): {t_one:6.2f} s   [baseline]")
    print(
        f"2 processes (gloo, 1 thread each): {t_two:6.2f} s   ratio {t_two / t_one:.2f} (incl. torchrun start-up)"
    )
    print(f"full run: {t_full:6.2f} s   [baseline]")
    print(
        f"resumed after epoch {reached}/{args.epochs}: {t_resumed:6.2f} s   ratio {t_resumed / t_full:.2f}"
    )


if __name__ == "__main__":
    main()
