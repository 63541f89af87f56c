"""End to end: `dvc repro` on the tiny profile in a fresh git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import dvc_queue
import pandas as pd
import pytest
import yaml

from ftuseg.core import rle
from ftuseg.core.cpu import CONTRARY_ENVIRONMENT
from ftuseg.core.organs import ORGANS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def sh(
    *cmd: str, cwd: Path, env: dict[str, str] | None = None, cpus: set[int] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command; ``env`` adds variables, ``cpus`` restricts the cores it may run on."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, **(env or {})}
    env.pop("DVC_ROOT", None)
    affinity = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    result = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200, preexec_fn=affinity
    )
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def dvc(*args: str, cwd: Path, **kwargs) -> str:
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd, **kwargs).stdout


def ran_stages(output: str) -> set[str]:
    """Stages that `dvc repro` executed, or restored from DVC's run-cache instead of executing."""
    return {
        line.split("'")[1]
        for line in output.splitlines()
        if line.startswith("Running stage") or "is cached - skipping run" in line
    }


DETERMINISTIC_OUTPUTS = (
    "metrics/oof.json",
    "metrics/ensemble.json",
    "metrics/test.json",
    "metrics/test_per_image.csv",
    "metrics/oof_per_image.csv",
    "metrics/plots/thresholds.csv",
    "logs/train/unet/fold0/metrics.json",
    "logs/train/unet/fold1/metrics.json",
    "logs/train/unet/fold1/plots/metrics/train/loss.tsv",
    "logs/train/segformer/fold0/metrics.json",
    "models/unet/fold1/model.safetensors",
    "models/segformer/fold0/model.safetensors",
    "submission.csv",
    "data/ensemble.yaml",
)


def encoder_weights_file(repo: Path, model: str) -> Path:
    """Where the e2e repo's model finds its "pretrained" encoder weights (outside the repo)."""
    return repo.parent / "weights" / f"{model}-encoder.safetensors"


def use_real_scale_code_paths(repo: Path) -> None:
    """The tiny profile of the e2e repo takes the code paths of a real run: both architectures
    start from a local encoder weights file (`pretrained: true` + `weights_file`; the kernel test
    moves the files away, whichever the ensemble keeps) and training reads its crops through 2
    data-loader workers."""
    import torch
    from safetensors.torch import save_file

    from ftuseg.models import build_model

    profile = repo / "conf/profile/tiny.yaml"
    conf = yaml.safe_load(profile.read_text())
    for model, arch in (("unet", "smp_unet"), ("segformer", "segformer")):
        weights = encoder_weights_file(repo, model)
        weights.parent.mkdir(parents=True, exist_ok=True)
        cfg = {**yaml.safe_load((ROOT / f"conf/models/{model}/sample.yaml").read_text()),
               **conf["models"][model], "arch": arch}  # fmt: skip
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the same weights in every e2e repo (runs are compared)
            encoder = build_model(cfg).net.model.encoder
        save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, weights)
        conf["models"][model] = {**conf["models"][model], "pretrained": True,
                                 "weights_file": str(weights)}  # fmt: skip
    conf["train"]["num_workers"] = 2
    profile.write_text("# @package _global_\n" + yaml.safe_dump(conf, sort_keys=False))


def make_repo(repo: Path) -> Path:
    """A fresh git + DVC repository holding the project on the tiny profile."""
    repo.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("stages", "src", "conf"):
        shutil.copytree(
            ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    sh("git", "init", "-q", cwd=repo)
    sh("git", "config", "user.email", "ci@example.com", cwd=repo)
    sh("git", "config", "user.name", "ci", cwd=repo)
    dvc("init", "-q", cwd=repo)
    dvc("config", "hydra.enabled", "true", cwd=repo)
    shutil.copy(ROOT / ".dvcignore", repo / ".dvcignore")
    use_real_scale_code_paths(repo)
    sh(sys.executable, "-m", "ftuseg.cli", "profile", "tiny", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "tiny profile", cwd=repo)
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("e2e") / "repo")


@pytest.fixture(scope="module")
def first_run(repo) -> str:
    return dvc("repro", cwd=repo)


@pytest.fixture(scope="module")
def first_outputs(repo, first_run) -> dict[str, bytes]:
    """The deterministic outputs of the first run, before any test changes the repository."""
    return {rel: (repo / rel).read_bytes() for rel in DETERMINISTIC_OUTPUTS}


def test_repro_runs_every_stage(first_run):
    # The default ensemble has two architectures: each is trained on each fold.
    assert ran_stages(first_run) == {
        "sample", "prepare", "stain", "normalize", "unlabeled", "train@unet-0",
        "train@unet-1", "train@segformer-0", "train@segformer-1", "oof", "ensemble", "submit",
        "kernel",
    }  # fmt: skip


def test_oof_metrics_are_the_means_of_the_per_image_table(repo, first_run):
    oof = json.loads((repo / "metrics/oof.json").read_text())
    per_image = pd.read_csv(repo / "metrics/oof_per_image.csv", dtype={"id": str})
    assert set(oof) == {"unet", "segformer"}
    for name, scores in oof.items():
        rows = per_image[per_image["model"] == name]
        assert scores["n_images"] == len(rows) == 10
        assert scores["dice"] == pytest.approx(rows["dice"].mean(), abs=1e-5)
        for organ, group in rows.groupby("organ"):
            assert scores[f"dice_{organ}"] == pytest.approx(group["dice"].mean(), abs=1e-5)
    assert (repo / "logs/train/unet/fold0/plots/metrics/val/dice.tsv").is_file()


def test_tuned_thresholds_are_the_best_of_the_threshold_curves(repo, first_run):
    """ensemble.yaml's per-organ thresholds, the plotted curves and the reported Dice agree."""
    ensemble = json.loads((repo / "metrics/ensemble.json").read_text())
    config = yaml.safe_load((repo / "data/ensemble.yaml").read_text())
    curves = pd.read_csv(repo / "metrics/plots/thresholds.csv").set_index("threshold")
    per_image = pd.read_csv(repo / "metrics/plots/oof_per_image.csv", dtype={"id": str})
    assert list(curves.columns) == list(ORGANS)
    assert set(config["thresholds"]) == set(ORGANS)
    for organ in ORGANS:
        chosen = config["thresholds"][organ]
        assert curves.loc[chosen, organ] == pytest.approx(curves[organ].max(), abs=1e-5)
        assert ensemble["ensemble"][f"dice_{organ}"] == pytest.approx(
            curves.loc[chosen, organ], abs=1e-4
        )
    assert ensemble["ensemble"]["dice"] == pytest.approx(per_image["dice"].mean(), abs=1e-4)
    assert set(ensemble["single_models"]) == {"unet", "segformer"}
    best = max(ensemble["single_models"], key=lambda n: ensemble["single_models"][n]["dice"])
    assert ensemble["best_single_model"]["name"] == best


def test_searched_weights_are_never_worse_than_equal_weights(repo, first_run):
    """The weight search starts from equal weights and keeps only improvements: on the stored
    OOF maps its objective is at least that of equal weighting."""
    from ftuseg.data.prepare import load_prepared, read_index
    from ftuseg.ensemble.level_table import weights_objective
    from ftuseg.ensemble.oof_maps import read_coverage, read_oof_map

    ensemble = json.loads((repo / "metrics/ensemble.json").read_text())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    models = params["ensemble"]["models"]
    index = read_index(repo / "data/prepared")
    ids, organs = index["id"].tolist(), index["organ"].tolist()
    maps = [[read_oof_map(repo / "data/oof", m, i) for m in models] for i in ids]
    truths = [load_prepared(repo / "data/prepared", i)[1] for i in ids]
    coverage = read_coverage(repo / "data/oof", models)
    grid = params["ensemble"]["thresholds"]
    searched = [ensemble["weights"][m] for m in models]
    assert sum(searched) == pytest.approx(1.0, abs=1e-3)
    equal = weights_objective([1.0] * len(models), maps, truths, organs, grid, coverage)
    assert weights_objective(searched, maps, truths, organs, grid, coverage) >= equal - 1e-9


def test_badcase_gallery_has_the_worst_images_of_every_organ(repo, first_run):
    pictures = sorted(p.name for p in (repo / "metrics/gallery").glob("*.png"))
    assert len(pictures) == 2 * len(ORGANS)  # gallery_worst_k = 2 per organ
    assert {name.split("_")[0] for name in pictures} == set(ORGANS)
    assert "image" in sh(sys.executable, "-m", "dvc", "plots", "show", "--json", cwd=repo).stdout


def test_submission_covers_the_test_set_and_is_scored(repo, first_run):
    test = pd.read_csv(repo / "data/sample/test.csv", dtype={"id": str})
    sub = pd.read_csv(repo / "submission.csv", dtype={"id": str}, keep_default_na=False)
    assert list(sub.columns) == ["id", "rle"]
    assert list(sub["id"]) == list(test["id"])
    for row, text in zip(test.itertuples(), sub["rle"], strict=True):
        assert rle.decode(text, (row.img_height, row.img_width)).shape == (
            row.img_height,
            row.img_width,
        )
    # The reported test Dice, recomputed independently from submission.csv and the labels.
    labels = pd.read_csv(repo / "data/sample/test_labels.csv", dtype={"id": str}).set_index("id")
    dices = []
    for row, text in zip(test.itertuples(), sub["rle"], strict=True):
        shape = (row.img_height, row.img_width)
        pred, truth = rle.decode(text, shape), rle.decode(labels.loc[row.id, "rle"], shape)
        total = pred.sum() + truth.sum()
        dices.append(2.0 * (pred & truth).sum() / total if total else 1.0)
    scored = json.loads((repo / "metrics/test.json").read_text())
    assert scored["scored"] is True and scored["n_images"] == 6  # 4 synthetic + 2 real kidney
    assert test["id"].str.startswith("hubmap_pas_").sum() == 2
    assert scored["dice"] == pytest.approx(sum(dices) / len(dices), abs=1e-5)
    per_image = pd.read_csv(repo / "metrics/test_per_image.csv", dtype={"id": str})
    assert list(per_image["id"]) == list(test["id"])
    assert per_image["dice"].to_numpy() == pytest.approx(dices, abs=1e-5)


def lock_outs(repo: Path) -> dict[str, str]:
    """Output path -> md5 of every stage in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {o["path"]: o["md5"] for stage in lock.values() for o in stage.get("outs", [])}


@pytest.fixture(scope="module")
def first_lock(repo, first_run) -> dict[str, str]:
    """The output hashes of the first run, before any test changes the repository."""
    return lock_outs(repo)


def test_two_runs_from_scratch_give_identical_results(first_lock, first_outputs, tmp_path):
    """The second run sees a hostile environment: the pin makes it irrelevant. It runs the data
    stages and one training per architecture (where numpy, OpenCV and torch kernels all act),
    not the inference stages after them, for CI time. (All 31 outputs, one core against two:
    research/portability.py, which takes longer than CI should.)"""
    other = make_repo(tmp_path / "again")
    dvc("repro", "train@unet-1", "train@segformer-0", cwd=other, env=CONTRARY_ENVIRONMENT)
    # the data stages' outputs (models/ and checkpoints/ hold each repo's weights-file path)
    theirs = {k: v for k, v in lock_outs(other).items() if k.startswith("data/")}
    assert len(theirs) == 5 and {k: first_lock[k] for k in theirs} == theirs, theirs
    for rel in ("logs/train/unet/fold1/metrics.json", "logs/train/segformer/fold0/metrics.json",
                "logs/train/unet/fold1/plots/metrics/train/loss.tsv",
                "models/unet/fold1/model.safetensors", "models/segformer/fold0/model.safetensors"):  # fmt: skip
        assert (other / rel).read_bytes() == first_outputs[rel], rel


def test_second_repro_does_nothing(repo, first_run, first_outputs):
    out = dvc("repro", cwd=repo)
    assert ran_stages(out) == set()
    assert "Data and pipelines are up to date." in out


# One module per stage, each imported by that stage only indirectly (or lazily): editing it
# must make `dvc status` report the stage (its deps in dvc.yaml cover its import closure).
STAGE_PROBES = {
    "sample": "core/rle.py",
    "prepare": "core/scale.py",
    "stain": "data/prepare.py",
    "normalize": "core/scale.py",
    "unlabeled": "core/scale.py",
    "train@unet-0": "train/distributed.py",
    "oof": "domain/normalize.py",  # imported inside Predictor.from_checkpoints only
    "ensemble": "infer/maps.py",
    "submit": "infer/members.py",
    "kernel": "models/checkpoint.py",
}


def changed_deps(status: dict, stage: str) -> set[str]:
    return {
        dep
        for entry in status.get(stage, [])
        if isinstance(entry, dict)
        for dep in entry.get("changed deps", {})
    }


def test_changing_a_module_a_stage_imports_reruns_that_stage(repo, first_run, first_outputs):
    assert json.loads(dvc("status", "--json", cwd=repo)) == {}
    for stage, module in STAGE_PROBES.items():
        path = repo / "src/ftuseg" / module
        original = path.read_bytes()
        path.write_bytes(original + b"\n# an edit\n")
        try:
            status = json.loads(dvc("status", "--json", cwd=repo))
        finally:
            path.write_bytes(original)
        rel = f"src/ftuseg/{module}"
        covering = {d for d in changed_deps(status, stage) if rel == d or rel.startswith(d + "/")}
        assert covering, f"editing {rel} leaves stage {stage} up to date: {status}"
        if module == "infer/maps.py":  # the data stages never run the engine's map arithmetic
            data_stages = {"sample", "prepare", "stain", "normalize", "unlabeled"}
            assert not data_stages & set(status), status
    assert json.loads(dvc("status", "--json", cwd=repo)) == {}


def test_remote_push_fresh_clone_pull_recomputes_nothing(repo, first_run, first_outputs, tmp_path):
    store = tmp_path / "store"
    dvc("remote", "add", "-d", "local", str(store), cwd=repo)
    dvc("push", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "pipeline results", cwd=repo)
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    dvc("pull", cwd=clone)
    out = dvc("repro", cwd=clone)
    assert ran_stages(out) == set()
    assert (clone / "submission.csv").read_bytes() == first_outputs["submission.csv"]
    assert list((clone / "kaggle_kernel/dataset/models").rglob("*.safetensors"))


def exp_rows(repo: Path) -> dict[str, dict]:
    """`dvc exp show --json` flattened: experiment name -> its data (params, metrics)."""
    shown = json.loads(dvc("exp", "show", "--json", cwd=repo))
    return {
        exp["name"]: exp["data"]
        for rev in shown
        for group in rev.get("experiments") or []
        for exp in group.get("revs", [])
        if exp.get("name")
    }


def test_model_sweep_is_queued_and_compared_on_per_organ_oof_dice(repo, first_run):
    """`dvc exp run --queue -S 'model=a,b'`: one experiment per architecture, each running the
    chain up to OOF for that architecture alone; `dvc exp show` compares them per organ. The two are the
    first run's architectures, so each experiment restores its training from DVC's run-cache
    (training a new architecture through DVC: the exp-run and architecture tests below; every
    architecture's training: tests/test_zoo.py)."""
    dvc("exp", "run", "--queue", "-S", "model=unet,segformer", "oof", cwd=repo)
    # The two experiments side by side; the workers are stopped however the wait ends.
    with dvc_queue.running(repo, jobs=2, log=repo.parent / "queue.log"):
        status = dvc_queue.wait(repo, timeout=600)
    assert status.count("Success") == 2, status
    by_model = {}
    for data in exp_rows(repo).values():
        params = data["params"]["params.yaml"]["data"]
        oof = data["metrics"]["metrics/oof.json"]["data"]
        by_model[tuple(params["ensemble"]["models"])] = oof
    assert {("unet",), ("segformer",)} <= set(by_model), by_model
    for (name,), oof in [(k, v) for k, v in by_model.items() if k in {("unet",), ("segformer",)}]:
        assert set(oof) == {name}
        assert {f"dice_{organ}" for organ in ORGANS} <= set(oof[name])


def test_exp_run_with_one_model_runs_the_chain_for_it_alone(repo, first_run):
    out = dvc(
        "exp", "run", "--temp", "-S", "model=segformer", "-n", "only-segformer", "submit", cwd=repo
    )
    stages = ran_stages(out)
    # segformer's training is up to date from the committed run; only its chain re-runs
    assert {"oof", "ensemble", "submit"} <= stages
    assert not any(s.startswith("train@") for s in stages)
    assert "Stage 'train@segformer-0' didn't change" in out
    data = exp_rows(repo)["only-segformer"]
    assert data["params"]["params.yaml"]["data"]["ensemble"]["models"] == ["segformer"]
    assert set(data["metrics"]["metrics/oof.json"]["data"]) == {"segformer"}
    assert data["metrics"]["metrics/ensemble.json"]["data"]["weights"] == {"segformer": 1.0}


def test_changing_one_architecture_reruns_only_its_stages(repo, first_run, first_outputs):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["segformer"]["decoder_channels"] = 24
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc("repro", cwd=repo)
    assert ran_stages(out) == {
        "train@segformer-0", "train@segformer-1", "oof", "ensemble", "submit", "kernel"
    }  # fmt: skip
    assert "Stage 'train@unet-0' didn't change" in out


def test_changing_a_training_param_invalidates_only_the_train_stages(repo, first_run):
    """A `train` param is a dep of every train stage and of nothing upstream. (That a changed
    train stage re-runs its whole chain is what the architecture test above runs for real.)"""
    path = repo / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    params["train"]["lr"] = params["train"]["lr"] * 0.37
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = json.loads(dvc("status", "--json", cwd=repo))
    finally:
        path.write_text(original)
    trains = {f"train@{m}-{f}" for m in ("unet", "segformer") for f in (0, 1)}
    assert trains <= set(status), status
    for stage in trains:  # reported as a changed `train` group of params.yaml
        groups = [
            e["changed deps"]["params.yaml"]
            for e in status[stage]
            if isinstance(e, dict) and "params.yaml" in e.get("changed deps", {})
        ]
        assert groups and "train" in groups[0], status[stage]
    assert not {
        "sample",
        "prepare",
        "stain",
        "normalize",
        "unlabeled",
        "oof",
        "ensemble",
        "submit",
        "kernel",
    } & set(status)


# ------------------------------------------------------------------------------ Kaggle kernel


def test_kernel_folder_is_ready_to_push(repo, first_run):
    kernel = repo / "kaggle_kernel"
    meta = json.loads((kernel / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False and meta["is_private"] is True
    assert meta["competition_sources"] == ["hubmap-organ-segmentation"]
    assert meta["dataset_sources"] == [
        json.loads((kernel / "dataset/dataset-metadata.json").read_text())["id"]
    ]
    assert (kernel / meta["code_file"]).is_file()
    manifest = json.loads((kernel / "dataset/ftuseg-bundle.json").read_text())
    ensemble = yaml.safe_load((repo / "data/ensemble.yaml").read_text())
    assert len(manifest["members"]) == 2 * len(ensemble["members"])  # weighted models x 2 folds
    assert any(w.startswith("ftuseg-") for w in manifest["wheels"])
    assert list((kernel / "dataset/models").rglob("*.safetensors"))
    runtime = json.loads((repo / "metrics/kernel.json").read_text())
    groups = runtime["projection"]
    assert sum(g["count"] for g in groups) == pytest.approx(529)
    for g in groups:  # each group's total is its measured probe times its image count
        assert g["seconds_each"] > 0
        assert g["seconds_total"] == pytest.approx(g["seconds_each"] * g["count"], abs=0.1)
    total_s = sum(g["seconds_total"] for g in groups)
    assert runtime["projected_total_hours"] == pytest.approx(total_s / 3600, abs=1e-3)
    assert runtime["fits_limit"] == (total_s < 9 * 3600) and runtime["limit_hours"] == 9


def test_packaged_kernel_runs_offline_and_matches_the_pipeline(repo, first_run, tmp_path):
    """The kernel as Kaggle runs it (ftuseg.kaggle.offline.run_offline): inputs under an input root, a
    fresh environment holding only torch, torchvision, numpy, pandas and their dependencies
    (everything else from the bundled wheels), pip with no index, no network, no Hugging Face
    cache, the encoder weights file of training moved away; same submission as `dvc repro`."""
    from ftuseg.kaggle.offline import run_offline

    # The training machine's encoder weights are gone: loading must not need them.
    members = sorted(p.name for p in (repo / "kaggle_kernel/dataset/models").iterdir())
    assert members
    for model in members:
        meta = json.loads(
            (repo / f"kaggle_kernel/dataset/models/{model}/fold0/model.json").read_text()
        )
        assert meta["model_cfg"]["weights_file"] == str(encoder_weights_file(repo, model))
    folder = encoder_weights_file(repo, "unet").parent
    hidden = folder.with_name("moved-away")
    folder.rename(hidden)
    try:
        result, submission = run_offline(
            repo / "kaggle_kernel", repo / "data/sample", tmp_path / "kaggle", timeout=900
        )
    finally:
        hidden.rename(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    log = result.stdout + result.stderr
    assert f"imported from {tmp_path / 'kaggle/working/ftuseg-packages'}" in log
    # The environment held only the Kaggle base: timm came from the bundle, torch from the base.
    assert not (tmp_path / "kaggle/kaggle-base/timm").exists()
    assert f"from {tmp_path / 'kaggle/working/ftuseg-packages/timm'}" in log
    assert f"from {tmp_path / 'kaggle/kaggle-base/torch'}" in log
    manifest = json.loads((repo / "kaggle_kernel/dataset/ftuseg-bundle.json").read_text())
    bundled = {r.split("==")[0] for r in manifest["bundled"]}
    assert {"timm", "segmentation-models-pytorch", "safetensors", "tifffile"} <= bundled
    assert not {"torch", "numpy", "pandas", "torchvision"} & bundled
    n_test = len(pd.read_csv(repo / "data/sample/test.csv"))
    assert log.count("s/MP") == n_test  # runtime logged per test image
    kernel_sub = submission.read_text()
    assert kernel_sub == (repo / "submission.csv").read_text()


def test_kaggle_cli_calls_and_no_credential_leaks(repo, first_run, tmp_path):
    secret, file_secret = "KEY-7f3a9c1e5b", "FILEKEY-2d8e6b4a90"
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle/kaggle.json").write_text(json.dumps({"username": "alice", "key": file_secret}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    fake = bin_dir / "kaggle"
    fake.write_text(
        "#!/usr/bin/env python3\n"
        "import sys, zipfile, pathlib\n"
        f"open({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "a = sys.argv[1:]\n"
        "if a[:2] == ['competitions', 'download']:\n"
        "    d = pathlib.Path(a[a.index('-p') + 1])\n"
        "    with zipfile.ZipFile(d / 'hubmap-organ-segmentation.zip', 'w') as z:\n"
        "        z.writestr('test.csv', 'id,organ\\n')\n"
        "if a[:2] == ['datasets', 'status']:\n"
        "    sys.exit(1)\n"
    )
    fake.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(home),
        "KAGGLE_USERNAME": "alice",
        "KAGGLE_KEY": secret,
    }
    env.pop("KAGGLE_CONFIG_DIR", None)

    def cli(*args: str, cwd: Path = repo) -> str:
        r = subprocess.run(
            [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
        )
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout + r.stderr

    rebuilt = tmp_path / "kernel"
    logs = cli(
        "stages/kernel.py", "--out", str(rebuilt), "--metrics", str(tmp_path / "kernel.json")
    )
    logs += cli("-m", "ftuseg.cli", "kaggle", "download", "--dest", str(tmp_path / "raw"))
    logs += cli("-m", "ftuseg.cli", "kaggle", "push", "--kernel-dir", str(rebuilt), "-m", "v2")
    dry = cli(
        "-m", "ftuseg.cli", "kaggle", "push", "--kernel-dir", str(rebuilt), "--dry-run", "--version"
    )
    assert (tmp_path / "raw/test.csv").is_file() and not (
        tmp_path / "raw/hubmap-organ-segmentation.zip"
    ).exists()
    assert calls.read_text().splitlines() == [
        f"competitions download -c hubmap-organ-segmentation -p {tmp_path / 'raw'}",
        "datasets status your-kaggle-username/ftuseg-hubmap-models",
        f"datasets create -p {rebuilt / 'dataset'} -r zip",
        f"kernels push -p {rebuilt}",
    ]
    assert f"$ kaggle datasets version -p {rebuilt / 'dataset'} -r zip -m 'ftuseg update'" in dry
    for text in (logs, dry):
        assert secret not in text and file_secret not in text
    for path in [*rebuilt.rglob("*"), tmp_path / "kernel.json"]:
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".whl":
                with zipfile.ZipFile(path) as z:
                    data = b"".join(z.read(n) for n in z.namelist())
            assert secret.encode() not in data and file_secret.encode() not in data, path
