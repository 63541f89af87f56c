"""The ``ftuseg`` command: helpers around the pipeline (profiles, data checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from . import kaggle as kaggle_lib
from .data import image_path, read_image, read_metadata
from .errors import DataError
from .stage import stage_main
from .utils import read_yaml, write_yaml

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)
kaggle_app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Kaggle data download and kernel push."
)
app.add_typer(kaggle_app, name="kaggle")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``; nested mappings are merged, everything else replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@app.command()
@stage_main
def profile(
    name: str = typer.Argument(..., help="a profile in profiles/, e.g. tiny, full-sample, kaggle"),
    params: Path = Path("params.yaml"),
    profiles_dir: Path = Path("profiles"),
) -> None:
    """Merge ``profiles/NAME.yaml`` into params.yaml (rewritten atomically)."""
    path = profiles_dir / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in profiles_dir.glob("*.yaml")))
        raise DataError(f"{path}: no such profile (available: {known})")
    write_yaml(params, deep_merge(read_yaml(params), read_yaml(path) or {}))
    typer.echo(f"params.yaml: applied profile {name}")


@app.command()
@stage_main
def check_data(raw_dir: Path = typer.Argument(Path("data/raw"))) -> None:
    """Validate a data folder in the competition layout: tables, RLEs and every image."""
    for split in ("train", "test"):
        meta = read_metadata(raw_dir / f"{split}.csv", split)
        for row in meta.itertuples(index=False):
            read_image(image_path(raw_dir, split, row.id), (row.img_height, row.img_width))
        typer.echo(f"{split}: {len(meta)} rows and images OK")


@kaggle_app.command("download")
@stage_main
def kaggle_download(
    dest: Path = typer.Option(Path("data/raw"), help="where the competition data is unzipped"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the commands, run nothing"),
) -> None:
    """Download and unzip the competition data (uses your own kaggle credentials)."""
    kaggle_lib.download_competition(dest, dry_run=dry_run)


@kaggle_app.command("push")
@stage_main
def kaggle_push(
    kernel_dir: Path = typer.Option(
        Path("kaggle_kernel"), help="the folder the kernel stage built"
    ),
    message: str = typer.Option("ftuseg update", "-m", "--message", help="dataset version message"),
    create: bool | None = typer.Option(
        None,
        "--create/--version",
        help="create the model dataset, or add a version (default: ask Kaggle)",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the commands, run nothing"),
) -> None:
    """Version (or create) the model dataset, then push the kernel."""
    kaggle_lib.push(kernel_dir, message, dry_run=dry_run, create=create)


if __name__ == "__main__":
    app()
