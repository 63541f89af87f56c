"""Stage `oof`: out-of-fold predictions and per-organ Dice of every model at threshold 0.5."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.core.layout import Layout
from ftuseg.core.stage import group, load_params, make_config, stage_main
from ftuseg.core.utils import write_csv, write_json
from ftuseg.ensemble.oof import run_oof, selection_optimism
from ftuseg.infer.engine import InferenceConfig

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(
    params: Path = Path("params.yaml"),
) -> None:
    p = load_params(params)
    layout = Layout.from_params(p)
    result, table = run_oof(
        layout.raw,
        layout.prepared,
        layout.models,
        group(p, "ensemble")["models"],
        layout.oof,
        make_config(InferenceConfig, p, "inference"),
    )
    folds = [int(k) for k in group(p, "cv")["folds"]]
    for name in result:  # best-epoch selection, measured on each fold's own validation
        runs = [layout.log_dir(name, k) / "metrics.json" for k in folds]
        result[name].update(selection_optimism(runs))
    write_json(layout.metric("oof.json"), result)
    write_csv(layout.metric("oof_per_image.csv"), table)
    for name, m in result.items():
        typer.echo(f"oof {name}: Dice {m['dice']:.4f} over {m['n_images']} images")


if __name__ == "__main__":
    app()
