"""Stage `ensemble`: model weights and per-organ thresholds that maximise OOF Dice."""

from pathlib import Path

import typer

from ftuseg.errors import DataError
from ftuseg.evaluation import search_ensemble, write_table
from ftuseg.stage import group, load_params, stage_main
from ftuseg.utils import write_json

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(
    prepared: Path = Path("data/prepared"),
    oof: Path = Path("data/oof"),
    out: Path = Path("data/ensemble.yaml"),
    metrics: Path = Path("metrics/ensemble.json"),
    curves: Path = Path("metrics/plots/thresholds.csv"),
    params: Path = Path("params.yaml"),
) -> None:
    p = load_params(params)
    ens = group(p, "ensemble")
    weights = ens.get("weights") or {}
    unknown = set(weights) - set(ens["models"])
    if unknown:
        raise DataError(
            f"params.yaml: ensemble.weights names models not in ensemble.models: {sorted(unknown)}"
        )
    # Equal weights unless given; the weight search over models lives in the architecture-zoo work.
    weights = {m: float(weights.get(m, 1.0)) for m in ens["models"]}
    config, result, table = search_ensemble(
        group(p, "data")["raw_dir"],
        prepared,
        oof,
        weights,
        ens["thresholds"],
        um_per_px=float(group(p, "prepare")["um_per_px"]),
    )
    config.save(out)
    write_json(metrics, result)
    write_table(curves, table)
    typer.echo(
        f"ensemble: OOF Dice {result['ensemble']['dice']:.4f}, thresholds {config.thresholds}"
    )


if __name__ == "__main__":
    app()
