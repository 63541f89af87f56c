"""Stage `unlabeled`: unlabeled target-domain images at the training scale (domain-adversarial
training and pseudo-labels read them; with `train.domain_weight: 0` and `train.pseudo_start: 0`
the stage writes an empty index)."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.prepare import prepare_unlabeled
from ftuseg.stage import group, load_params, stage_main

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(out: Path = Path("data/unlabeled"), params: Path = Path("params.yaml")) -> None:
    p = load_params(params)
    train = group(p, "train")
    used = float(train.get("domain_weight", 0.0)) > 0 or int(train.get("pseudo_start", 0)) > 0
    um_per_px = float(group(p, "prepare")["um_per_px"])
    index = prepare_unlabeled(group(p, "data")["unlabeled_dir"], out, um_per_px, used)
    off = "off (domain_weight 0, pseudo_start 0)"
    state = f"{len(index)} images at {um_per_px} µm/px" if used else off
    typer.echo(f"unlabeled: {state} -> {out}")


if __name__ == "__main__":
    app()
