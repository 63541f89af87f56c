"""Stage `ensemble`: model weights and per-organ thresholds that maximise OOF Dice, plus the
plots and the badcase gallery."""

import _checkout  # noqa: F401  (before any ftuseg import)
import pandas as pd

from ftuseg.core.errors import DataError
from ftuseg.core.stage import Stage, stage
from ftuseg.core.utils import write_csv, write_json
from ftuseg.ensemble.gallery import write_gallery
from ftuseg.ensemble.oof_maps import read_coverage
from ftuseg.ensemble.search import search_ensemble


@stage
def main(s: Stage) -> None:
    layout = s.layout
    plots = layout.metric("plots")
    models = list(s.value("ensemble.models"))
    fixed = s.value("ensemble.weights") or {}  # null or {}: searched
    unknown = set(fixed) - set(models)
    if unknown:
        raise DataError(
            f"params.yaml: ensemble.weights names models not in ensemble.models: {sorted(unknown)}"
        )
    # Only the post-processing of the engine matters here: no torch, no model zoo.
    min_component_um2 = float(s.value("inference.min_component_um2"))
    result = search_ensemble(
        layout.raw,
        layout.prepared,
        layout.oof,
        models,
        s.value("ensemble.thresholds"),
        um_per_px=float(s.value("prepare.um_per_px")),
        fixed_weights=fixed,
        min_component_um2=min_component_um2,
        untuned_threshold=s.value("ensemble.untuned_threshold"),
    )
    result.config.save(layout.ensemble)
    write_json(layout.metric("ensemble.json"), result.metrics)
    write_csv(plots / "thresholds.csv", result.curves)
    dice = result.metrics["ensemble"]
    organs = [k.removeprefix("dice_") for k in dice if k.startswith("dice_")]
    organ_dice = pd.DataFrame({"organ": organs, "dice": [dice[f"dice_{o}"] for o in organs]})
    write_csv(plots / "organ_dice.csv", organ_dice)
    write_csv(plots / "oof_per_image.csv", result.per_image)
    write_gallery(
        layout.raw,
        layout.oof,
        models,
        [result.config.members.get(m, 0.0) for m in models],
        result.config.thresholds,
        result.per_image,
        layout.metric("gallery"),
        worst_k=int(s.value("ensemble.gallery_worst_k")),
        min_component_um2=min_component_um2,
        coverage=read_coverage(layout.oof, models),
    )
    best = result.metrics["best_single_model"]
    print(
        f"ensemble: OOF Dice {dice['dice']:.4f} (best single {best['name']}: "
        f"{best['dice']:.4f}), weights {result.metrics['weights']}, "
        f"thresholds {result.config.thresholds}"
    )


if __name__ == "__main__":
    main()
