"""Stage `prepare`: validate raw data, decode masks, resample to the training scale, assign folds."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.core.layout import Layout
from ftuseg.core.stage import group, load_params, stage_main
from ftuseg.data.prepare import PrepareConfig, prepare

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(
    out: Path | None = typer.Option(None, help="instead of the layout's data/prepared"),
    params: Path = Path("params.yaml"),
) -> None:
    p = load_params(params)
    layout = Layout.from_params(p)
    out = out or layout.prepared
    cfg = PrepareConfig(n_folds=len(group(p, "cv")["folds"]), **group(p, "prepare"))
    index = prepare(layout.raw, out, cfg)
    typer.echo(f"prepare: {len(index)} images, {cfg.n_folds} folds, {cfg.um_per_px} µm/px -> {out}")


if __name__ == "__main__":
    app()
