"""Stage `normalize`: stain-normalise every prepared image and stain copy once (staintools),
when `stain.normalize.method` is not `none`; training memory-maps the cached results."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.core.layout import Layout
from ftuseg.core.stage import load_params, make_config, stage_main
from ftuseg.domain.normalize import NormalizeConfig, run_normalize_stage

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(
    params: Path = Path("params.yaml"),
) -> None:
    p = load_params(params)
    layout = Layout.from_params(p)
    cfg = make_config(NormalizeConfig, p, "stain", "normalize")
    table = run_normalize_stage(layout.prepared, layout.stain, layout.normalized, cfg)
    if cfg.method == "none":
        typer.echo("normalize: stain.normalize.method is none, nothing to normalise")
    else:
        typer.echo(f"normalize: {len(table)} images and copies normalised ({cfg.method})")


if __name__ == "__main__":
    app()
