"""The ``ftuseg`` command: helpers around the pipeline (profiles, data checks)."""

from __future__ import annotations

from pathlib import Path

import typer

from . import kaggle as kaggle_lib
from .config import set_default_profile, write_params
from .data import image_path, read_image, read_metadata
from .stage import stage_main

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)
kaggle_app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Kaggle data download and kernel push."
)
app.add_typer(kaggle_app, name="kaggle")


@app.command()
@stage_main
def params(
    overrides: list[str] = typer.Argument(
        None, help="Hydra overrides, e.g. model=swin train.lr=1e-3"
    ),
    conf_dir: Path = Path("conf"),
    out: Path = Path("params.yaml"),
) -> None:
    """Compose params.yaml from conf/ (as `dvc exp run -S` does) for a plain `dvc repro`."""
    composed = write_params(list(overrides or []), conf_dir, out)
    typer.echo(f"{out}: composed; ensemble models: {composed['ensemble']['models']}")


@app.command()
@stage_main
def profile(
    name: str = typer.Argument(
        ..., help="a profile in conf/profile/: sample, tiny, full-sample, kaggle"
    ),
    conf_dir: Path = Path("conf"),
    out: Path = Path("params.yaml"),
) -> None:
    """Make NAME the default profile in conf/config.yaml and recompose params.yaml."""
    set_default_profile(name, conf_dir)
    write_params([], conf_dir, out)
    typer.echo(f"{out}: profile {name}")


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
