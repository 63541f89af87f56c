"""Shared plumbing for the thin stage scripts in ``stages/``: params, logging, error exits.

Every stage imports this module, so it imports nothing a stage might not run (no torch, no
engine): a stage's DVC deps then follow from what the stage itself imports."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.logging import RichHandler

from ftuseg.core.cpu import apply_threads
from ftuseg.core.errors import DataError
from ftuseg.core.utils import read_yaml

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C")

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


def value(params: dict[str, Any], dotted: str) -> Any:
    """The parameter at ``dotted`` (``"train.domain_weight"``); missing is an error naming it (a
    stage never re-states a default that conf/ already holds)."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise DataError(f"params.yaml: missing {dotted}")
        node = node[part]
    return node


def make_config(cls: Callable[..., C], params: dict[str, Any], *path: str) -> C:
    """The params group at ``path`` (e.g. ``"stain", "normalize"``) as a config dataclass;
    unknown keys or bad values become a DataError naming the group."""
    values = params
    for name in path:
        values = group(values, name)
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise DataError(f"params.yaml: {'.'.join(path)}: {err}") from None


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
        apply_threads()  # the libraries the stage imported get the pinned thread count
        try:
            return func(*args, **kwargs)
        except DataError as err:
            Console(stderr=True).print(
                f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True
            )
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
