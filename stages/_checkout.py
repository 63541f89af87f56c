"""Imported first by every stage script: the stage runs the library of its own checkout, on a CPU
pinned to the params' instruction-set level and thread count.

`pip install -e .` points `ftuseg` at the checkout it was installed from, but `dvc exp run
--temp` and queued experiments run the stages in a temporary copy of the repository: without
the path below, they would import the workspace's `src/` (possibly edited since) instead of the
copy's. The pin (:mod:`ftuseg.core.cpu`) must come before numpy, OpenCV and torch are imported,
which is why it lives here and not in the stage bodies.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ftuseg.core.cpu import CpuPinError, params_path, pin_from_params  # noqa: E402

try:
    pin_from_params(params_path(sys.argv[1:]))
except (CpuPinError, ValueError, TypeError) as err:
    sys.exit(f"error: {err}")
