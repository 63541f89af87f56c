"""Stage `train@<model>-<fold>`: train one architecture on one fold."""

import sys
from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.core.errors import DataError
from ftuseg.core.layout import Layout
from ftuseg.core.stage import group, load_params, make_config, stage_main
from ftuseg.domain.augment import AugmentConfig
from ftuseg.domain.normalize import NormalizeConfig
from ftuseg.infer.engine import InferenceConfig
from ftuseg.train.config import RunDirs, train_config
from ftuseg.train.distributed import launched_by_torchrun, relaunch
from ftuseg.train.inputs import TrainData
from ftuseg.train.loop import train_fold

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(
    model: str = typer.Option(..., help="model name, a key of `models` in params.yaml"),
    fold: int = typer.Option(..., help="validation fold"),
    params: Path = Path("params.yaml"),
) -> None:
    p = load_params(params)
    layout = Layout.from_params(p)
    models = group(p, "models")
    if model not in models:
        raise DataError(
            f"params.yaml: no model {model!r} under `models` (have: {', '.join(models)})"
        )
    try:
        cfg = train_config(group(p, "train"), models[model])
    except (TypeError, ValueError) as err:
        raise DataError(f"params.yaml: train (with models.{model}.train): {err}") from None
    if cfg.nproc > 1 and not launched_by_torchrun():
        # The same stage command, N processes: relaunch this script under torchrun (DDP).
        sys.exit(relaunch(cfg.nproc, [__file__, *sys.argv[1:]]))
    data = TrainData.from_layout(layout, um_per_px=float(group(p, "prepare")["um_per_px"]))
    dirs = RunDirs(
        layout.model_dir(model, fold), layout.log_dir(model, fold), layout.state_dir(model, fold)
    )
    summary = train_fold(
        data,
        model,
        models[model],
        fold,
        cfg,
        dirs,
        augment=AugmentConfig(**group(p, "augment")),
        normalize=NormalizeConfig(**group(group(p, "stain"), "normalize")),
        inference=make_config(InferenceConfig, p, "inference"),
    )
    typer.echo(f"train {model} fold {fold}: {summary}")


if __name__ == "__main__":
    app()
