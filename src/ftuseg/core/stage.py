"""Shared plumbing for the thin stage scripts in ``stages/``: params, logging, error exits.

Every stage imports this module, so it imports nothing a stage might not run (no torch, no
engine): a stage's DVC deps then follow from what the stage itself imports."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler

from ftuseg.core.cpu import apply_threads
from ftuseg.core.errors import DataError
from ftuseg.core.layout import Layout
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


@dataclass(frozen=True)
class Stage:
    """What a stage script gets: its params and the project's folders. A stage reads a params
    group as its config dataclass (:meth:`config`) and anything else by its dotted name
    (:meth:`value`); both name the missing or bad parameter in their error."""

    params: dict[str, Any]
    layout: Layout

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PARAMS) -> Stage:
        params = load_params(path)
        return cls(params, Layout.from_params(params))

    def value(self, dotted: str) -> Any:
        """The parameter (a value or a whole group) at ``dotted``, e.g. ``"prepare.um_per_px"``."""
        return value(self.params, dotted)

    def config(self, cls: Callable[..., C], dotted: str, **extra: Any) -> C:
        """The group at ``dotted`` (``"stain.normalize"``) as ``cls``, with ``extra`` fields."""
        values = {**self.value(dotted), **extra}
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise DataError(f"params.yaml: {dotted}: {err}") from None


def stage(func: Callable[..., None]) -> Callable[[], None]:
    """A stage script's entry point from its body ``func(stage, **options)``: a typer command
    with the body's options and ``--params``, run with :func:`stage_main`'s logging and errors.
    The script ends with ``if __name__ == "__main__": main()``."""
    signature = inspect.signature(func, eval_str=True)
    options = list(signature.parameters.values())[1:]  # the first is the Stage

    @stage_main
    def command(*, params: Path = DEFAULT_PARAMS, **kwargs: Any) -> None:
        func(Stage.load(params), **kwargs)

    params_option = inspect.Parameter(
        "params",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(DEFAULT_PARAMS, help="the params file"),
        annotation=Path,
    )
    command.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in options]
        + [params_option]
    )
    command.__doc__ = func.__doc__
    app = typer.Typer(add_completion=False)
    app.command()(command)
    return app
