"""Repository hygiene: no temporary sibling of an atomic write is ever tracked."""

import re
import subprocess
from pathlib import Path

import pytest

from ftuseg.core.utils import atomic_path

ROOT = Path(__file__).resolve().parents[1]
# ".<name>.<random>.tmp" (a folder) or ".<name>.<random>.tmp<suffix>" (a file), at any depth
TEMP_SIBLING = re.compile(r"(^|/)\.[^/]+\.tmp(\.[^/]*)?(/|$)")


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def tracked() -> list[str]:
    result = git("ls-files")
    if result.returncode != 0:
        pytest.skip(f"not a git checkout: {result.stderr.strip()}")
    return result.stdout.splitlines()


def test_no_tracked_file_is_a_temporary_sibling(tracked):
    stray = [f for f in tracked if TEMP_SIBLING.search(f)]
    assert not stray, f"temporary siblings of atomic writes are tracked: {stray[:5]}"


def test_the_pattern_matches_what_atomic_path_creates(tmp_path):
    for is_dir, name in ((True, "sample"), (False, "metrics.json")):
        with atomic_path(tmp_path / "data" / name, is_dir=is_dir) as tmp:
            assert TEMP_SIBLING.search(f"data/{tmp.name}"), tmp.name
    assert not TEMP_SIBLING.search("data/sample/train.csv")


class Abort(Exception):
    """Raised inside atomic_path's block: the temporary sibling is removed, the target kept."""


@pytest.mark.parametrize("is_dir", [True, False])
def test_git_ignores_temporary_siblings(tracked, is_dir):
    target = ROOT / "data" / ("sample" if is_dir else "ensemble.yaml")
    with pytest.raises(Abort), atomic_path(target, is_dir=is_dir) as tmp:
        probe = tmp / "train.csv" if is_dir else tmp
        probe.write_text("x")
        ignored = git("check-ignore", "-q", str(probe.relative_to(ROOT)))
        raise Abort
    assert not probe.exists()
    assert ignored.returncode == 0, f"{probe.relative_to(ROOT)} is not ignored by git"


def test_product_tests_import_no_research_code():
    research = {p.stem for p in (ROOT / "research").glob("*.py")}
    for test in (ROOT / "tests").glob("*.py"):
        text = test.read_text()
        path_edits = [line for line in text.splitlines() if "sys.path" in line]
        assert not [line for line in path_edits if "research" in line], test.name
        imported = set(re.findall(r"^\s*(?:from|import) (\w+)", text, re.MULTILINE))
        assert not imported & research, f"{test.name} imports research code: {imported & research}"


def test_atomic_outputs_get_the_permissions_of_a_checkout(tmp_path):
    """A writer that recreates the temporary file with mode 0600 (safetensors does) still gives
    a 0644 output: a wheel built from the package carries file modes in its zip entries."""
    import torch
    from safetensors.torch import save_file

    target = tmp_path / "w.safetensors"
    with atomic_path(target) as tmp:
        save_file({"x": torch.zeros(2)}, str(tmp))
    assert target.stat().st_mode & 0o777 == 0o644
