"""Stage `kernel`: package the ensemble as an offline Kaggle kernel and project its runtime."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.core.layout import Layout
from ftuseg.core.stage import load_params, make_config, stage_main
from ftuseg.core.utils import write_json
from ftuseg.data.prepare import load_folds
from ftuseg.infer.engine import InferenceConfig
from ftuseg.kaggle.bundle import DATASET_DIR, KernelConfig, build_kernel
from ftuseg.kaggle.offline import measure_runtime

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(
    out: Path | None = typer.Option(None, help="instead of the layout's kaggle_kernel"),
    metrics: Path | None = typer.Option(None, help="instead of the layout's metrics/kernel.json"),
    params: Path = Path("params.yaml"),
) -> None:
    p = load_params(params)
    layout = Layout.from_params(p)
    out = out or layout.kernel
    manifest = build_kernel(
        out,
        layout.models,
        layout.ensemble,
        load_folds(layout.prepared),
        make_config(InferenceConfig, p, "inference"),
        make_config(KernelConfig, p, "kernel"),
        project_root=layout.root,
    )
    typer.echo(
        f"kernel: {len(manifest['members'])} checkpoints, wheels {manifest['wheels']} -> {out}"
    )
    runtime = measure_runtime(out / DATASET_DIR)
    write_json(metrics or layout.metric("kernel.json"), runtime)
    typer.echo(
        f"kernel: {runtime['seconds_per_megapixel']} s/MP on {runtime['device']}; "
        f"projected {runtime['projected_total_hours']} h for the ~550 test images "
        f"(limit {runtime['limit_hours']:.0f} h, fits: {runtime['fits_limit']})"
    )


if __name__ == "__main__":
    app()
