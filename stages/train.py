"""Stage `train@<model>-<fold>`: train one architecture on one fold."""

import sys

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.core.errors import DataError
from ftuseg.core.stage import Stage, stage
from ftuseg.domain.augment import AugmentConfig
from ftuseg.domain.normalize import NormalizeConfig
from ftuseg.infer.engine import InferenceConfig
from ftuseg.train.config import RunDirs, train_config
from ftuseg.train.distributed import launched_by_torchrun, relaunch
from ftuseg.train.inputs import TrainData
from ftuseg.train.loop import Recipe, train_fold


@stage
def main(
    s: Stage,
    model: str = typer.Option(..., help="model name, a key of `models` in params.yaml"),
    fold: int = typer.Option(..., help="validation fold"),
) -> None:
    models = s.value("models")
    if model not in models:
        raise DataError(
            f"params.yaml: no model {model!r} under `models` (have: {', '.join(models)})"
        )
    try:
        cfg = train_config(s.value("train"), models[model])
    except (TypeError, ValueError) as err:
        raise DataError(f"params.yaml: train (with models.{model}.train): {err}") from None
    if cfg.nproc > 1 and not launched_by_torchrun():
        # The same stage command, N processes: relaunch this script under torchrun (DDP).
        sys.exit(relaunch(cfg.nproc, [__file__, *sys.argv[1:]]))
    layout = s.layout
    summary = train_fold(
        TrainData.from_layout(layout, um_per_px=float(s.value("prepare.um_per_px"))),
        model,
        models[model],
        fold,
        cfg,
        RunDirs.of(layout, model, fold),
        recipe=Recipe(
            augment=s.config(AugmentConfig, "augment"),
            normalize=s.config(NormalizeConfig, "stain.normalize"),
            inference=s.config(InferenceConfig, "inference"),
        ),
    )
    print(f"train {model} fold {fold}: {summary}")


if __name__ == "__main__":
    main()
