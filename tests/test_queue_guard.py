"""The guard around DVC's experiment queue (tests/dvc_queue.py): a worker stuck or killed on
purpose makes the test fail within its deadline and leaves no process behind."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import dvc_queue
import psutil
import pytest

pytestmark = pytest.mark.slow

# A stage that would run for ten minutes: the stand-in for a worker that never comes back.
HANGING_STAGE = """stages:
  hang:
    cmd: python -c "import time; time.sleep(600)"
"""


def queued_repo(root: Path) -> Path:
    """A git + DVC repository with one experiment queued whose stage hangs."""
    repo = root / "repo"
    repo.mkdir()
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "ci@example.com"],
        ["git", "config", "user.name", "ci"],
    ):
        subprocess.run(cmd, cwd=repo, check=True, timeout=60)
    dvc_queue.dvc(repo, "init", "-q")
    (repo / "dvc.yaml").write_text(HANGING_STAGE)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, timeout=60)
    subprocess.run(["git", "commit", "-qm", "hang"], cwd=repo, check=True, timeout=60)
    dvc_queue.dvc(repo, "exp", "run", "--queue", "-n", "stuck")
    return repo


def workers(repo: Path) -> list[psutil.Process]:
    return [p for p in dvc_queue.processes_in(repo) if "queue-worker" in " ".join(p.cmdline())]


def kill_workers_once_running(repo: Path, timeout: float = 60) -> int:
    """SIGKILL the queue's workers as soon as the experiment runs; how many were killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Running" in dvc_queue.dvc(repo, "queue", "status") and workers(repo):
            killed = workers(repo)
            for proc in killed:
                proc.kill()
            return len(killed)
        time.sleep(1)
    raise AssertionError(f"the experiment never started running in {timeout} s")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", ["stuck", "killed"])
def test_a_stuck_or_killed_worker_fails_the_wait_and_leaves_no_process(tmp_path, fault):
    repo = queued_repo(tmp_path)
    started = time.monotonic()
    with (
        pytest.raises(AssertionError) as failure,
        dvc_queue.running(repo, jobs=1, log=tmp_path / "queue.log"),
    ):
        if fault == "killed":
            assert kill_workers_once_running(repo) >= 1
        status = dvc_queue.wait(repo, timeout=6, poll=1)
        # A killed worker may leave its task marked failed instead of running: the test that
        # waited on it fails on the outcome, as the e2e sweep test does.
        assert status.count("Success") == 1, status
    assert time.monotonic() - started < 150, "the guard did not bound the wait"
    if fault == "stuck":
        assert isinstance(failure.value, dvc_queue.QueueTimeout)
    left = dvc_queue.processes_in(repo)
    assert not left, f"processes left behind: {[' '.join(p.cmdline()) for p in left]}"


def test_processes_in_finds_a_process_working_in_the_repository(tmp_path):
    """The finder the clean-up relies on: a process whose working folder is the repository."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path, start_new_session=True
    )
    try:
        assert proc.pid in {p.pid for p in dvc_queue.processes_in(tmp_path)}
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.pid not in {p.pid for p in dvc_queue.processes_in(tmp_path)}
