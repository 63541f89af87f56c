"""Stage `submit`: predict the test images with the ensemble and write submission.csv."""

import _checkout  # noqa: F401  (before any ftuseg import)
import pandas as pd
from rich.progress import track

from ftuseg.core.stage import Stage, stage
from ftuseg.core.utils import write_csv, write_json
from ftuseg.data.prepare import load_folds
from ftuseg.infer.engine import InferenceConfig
from ftuseg.infer.members import EnsembleConfig
from ftuseg.infer.submission import make_submission


@stage
def main(s: Stage) -> None:
    layout = s.layout
    submission, result, scores = make_submission(
        layout.raw,
        layout.models,
        EnsembleConfig.load(layout.ensemble),
        load_folds(layout.prepared),
        layout.submission,
        s.config(InferenceConfig, "inference"),
        progress=lambda rows: track(rows, description="predict test images"),
    )
    write_json(layout.metric("test.json"), result)
    # Always written (empty without labels), so DVC finds the output it declares.
    table = scores if scores is not None else pd.DataFrame(columns=["id", "organ", "dice"])
    write_csv(layout.metric("test_per_image.csv"), table.round({"dice": 5}))
    scored = f", test Dice {result['dice']:.4f}" if result.get("scored") else ""
    print(f"submit: {len(submission)} rows -> {layout.submission}{scored}")


if __name__ == "__main__":
    main()
