"""Every `domain` preset runs end to end on training data that is not at 0.4 µm/px.

A user's own H&E at 0.62 µm/px once crashed the `ensemble` stage under the presets without
scale handling (predictions resampled with an assumed 0.4 µm/px, truth with the real size).

CI runs three presets that between them take every code path the eight differ in: `normalize`
(scale handling off, the normalize stage on), `all` (scale handling on, stain copies, the full
augmentation recipe) and `hematoxylin` (a stain reference per organ: the normalize stage, OOF and
the submission each pass the image's organ); `none`, `copies`, `resample`, `scale` and the default
`lean` each switch on a subset of those paths. Set FTUSEG_ALL_PRESETS=1 to run all eight (≈50 s
each on 2 cores).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_pipeline import dvc, make_repo, sh

from ftuseg.data.prepare import read_index
from ftuseg.ensemble.oof_maps import read_oof_map

pytestmark = pytest.mark.e2e

ALL_PRESETS = ("none", "copies", "normalize", "resample", "scale", "lean", "all", "hematoxylin")
CI_PRESETS = ("normalize", "all", "hematoxylin")
PRESETS = ALL_PRESETS if os.environ.get("FTUSEG_ALL_PRESETS") == "1" else CI_PRESETS
PIXEL_SIZE = 0.62  # µm/px of the training images: not the HPA 0.4


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("presets") / "repo")


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_on_training_data_at_another_pixel_size(repo, preset):
    # Reinhard in place of the preset's Vahadane: the same stage and inference paths, a fraction
    # of the fitting time (Vahadane itself: tests/test_augment.py; Macenko cannot fit the H&E
    # reference, a clear error there).
    faster = ["stain.normalize.method=reinhard"] if preset == "normalize" else []
    sh(
        sys.executable, "-m", "ftuseg.cli", "params", f"sample.train_pixel_size={PIXEL_SIZE}",
        "model=unet", f"domain={preset}", "train.epochs=1", *faster, cwd=repo,
    )  # fmt: skip
    dvc("repro", "submit", cwd=repo)
    train = pd.read_csv(repo / "data/sample/train.csv")
    assert set(train["pixel_size"]) == {PIXEL_SIZE}
    # OOF maps live at the training scale of the prepared truth, with or without scale handling
    index = read_index(repo / "data/prepared")
    for row in index.itertuples():
        assert read_oof_map(repo / "data/oof", "unet", row.id).shape == (row.height, row.width)
    ensemble = json.loads((repo / "metrics/ensemble.json").read_text())
    assert ensemble["ensemble"]["n_images"] == len(index)
    test = json.loads((repo / "metrics/test.json").read_text())
    assert test["scored"] is True and test["n_images"] == len(
        pd.read_csv(repo / "data/sample/test.csv")
    )
