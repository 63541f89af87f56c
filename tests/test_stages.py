"""Stage scripts run the library of their own checkout, not the editable install's."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = sorted(p for p in (ROOT / "stages").glob("*.py") if not p.name.startswith("_"))


def test_a_copied_checkout_imports_its_own_library(tmp_path):
    # What `dvc exp run --temp` and queued experiments do: run the stages of a copy of the repo.
    # The editable install points `ftuseg` at this checkout; the copy must import its own.
    (tmp_path / "stages").mkdir()
    shutil.copy(ROOT / "stages" / "_checkout.py", tmp_path / "stages")
    (tmp_path / "src" / "ftuseg").mkdir(parents=True)
    (tmp_path / "src" / "ftuseg" / "__init__.py").write_text("SNAPSHOT = 'copy'\n")
    shutil.copytree(ROOT / "src" / "ftuseg" / "core", tmp_path / "src" / "ftuseg" / "core")
    probe = tmp_path / "stages" / "probe.py"
    probe.write_text("import _checkout\nimport ftuseg\n\nprint(ftuseg.__file__, ftuseg.SNAPSHOT)\n")
    out = subprocess.run(
        [sys.executable, str(probe)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert Path(out[0]).resolve() == (tmp_path / "src" / "ftuseg" / "__init__.py").resolve()
    assert out[1] == "copy"


@pytest.mark.parametrize("script", STAGES, ids=lambda p: p.name)
def test_every_stage_loads_its_checkout_before_the_library(script):
    imports = [
        node
        for node in ast.parse(script.read_text()).body
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    modules = [
        node.module if isinstance(node, ast.ImportFrom) else node.names[0].name for node in imports
    ]
    first_library = next(i for i, m in enumerate(modules) if m and m.startswith("ftuseg"))
    assert "_checkout" in modules[:first_library], script.name
