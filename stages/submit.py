"""Stage `submit`: predict the test images with the ensemble and write submission.csv."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import pandas as pd
import typer
from rich.progress import track

from ftuseg.core.layout import Layout
from ftuseg.core.stage import load_params, make_config, stage_main
from ftuseg.core.utils import write_csv, write_json
from ftuseg.data.prepare import load_folds
from ftuseg.infer.engine import InferenceConfig
from ftuseg.infer.members import EnsembleConfig
from ftuseg.infer.submission import make_submission

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(
    params: Path = Path("params.yaml"),
) -> None:
    p = load_params(params)
    layout = Layout.from_params(p)
    out = layout.submission
    submission, result, scores = make_submission(
        layout.raw,
        layout.models,
        EnsembleConfig.load(layout.ensemble),
        load_folds(layout.prepared),
        out,
        make_config(InferenceConfig, p, "inference"),
        progress=lambda rows: track(rows, description="predict test images"),
    )
    write_json(layout.metric("test.json"), result)
    # Always written (empty without labels), so DVC finds the output it declares.
    table = scores if scores is not None else pd.DataFrame(columns=["id", "organ", "dice"])
    write_csv(layout.metric("test_per_image.csv"), table.round({"dice": 5}))
    scored = f", test Dice {result['dice']:.4f}" if result.get("scored") else ""
    typer.echo(f"submit: {len(submission)} rows -> {out}{scored}")


if __name__ == "__main__":
    app()
