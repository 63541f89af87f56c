"""Imported first by every stage script, so that a stage runs the library of its own checkout.

`pip install -e .` points `ftuseg` at the checkout it was installed from, but `dvc exp run
--temp` and queued experiments run the stages in a temporary copy of the repository: without
this, they would import the workspace's `src/` (possibly edited since) instead of the copy's.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
