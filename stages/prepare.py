"""Stage `prepare`: validate raw data, decode masks, resample to the training scale, assign folds."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.prepare import PrepareConfig, prepare
from ftuseg.stage import group, load_params, stage_main

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(out: Path = Path("data/prepared"), params: Path = Path("params.yaml")) -> None:
    p = load_params(params)
    cfg = PrepareConfig(n_folds=len(group(p, "cv")["folds"]), **group(p, "prepare"))
    index = prepare(group(p, "data")["raw_dir"], out, cfg)
    typer.echo(f"prepare: {len(index)} images, {cfg.n_folds} folds, {cfg.um_per_px} µm/px -> {out}")


if __name__ == "__main__":
    app()
