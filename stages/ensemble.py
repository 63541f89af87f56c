"""Stage `ensemble`: model weights and per-organ thresholds that maximise OOF Dice, plus the
plots and the badcase gallery."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import pandas as pd
import typer

from ftuseg.core.errors import DataError
from ftuseg.core.layout import Layout
from ftuseg.core.stage import group, load_params, stage_main, value
from ftuseg.core.utils import write_csv, write_json
from ftuseg.ensemble.gallery import write_gallery
from ftuseg.ensemble.oof_maps import read_coverage
from ftuseg.ensemble.search import search_ensemble

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(
    params: Path = Path("params.yaml"),
) -> None:
    p = load_params(params)
    layout = Layout.from_params(p)
    raw_dir, oof, plots = layout.raw, layout.oof, layout.metric("plots")
    ens = group(p, "ensemble")
    models = list(ens["models"])
    fixed = value(p, "ensemble.weights") or {}  # null or {}: searched
    unknown = set(fixed) - set(models)
    if unknown:
        raise DataError(
            f"params.yaml: ensemble.weights names models not in ensemble.models: {sorted(unknown)}"
        )
    # Only the post-processing of the engine matters here: no torch, no model zoo.
    min_component_um2 = float(group(p, "inference")["min_component_um2"])
    result = search_ensemble(
        raw_dir,
        layout.prepared,
        oof,
        models,
        ens["thresholds"],
        um_per_px=float(group(p, "prepare")["um_per_px"]),
        fixed_weights=fixed,
        min_component_um2=min_component_um2,
        untuned_threshold=value(p, "ensemble.untuned_threshold"),
    )
    result.config.save(layout.ensemble)
    write_json(layout.metric("ensemble.json"), result.metrics)
    write_csv(plots / "thresholds.csv", result.curves)
    organ_dice = {
        k[len("dice_") :]: v for k, v in result.metrics["ensemble"].items() if k.startswith("dice_")
    }
    write_csv(
        plots / "organ_dice.csv",
        pd.DataFrame({"organ": list(organ_dice), "dice": list(organ_dice.values())}),
    )
    write_csv(plots / "oof_per_image.csv", result.per_image)
    write_gallery(
        raw_dir,
        oof,
        models,
        [result.config.members.get(m, 0.0) for m in models],
        result.config.thresholds,
        result.per_image,
        layout.metric("gallery"),
        worst_k=int(value(p, "ensemble.gallery_worst_k")),
        min_component_um2=min_component_um2,
        coverage=read_coverage(oof, models),
    )
    typer.echo(
        f"ensemble: OOF Dice {result.metrics['ensemble']['dice']:.4f} "
        f"(best single {result.metrics['best_single_model']['name']}: "
        f"{result.metrics['best_single_model']['dice']:.4f}), weights {result.metrics['weights']}, "
        f"thresholds {result.config.thresholds}"
    )


if __name__ == "__main__":
    app()
