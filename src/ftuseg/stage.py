"""Shared plumbing for the thin stage scripts in ``stages/``: params, logging, error exits."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.logging import RichHandler

from .errors import DataError
from .inference import InferenceConfig
from .utils import read_yaml

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: params file not found (run stages from the project root)")
    params = read_yaml(path)
    if not isinstance(params, dict):
        raise DataError(f"{path}: expected a mapping of parameter groups")
    return params


def group(params: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in params or not isinstance(params[name], dict):
        raise DataError(f"params.yaml: missing parameter group {name!r}")
    return params[name]


def inference_config(params: dict[str, Any]) -> InferenceConfig:
    """The ``inference`` group as an :class:`InferenceConfig` (bad values -> DataError)."""
    try:
        return InferenceConfig(**group(params, "inference"))
    except (TypeError, ValueError) as err:
        raise DataError(f"params.yaml: inference: {err}") from None


def stage_main(func: F) -> F:
    """Run a stage body with rich logging; bad input becomes a one-line error and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(
            level=logging.INFO,
            format="%(message)s",
            handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
            force=True,
        )
        try:
            return func(*args, **kwargs)
        except DataError as err:
            Console(stderr=True).print(
                f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True
            )
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
