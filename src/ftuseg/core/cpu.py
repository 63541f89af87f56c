"""One instruction-set level and one thread count for every stage process.

numpy (SIMD dispatch of its loops), OpenBLAS, OpenCV (its dispatched kernels and Intel IPP),
torch (ATen's CPU capability), oneDNN and MKL each pick their fastest code path for the CPU at
run time, and the paths round differently: a seeded run gave other bytes on a machine with
AVX-512 than on one without. Capped at one common level (AVX2, which every x86-64 machine this
project meets has) and a fixed thread count, every machine runs the same kernels.

The libraries read these settings when they are first imported, so :func:`pin` must run before
numpy, OpenCV or torch are: every stage script calls it through ``stages/_checkout.py``. This
module imports only the standard library and PyYAML for that reason.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping, Sequence
from pathlib import Path

import yaml

# OpenCV's names of the AVX-512 features it dispatches on x86-64 (others warn when disabled).
_OPENCV_AVX512 = "AVX512F,AVX512CD,AVX512BW,AVX512DQ,AVX512VL,AVX512-COMMON,AVX512-SKX,AVX512-CLX,AVX512-CNL,AVX512-ICL"  # noqa: E501

# level -> the environment that caps every library at it; "native" leaves each at its own choice
# (the speed baseline of benchmarks/cpu_pin.py, and what runs did before the pin).
LEVELS: dict[str, dict[str, str]] = {
    "avx2": {
        "NPY_ENABLE_CPU_FEATURES": "X86_V3",  # numpy: the x86-64-v3 (AVX2, FMA3) loops at most
        "OPENBLAS_CORETYPE": "Haswell",  # OpenBLAS: its AVX2 kernels
        "OPENCV_CPU_DISABLE": _OPENCV_AVX512,  # OpenCV's dispatched kernels: AVX2 at most
        "OPENCV_IPP": "avx2",  # Intel IPP inside OpenCV (GaussianBlur, resize, ...)
        "ATEN_CPU_CAPABILITY": "avx2",  # torch's vectorised CPU kernels
        "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (convolutions)
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # MKL (torch's BLAS)
        "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility at that level
    },
    "native": {},
}
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",  # torch's intra-op pool, OpenMP in OpenCV builds that use it
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENCV_FOR_THREADS_NUM",  # OpenCV's own parallel_for pool
)
# An environment asking every library above for other code paths and thread counts: what a
# pinned process must be immune to (the determinism test and research/portability.py run a
# second pipeline under it and compare bytes).
CONTRARY_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "3", "OPENBLAS_CORETYPE": "Prescott",
    "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "OPENCV_IPP": "sse42",
    "NPY_ENABLE_CPU_FEATURES": "X86_V2", "MKL_CBWR": "COMPATIBLE",
}  # fmt: skip
PINNED = "FTUSEG_CPU_PINNED"  # "<level>:<threads>", set once the environment is pinned


class CpuPinError(RuntimeError):
    """The pin cannot be applied as asked (an unknown level, a library already imported)."""


def pin_environment(
    level: str, threads: int, env: MutableMapping[str, str] | None = None
) -> dict[str, str]:
    """The variables that pin ``level`` and ``threads``, written into ``env`` (default: this
    process's environment, so child processes such as torchrun's and data-loader workers inherit
    them). Values already set are overridden: a pin that defers to the machine pins nothing."""
    if level not in LEVELS:
        raise CpuPinError(f"cpu.isa must be one of {', '.join(LEVELS)}, not {level!r}")
    if threads < 1:
        raise CpuPinError(f"cpu.threads must be >= 1, got {threads}")
    env = os.environ if env is None else env
    values = {**LEVELS[level], **dict.fromkeys(THREAD_VARIABLES, str(threads))}
    if level == "native":  # remove an earlier pin inherited from a parent process
        for name in {k for v in LEVELS.values() for k in v}:
            env.pop(name, None)
    env.update(values)
    env[PINNED] = f"{level}:{threads}"
    return values


def pin(level: str, threads: int) -> None:
    """Pin this process before numpy, OpenCV or torch is imported (an error if one already is:
    the library would keep the choice it made at import)."""
    loaded = [m for m in ("numpy", "cv2", "torch") if m in sys.modules]
    if loaded and os.environ.get(PINNED) != f"{level}:{threads}":
        raise CpuPinError(
            f"cannot pin the CPU to {level} with {threads} threads: {', '.join(loaded)} already "
            "imported (import ftuseg.core.cpu and pin first)"
        )
    pin_environment(level, threads)


def params_path(argv: Sequence[str], default: str = "params.yaml") -> Path:
    """The params file a stage command line names (``--params PATH`` or ``--params=PATH``)."""
    for k, arg in enumerate(argv):
        if arg == "--params" and k + 1 < len(argv):
            return Path(argv[k + 1])
        if arg.startswith("--params="):
            return Path(arg.split("=", 1)[1])
    return Path(default)


def pin_from_params(path: str | Path) -> tuple[str, int] | None:
    """Pin to the ``cpu`` group of a params file; None when the file does not exist (the stage
    then stops on it with its own error). A file without a valid ``cpu`` group is an error."""
    path = Path(path)
    if not path.is_file():
        return None
    params = yaml.safe_load(path.read_text()) or {}
    group = params.get("cpu") if isinstance(params, dict) else None
    if not isinstance(group, dict) or "isa" not in group or "threads" not in group:
        raise CpuPinError(f"{path}: missing the cpu group (cpu.isa, cpu.threads)")
    level, threads = str(group["isa"]), int(group["threads"])
    pin(level, threads)
    return level, threads


def apply_threads() -> None:
    """Give the thread pools of the libraries already imported the pinned count. torch and
    OpenBLAS read ``*_NUM_THREADS`` only up to the machine's core count: set explicitly, one
    core or sixteen run the same partition of the work. Called by every stage's entry point."""
    pinned = os.environ.get(PINNED)
    if pinned is None:
        return
    threads = int(pinned.split(":")[1])
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(threads)
