"""The layout object names every stage folder, and dvc.yaml declares the same ones."""

from pathlib import Path

import pytest
import yaml

from ftuseg.core.errors import DataError
from ftuseg.core.layout import Layout, checkpoint_dir, copy_path, prepared_path
from ftuseg.train.inputs import TrainData

ROOT = Path(__file__).resolve().parents[1]


def declared_outputs() -> set[str]:
    """Every out, metric and plot path of dvc.yaml, with the train matrix's first item filled in."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    found = set()
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []):
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                found.add(path.replace("${item.model}", "unet").replace("${item.fold}", "0"))
    return found


def layout_outputs(layout: Layout) -> set[str]:
    folders = [
        layout.sample, layout.prepared, layout.stain, layout.normalized, layout.unlabeled,
        layout.oof, layout.ensemble, layout.kernel, layout.submission,
        layout.model_dir("unet", 0), layout.state_dir("unet", 0),
        layout.log_dir("unet", 0) / "metrics.json", layout.log_dir("unet", 0) / "plots/metrics",
    ]  # fmt: skip
    metrics = ["stain.json", "oof.json", "oof_per_image.csv", "ensemble.json", "plots", "gallery"]
    metrics += ["test.json", "test_per_image.csv", "kernel.json"]
    return {p.as_posix() for p in folders} | {layout.metric(m).as_posix() for m in metrics}


def test_dvc_yaml_declares_exactly_the_layouts_outputs():
    assert declared_outputs() == layout_outputs(Layout(Path()))


def test_the_layout_reads_its_raw_and_unlabeled_folders_from_params():
    layout = Layout.from_params({"data": {"raw_dir": "data/raw", "unlabeled_dir": "u"}}, "/p")
    assert layout.train_csv == Path("data/raw/train.csv")
    assert layout.unlabeled_source == Path("u")
    assert layout.prepared == Path("/p/data/prepared")
    assert layout.model_dir("unet", 1) == checkpoint_dir(Path("/p/models"), "unet", 1)
    assert Layout.from_params({"data": {"raw_dir": "r"}}).unlabeled_source is None


def test_a_params_file_without_raw_dir_is_a_clear_error():
    with pytest.raises(DataError, match="data.raw_dir"):
        Layout.from_params({"data": {}})


def test_training_data_is_looked_up_in_the_layout():
    layout = Layout(Path("/p"), Path("/raw"))
    data = TrainData.from_layout(layout, 2.0)
    assert (data.prepared, data.stain, data.normalized, data.unlabeled) == (
        layout.prepared, layout.stain, layout.normalized, layout.unlabeled,
    )  # fmt: skip
    assert data.train_csv == Path("/raw/train.csv") and data.um_per_px == 2.0


def test_files_inside_stage_folders():
    assert prepared_path("d", "7", "mask") == Path("d/images/7.mask.npy")
    assert copy_path("s", "7", 2) == Path("s/copies/7_2.npy")
    with pytest.raises(ValueError, match="unknown prepared array"):
        prepared_path("d", "7", "boundary")
