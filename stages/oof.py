"""Stage `oof`: out-of-fold predictions and per-organ Dice of every model at threshold 0.5."""

import _checkout  # noqa: F401  (before any ftuseg import)

from ftuseg.core.stage import Stage, stage
from ftuseg.core.utils import write_csv, write_json
from ftuseg.ensemble.oof import run_oof, selection_optimism
from ftuseg.infer.engine import InferenceConfig


@stage
def main(s: Stage) -> None:
    layout = s.layout
    result, table = run_oof(
        layout.raw,
        layout.prepared,
        layout.models,
        s.value("ensemble.models"),
        layout.oof,
        s.config(InferenceConfig, "inference"),
    )
    for name in result:  # best-epoch selection, measured on each fold's own validation
        runs = [layout.log_dir(name, int(k)) / "metrics.json" for k in s.value("cv.folds")]
        result[name].update(selection_optimism(runs))
    write_json(layout.metric("oof.json"), result)
    write_csv(layout.metric("oof_per_image.csv"), table)
    for name, m in result.items():
        print(f"oof {name}: Dice {m['dice']:.4f} over {m['n_images']} images")


if __name__ == "__main__":
    main()
