"""Stage `train@<model>-<fold>`: train one architecture on one fold."""

import sys
from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.augment import AugmentConfig
from ftuseg.distributed import launched_by_torchrun, relaunch
from ftuseg.errors import DataError
from ftuseg.inference import InferenceConfig
from ftuseg.layout import checkpoint_dir
from ftuseg.stage import group, load_params, make_config, stage_main
from ftuseg.stain import NormalizeConfig
from ftuseg.train import RunDirs, TrainData, train_config, train_fold

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
    normalized_dir: Path = Path("data/normalized"),
    unlabeled_dir: Path = Path("data/unlabeled"),
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
    data = TrainData(
        prepared,
        Path(group(p, "data")["raw_dir"]) / "train.csv",
        um_per_px=float(group(p, "prepare")["um_per_px"]),
        stain=stain_dir,
        normalized=normalized_dir,
        unlabeled=unlabeled_dir,
    )
    dirs = RunDirs(
        checkpoint_dir(models_dir, model, fold),
        logs_dir / model / f"fold{fold}",
        state_root / model / f"fold{fold}",
    )
    summary = train_fold(
        data,
        model,
        models[model],
        fold,
        train_config(group(p, "train"), models[model]),
        dirs,
        augment=AugmentConfig(**group(p, "augment")),
        normalize=NormalizeConfig(**group(group(p, "stain"), "normalize")),
        inference=make_config(InferenceConfig, p, "inference"),
    )
    typer.echo(f"train {model} fold {fold}: {summary}")


if __name__ == "__main__":
    app()
