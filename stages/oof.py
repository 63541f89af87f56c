"""Stage `oof`: out-of-fold predictions and per-organ Dice of every model at threshold 0.5."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.inference import InferenceConfig
from ftuseg.oof import run_oof
from ftuseg.stage import group, load_params, make_config, stage_main
from ftuseg.utils import write_csv, write_json

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(
    prepared: Path = Path("data/prepared"),
    models_dir: Path = Path("models"),
    out: Path = Path("data/oof"),
    metrics: Path = Path("metrics/oof.json"),
    per_image: Path = Path("metrics/oof_per_image.csv"),
    params: Path = Path("params.yaml"),
) -> None:
    p = load_params(params)
    result, table = run_oof(
        group(p, "data")["raw_dir"],
        prepared,
        models_dir,
        group(p, "ensemble")["models"],
        out,
        make_config(InferenceConfig, p, "inference"),
    )
    write_json(metrics, result)
    write_csv(per_image, table)
    for name, m in result.items():
        typer.echo(f"oof {name}: Dice {m['dice']:.4f} over {m['n_images']} images")


if __name__ == "__main__":
    app()
