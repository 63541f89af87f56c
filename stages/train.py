"""Stage `train@<model>-<fold>`: train one architecture on one fold."""

import sys
from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.augment import AugmentConfig
from ftuseg.distributed import launched_by_torchrun, relaunch
from ftuseg.errors import DataError
from ftuseg.layout import checkpoint_dir
from ftuseg.stage import group, load_params, stage_main
from ftuseg.stain import NormalizeConfig
from ftuseg.train import train_config, train_fold

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(
    model: str = typer.Option(..., help="model name, a key of `models` in params.yaml"),
    fold: int = typer.Option(..., help="validation fold"),
    prepared: Path = Path("data/prepared"),
    models_dir: Path = Path("models"),
    logs_dir: Path = Path("logs/train"),
    state_root: Path = Path("checkpoints"),
    stain_dir: Path = Path("data/stain"),
    params: Path = Path("params.yaml"),
) -> None:
    p = load_params(params)
    nproc = int(group(p, "train").get("nproc", 1))
    if nproc > 1 and not launched_by_torchrun():
        # The same stage command, N processes: relaunch this script under torchrun (DDP).
        sys.exit(relaunch(nproc, [__file__, *sys.argv[1:]]))
    models = group(p, "models")
    if model not in models:
        raise DataError(
            f"params.yaml: no model {model!r} under `models` (have: {', '.join(models)})"
        )
    summary = train_fold(
        prepared,
        model,
        models[model],
        fold,
        train_config(group(p, "train"), models[model]),
        um_per_px=float(group(p, "prepare")["um_per_px"]),
        out_dir=checkpoint_dir(models_dir, model, fold),
        live_dir=logs_dir / model / f"fold{fold}",
        state_dir=state_root / model / f"fold{fold}",
        augment=AugmentConfig(**group(p, "augment")),
        stain_dir=stain_dir,
        normalize=NormalizeConfig(**group(group(p, "stain"), "normalize")),
    )
    typer.echo(f"train {model} fold {fold}: {summary}")


if __name__ == "__main__":
    app()
