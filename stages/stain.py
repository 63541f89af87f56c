"""Stage `stain`: stain-augmented copies of every prepared training image (staintools)."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.errors import DataError
from ftuseg.stage import group, load_params, stage_main
from ftuseg.stain import StainAugmentConfig, run_stain_stage

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(
    prepared: Path = Path("data/prepared"),
    out: Path = Path("data/stain"),
    params: Path = Path("params.yaml"),
) -> None:
    try:
        cfg = StainAugmentConfig(**group(group(load_params(params), "stain"), "augment"))
    except TypeError as err:
        raise DataError(f"params.yaml: stain.augment: {err}") from None
    table = run_stain_stage(prepared, out, cfg)
    if len(table):
        per_image = table.groupby("id")[["fit_s", "copy_s"]].first()
        typer.echo(
            f"stain: {len(table)} copies of {len(per_image)} images; per image: fit "
            f"{per_image['fit_s'].mean():.3f} s, each copy {per_image['copy_s'].mean():.4f} s"
        )


if __name__ == "__main__":
    app()
