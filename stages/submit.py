"""Stage `submit`: predict the test images with the ensemble and write submission.csv."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import pandas as pd
import typer
from rich.progress import track

from ftuseg.ensemble_config import EnsembleConfig
from ftuseg.inference import InferenceConfig
from ftuseg.prepare import load_folds
from ftuseg.stage import group, load_params, make_config, stage_main
from ftuseg.submission import make_submission
from ftuseg.utils import write_csv, write_json

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(
    prepared: Path = Path("data/prepared"),
    models_dir: Path = Path("models"),
    ensemble: Path = Path("data/ensemble.yaml"),
    out: Path = Path("submission.csv"),
    metrics: Path = Path("metrics/test.json"),
    per_image: Path = Path("metrics/test_per_image.csv"),
    params: Path = Path("params.yaml"),
) -> None:
    p = load_params(params)
    submission, result, scores = make_submission(
        group(p, "data")["raw_dir"],
        models_dir,
        EnsembleConfig.load(ensemble),
        load_folds(prepared),
        out,
        make_config(InferenceConfig, p, "inference"),
        progress=lambda rows: track(rows, description="predict test images"),
    )
    write_json(metrics, result)
    # Always written (empty without labels), so DVC finds the output it declares.
    table = scores if scores is not None else pd.DataFrame(columns=["id", "organ", "dice"])
    write_csv(per_image, table.round({"dice": 5}))
    scored = f", test Dice {result['dice']:.4f}" if result.get("scored") else ""
    typer.echo(f"submit: {len(submission)} rows -> {out}{scored}")


if __name__ == "__main__":
    app()
