"""The CPU pin: every stage process runs numpy, OpenBLAS, OpenCV, torch, oneDNN and MKL at one
instruction-set level and thread count, whatever the machine offers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftuseg.core.cpu import (
    LEVELS,
    PINNED,
    THREAD_VARIABLES,
    CpuPinError,
    params_path,
    pin_environment,
    pin_from_params,
)

ROOT = Path(__file__).resolve().parents[1]

# What a stage process sees once stages/_checkout.py ran: each library's chosen code path.
PROBE = """
import json, sys
sys.path.insert(0, "stages")
import _checkout  # noqa: F401
import cv2, numpy as np, torch
from numpy._core._multiarray_umath import __cpu_features__
from threadpoolctl import threadpool_info
from ftuseg.core.stage import stage_main
stage_main(lambda: None)()  # what every stage's entry point does first
print(json.dumps({
    "torch": torch.backends.cpu.get_cpu_capability(),
    "torch_threads": torch.get_num_threads(),
    "opencv_threads": cv2.getNumThreads(),
    "ipp": cv2.ipp.getIppVersion(),
    "opencv_avx512_skx": bool(cv2.checkHardwareSupport(256)),  # CV_CPU_AVX512_SKX
    "openblas": [i.get("architecture") for i in threadpool_info() if i["internal_api"] == "openblas"],
    "numpy_x86_v4": bool(__cpu_features__.get("X86_V4")),
}))
"""


def probe(cwd: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_pin_overrides_what_the_environment_had():
    env = {"OPENBLAS_CORETYPE": "SkylakeX", "OMP_NUM_THREADS": "64"}
    pin_environment("avx2", 2, env)
    assert env["OPENBLAS_CORETYPE"] == "Haswell"
    assert all(env[v] == "2" for v in THREAD_VARIABLES)
    assert env[PINNED] == "avx2:2"
    assert {k: env[k] for k in LEVELS["avx2"]} == LEVELS["avx2"]


def test_native_removes_an_inherited_pin():
    env = {}
    pin_environment("avx2", 2, env)
    pin_environment("native", 1, env)
    assert not set(LEVELS["avx2"]) & set(env)
    assert env["OMP_NUM_THREADS"] == "1" and env[PINNED] == "native:1"


@pytest.mark.parametrize(
    ("level", "threads", "message"), [("avx512", 2, "cpu.isa"), ("avx2", 0, "cpu.threads")]
)
def test_bad_settings_are_clear_errors(level, threads, message):
    with pytest.raises(CpuPinError, match=message):
        pin_environment(level, threads, {})


def test_the_params_file_comes_from_the_command_line():
    assert params_path(["--model", "unet"]) == Path("params.yaml")
    assert params_path(["--params", "p.yaml"]) == Path("p.yaml")
    assert params_path(["--params=q.yaml", "--fold", "0"]) == Path("q.yaml")


def test_a_params_file_without_the_cpu_group_is_an_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"data": {"raw_dir": "x"}}))
    with pytest.raises(CpuPinError, match="missing the cpu group"):
        pin_from_params(path)
    assert pin_from_params(tmp_path / "absent.yaml") is None


def test_pinning_after_numpy_is_imported_is_refused():
    code = "import numpy; from ftuseg.core.cpu import pin; pin('avx2', 2)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0 and "numpy already imported" in result.stderr


def test_a_stage_process_runs_every_library_at_avx2_with_the_params_threads(tmp_path):
    """On any x86-64 machine with AVX2 (with or without AVX-512) the same code paths run."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["cpu"] = {"isa": "avx2", "threads": 3}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "stages").symlink_to(ROOT / "stages", target_is_directory=True)
    seen = probe(tmp_path)
    assert seen["torch"] in ("AVX2", "DEFAULT"), seen
    assert seen["torch_threads"] == seen["opencv_threads"] == 3
    assert "AVX-512" not in seen["ipp"], seen
    assert not seen["opencv_avx512_skx"]
    assert all(
        arch in ("Haswell", "Sandybridge", "Nehalem", "Prescott") for arch in seen["openblas"]
    )
    assert not seen["numpy_x86_v4"]
