"""Progress and logging of a training run: the rich progress bar, and the stand-in for dvclive on
the processes that do not log."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class NoLive:
    """Stands in for dvclive on the non-main processes, which log nothing."""

    summary: dict[str, Any] = {}

    def __enter__(self) -> NoLive:
        self.summary = {}
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def log_params(self, params: dict[str, Any]) -> None:
        return None

    def log_metric(self, name: str, value: float) -> None:
        return None

    def next_step(self) -> None:
        return None


def progress_bar(model_name: str, fold: int, enabled: bool) -> Progress:
    return Progress(
        TextColumn(f"train {model_name} fold {fold}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "epoch {task.fields[epoch]} loss {task.fields[loss]:.4f} dice {task.fields[dice]:.4f}"
        ),
        TimeElapsedColumn(),
        disable=not enabled,
    )
