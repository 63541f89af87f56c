"""Stage `stain`: stain-augmented copies of every prepared training image (staintools)."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.core.layout import Layout
from ftuseg.core.stage import load_params, make_config, stage_main
from ftuseg.core.utils import write_json
from ftuseg.domain.copies import StainAugmentConfig, run_stain_stage

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(
    params: Path = Path("params.yaml"),
) -> None:
    p = load_params(params)
    layout = Layout.from_params(p)
    cfg = make_config(StainAugmentConfig, p, "stain", "augment")
    table = run_stain_stage(layout.prepared, layout.stain, cfg)
    per_image = table.groupby("id")[["fit_s", "copy_s"]].first()
    timing = {
        "images": len(per_image),
        "copies": len(table),
        "fit_seconds_per_image": round(float(per_image["fit_s"].mean()), 4) if len(table) else 0,
        "seconds_per_copy": round(float(per_image["copy_s"].mean()), 4) if len(table) else 0,
    }
    write_json(
        layout.metric("stain.json"), timing
    )  # a measurement: kept out of data/stain, which stays byte-stable
    typer.echo(
        f"stain: {timing['copies']} copies of {timing['images']} images; per image: fit "
        f"{timing['fit_seconds_per_image']:.3f} s, each copy {timing['seconds_per_copy']:.4f} s"
    )


if __name__ == "__main__":
    app()
