"""DVC's experiment queue, driven from a test without letting it hang the suite.

`dvc queue start` returns at once, leaving worker daemons behind. A worker that inherits the
caller's stdout pipe keeps a captured ``subprocess.run`` waiting until the worker exits, and a
worker can stay behind after its task ended (dvc-task logs "shutting down due to empty queue"
and never exits). So: workers get a log file, never the test's pipes; every wait has a
deadline; and whatever happened, the queue is stopped and every process left in the repository
is killed when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

COMMAND_TIMEOUT = 120  # one dvc command (status, stop): seconds


class QueueTimeout(AssertionError):
    """The queue still had queued or running experiments at the deadline."""


def env() -> dict[str, str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    out = {**os.environ, "PATH": path}
    out.pop("DVC_ROOT", None)
    return out


def dvc(repo: Path, *args: str, check: bool = True) -> str:
    """A dvc command that ends by itself (no daemon), with a deadline."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env=env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    if check:
        assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def start(repo: Path, jobs: int, log: Path) -> None:
    """`dvc queue start -j jobs`, its daemons writing to ``log`` in a session of their own."""
    with open(log, "ab") as out:
        result = subprocess.run(
            [sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
            cwd=repo,
            env=env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=COMMAND_TIMEOUT,
            start_new_session=True,
        )
    assert result.returncode == 0, f"dvc queue start failed: {log.read_text()[-2000:]}"


def wait(repo: Path, timeout: float, poll: float = 3.0) -> str:
    """`dvc queue status` once nothing is queued or running; QueueTimeout after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        status = dvc(repo, "queue", "status")
        if "Queued" not in status and "Running" not in status:
            return status
        if time.monotonic() > deadline:
            raise QueueTimeout(f"the queue was still busy after {timeout:.0f} s:\n{status}")
        time.sleep(poll)


def _inside(path: str, repo: Path) -> bool:
    return path == str(repo) or path.startswith(f"{repo}{os.sep}")


def processes_in(repo: Path) -> list[psutil.Process]:
    """Every process working in ``repo`` (its workers, their experiment runs and stages) or
    naming it on its command line, this test process excepted."""
    repo = repo.resolve()
    found = []
    for proc in psutil.process_iter(["pid", "cwd", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        cwd = proc.info["cwd"] or ""
        cmdline = proc.info["cmdline"] or []
        if _inside(cwd, repo) or any(_inside(arg, repo) for arg in cmdline):
            found.append(proc)
    return found


def stop(repo: Path) -> None:
    """Stop the queue and kill whatever it left in ``repo``: workers, runs, stage commands."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        dvc(repo, "queue", "stop", "--kill", check=False)
    procs = processes_in(repo)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)


@contextlib.contextmanager
def running(repo: Path, jobs: int, log: Path) -> Iterator[None]:
    """The queue started for the ``with`` body and stopped after it, whatever happened."""
    try:
        start(repo, jobs, log)
        yield
    finally:
        stop(repo)
