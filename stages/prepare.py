"""Stage `prepare`: validate raw data, decode masks, resample to the training scale, assign folds."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.core.stage import Stage, stage
from ftuseg.data.prepare import PrepareConfig, prepare


@stage
def main(
    s: Stage, out: Path | None = typer.Option(None, help="instead of the layout's data/prepared")
) -> None:
    out = out or s.layout.prepared
    cfg = s.config(PrepareConfig, "prepare", n_folds=len(s.value("cv.folds")))
    index = prepare(s.layout.raw, out, cfg)
    print(f"prepare: {len(index)} images, {cfg.n_folds} folds, {cfg.um_per_px} µm/px -> {out}")


if __name__ == "__main__":
    main()
