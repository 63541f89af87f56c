"""Stage `stain`: stain-augmented copies of every prepared training image (staintools)."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.errors import DataError
from ftuseg.stage import group, load_params, stage_main
from ftuseg.stain import StainAugmentConfig, run_stain_stage
from ftuseg.utils import write_json

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(
    prepared: Path = Path("data/prepared"),
    out: Path = Path("data/stain"),
    metrics: Path = Path("metrics/stain.json"),
    params: Path = Path("params.yaml"),
) -> None:
    try:
        cfg = StainAugmentConfig(**group(group(load_params(params), "stain"), "augment"))
    except TypeError as err:
        raise DataError(f"params.yaml: stain.augment: {err}") from None
    table = run_stain_stage(prepared, out, cfg)
    per_image = table.groupby("id")[["fit_s", "copy_s"]].first()
    timing = {
        "images": len(per_image),
        "copies": len(table),
        "fit_seconds_per_image": round(float(per_image["fit_s"].mean()), 4) if len(table) else 0,
        "seconds_per_copy": round(float(per_image["copy_s"].mean()), 4) if len(table) else 0,
    }
    write_json(metrics, timing)  # a measurement: kept out of data/stain, which stays byte-stable
    typer.echo(
        f"stain: {timing['copies']} copies of {timing['images']} images; per image: fit "
        f"{timing['fit_seconds_per_image']:.3f} s, each copy {timing['seconds_per_copy']:.4f} s"
    )


if __name__ == "__main__":
    app()
