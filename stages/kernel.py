"""Stage `kernel`: package the ensemble as an offline Kaggle kernel and project its runtime."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.inference import InferenceConfig
from ftuseg.kaggle import DATASET_DIR, KernelConfig, build_kernel, measure_runtime
from ftuseg.prepare import load_folds
from ftuseg.stage import load_params, make_config, stage_main
from ftuseg.utils import write_json

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(
    prepared: Path = Path("data/prepared"),
    models_dir: Path = Path("models"),
    ensemble: Path = Path("data/ensemble.yaml"),
    out: Path = Path("kaggle_kernel"),
    metrics: Path = Path("metrics/kernel.json"),
    params: Path = Path("params.yaml"),
) -> None:
    p = load_params(params)
    manifest = build_kernel(
        out,
        models_dir,
        ensemble,
        load_folds(prepared),
        make_config(InferenceConfig, p, "inference"),
        make_config(KernelConfig, p, "kernel"),
        project_root=Path("."),
    )
    typer.echo(
        f"kernel: {len(manifest['members'])} checkpoints, wheels {manifest['wheels']} -> {out}"
    )
    runtime = measure_runtime(out / DATASET_DIR)
    write_json(metrics, runtime)
    typer.echo(
        f"kernel: {runtime['seconds_per_megapixel']} s/MP on {runtime['device']}; "
        f"projected {runtime['projected_total_hours']} h for the ~550 test images "
        f"(limit {runtime['limit_hours']:.0f} h, fits: {runtime['fits_limit']})"
    )


if __name__ == "__main__":
    app()
