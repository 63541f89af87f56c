"""Stage `unlabeled`: unlabeled target-domain images at the training scale (domain-adversarial
training and pseudo-labels read them; with `train.domain_weight: 0` and `train.pseudo_start: 0`
the stage writes an empty index)."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.core.errors import DataError
from ftuseg.core.layout import Layout
from ftuseg.core.stage import group, load_params, stage_main, value
from ftuseg.data.prepare import prepare_unlabeled

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(params: Path = Path("params.yaml")) -> None:
    p = load_params(params)
    layout = Layout.from_params(p)
    out = layout.unlabeled
    used = float(value(p, "train.domain_weight")) > 0 or int(value(p, "train.pseudo_start")) > 0
    um_per_px = float(group(p, "prepare")["um_per_px"])
    if used and layout.unlabeled_source is None:
        raise DataError(
            "params.yaml: data.unlabeled_dir is not set but the unlabeled images are used"
        )
    index = prepare_unlabeled(layout.unlabeled_source or Path(), out, um_per_px, used)
    off = "off (domain_weight 0, pseudo_start 0)"
    state = f"{len(index)} images at {um_per_px} µm/px" if used else off
    typer.echo(f"unlabeled: {state} -> {out}")


if __name__ == "__main__":
    app()
