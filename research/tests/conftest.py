"""The research scripts are run as scripts (``python research/x.py``), not imported from the
package: their tests import them from the research folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
