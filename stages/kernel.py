"""Stage `kernel`: package the ensemble as an offline Kaggle kernel and project its runtime."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.core.stage import Stage, stage
from ftuseg.core.utils import write_json
from ftuseg.data.prepare import load_folds
from ftuseg.infer.engine import InferenceConfig
from ftuseg.kaggle.bundle import DATASET_DIR, KernelConfig, build_kernel
from ftuseg.kaggle.offline import measure_runtime


@stage
def main(
    s: Stage,
    out: Path | None = typer.Option(None, help="instead of the layout's kaggle_kernel"),
    metrics: Path | None = typer.Option(None, help="instead of the layout's metrics/kernel.json"),
) -> None:
    layout = s.layout
    out = out or layout.kernel
    manifest = build_kernel(
        out,
        layout.models,
        layout.ensemble,
        load_folds(layout.prepared),
        s.config(InferenceConfig, "inference"),
        s.config(KernelConfig, "kernel"),
        project_root=layout.root,
    )
    print(f"kernel: {len(manifest['members'])} checkpoints, wheels {manifest['wheels']} -> {out}")
    runtime = measure_runtime(out / DATASET_DIR)
    write_json(metrics or layout.metric("kernel.json"), runtime)
    print(
        f"kernel: {runtime['seconds_per_megapixel']} s/MP on {runtime['device']}; "
        f"projected {runtime['projected_total_hours']} h for the ~550 test images "
        f"(limit {runtime['limit_hours']:.0f} h, fits: {runtime['fits_limit']})"
    )


if __name__ == "__main__":
    main()
