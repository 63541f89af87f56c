"""The ``ftuseg`` command: helpers around the pipeline (profiles, data checks)."""

from __future__ import annotations

from pathlib import Path

import typer

from ftuseg.core.errors import DataError
from ftuseg.core.layout import Layout
from ftuseg.core.params import set_default_profile, write_params
from ftuseg.core.stage import stage_main
from ftuseg.data.contract import image_path, read_image, read_metadata
from ftuseg.kaggle import api as kaggle_api


def positive(value: float | None) -> float | None:
    """A number option that must be > 0 when given (µm/px, section thickness)."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"must be > 0, got {value}")
    return value


def chunk_side(value: int) -> int:
    """Slide chunks are whole zarr/TIFF blocks of the mask."""
    if value <= 0 or value % 512:
        raise typer.BadParameter(f"must be a positive multiple of 512, got {value}")
    return value


PIPELINE = Layout()  # the folders of a pipeline run from the current directory
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
def check_data(raw_dir: Path = typer.Argument(PIPELINE.raw)) -> None:
    """Validate a data folder in the competition layout: tables, RLEs and every image."""
    for split in ("train", "test"):
        meta = read_metadata(raw_dir / f"{split}.csv", split)
        for row in meta.itertuples(index=False):
            read_image(image_path(raw_dir, split, row.id), (row.img_height, row.img_width))
        typer.echo(f"{split}: {len(meta)} rows and images OK")


@kaggle_app.command("download")
@stage_main
def kaggle_download(
    dest: Path = typer.Option(PIPELINE.raw, help="where the competition data is unzipped"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the commands, run nothing"),
) -> None:
    """Download and unzip the competition data (uses your own kaggle credentials)."""
    kaggle_api.download_competition(dest, dry_run=dry_run)


@kaggle_app.command("push")
@stage_main
def kaggle_push(
    kernel_dir: Path = typer.Option(PIPELINE.kernel, help="the folder the kernel stage built"),
    message: str = typer.Option("ftuseg update", "-m", "--message", help="dataset version message"),
    create: bool | None = typer.Option(
        None,
        "--create/--version",
        help="create the model dataset, or add a version (default: ask Kaggle)",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the commands, run nothing"),
) -> None:
    """Version (or create) the model dataset, then push the kernel."""
    kaggle_api.push(kernel_dir, message, dry_run=dry_run, create=create)


@app.command("import")
@stage_main
def import_data(
    fmt: str = typer.Argument(..., help="masks | polygons | geojson"),
    images: Path = typer.Argument(..., help="folder of images (TIFF, PNG, JPEG, BMP)"),
    annotations: Path = typer.Argument(..., help="folder of annotations, one per image stem"),
    out: Path = typer.Option(..., "--out", help="new folder in the competition layout"),
    organ: str | None = typer.Option(None, help="organ of every image (or per image: --meta)"),
    pixel_size: float | None = typer.Option(None, help="µm/px of every image", callback=positive),
    thickness: float | None = typer.Option(
        None, help="section thickness (µm) of every image", callback=positive
    ),
    data_source: str = typer.Option("Import", help="data_source column"),
    meta: Path | None = typer.Option(
        None, help="CSV: id + organ/pixel_size/tissue_thickness/data_source/group"
    ),
    suffix: str = typer.Option("", help="annotation stem = image stem + this (e.g. _anno)"),
    class_name: str | None = typer.Option(
        None, "--class", help="geojson: keep this QuPath class only"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace --out if it exists"),
    group_overlaps: bool = typer.Option(
        False, "--group-overlaps", help="find images that share pixels; one fold per group"
    ),
) -> None:
    """Convert annotated images (masks, polygon JSON or QuPath GeoJSON) into train.csv (RLE)
    and train_images/, validated by the data contract; nothing is written on error."""
    from ftuseg.data.importer import ImportDefaults, import_dataset
    from ftuseg.data.overlap import OverlapConfig

    defaults = ImportDefaults(organ, pixel_size, thickness, data_source)
    table = import_dataset(
        fmt,
        images,
        annotations,
        out,
        defaults,
        meta_csv=meta,
        suffix=suffix,
        class_name=class_name,
        overwrite=overwrite,
        group_overlaps=OverlapConfig() if group_overlaps else None,
    )
    organs = ", ".join(f"{o} {n}" for o, n in table["organ"].value_counts().items())
    typer.echo(f"{out}: {len(table)} images imported ({organs})")
    if group_overlaps:
        shared = int(table["group"].notna().sum()) if "group" in table.columns else 0
        typer.echo(
            f"{shared} of them share pixels with another (pairs: {out}/overlaps.csv); "
            "each group of them will keep to one fold"
        )
    # Own tiles are already in the stain they will be predicted in: the own-data profile skips
    # the default preset's HPA recolouring (docs/own-data.md says why, with the measures).
    typer.echo(f"train on them: dvc exp run -S profile=own-data -S data.raw_dir={out}")


@app.command()
@stage_main
def predict(
    images: list[Path] = typer.Argument(
        ..., help="images or whole slides (TIFF/OME-TIFF, PNG, JPEG)"
    ),
    organ: str = typer.Option(..., help="the slides' organ (picks its threshold)"),
    out: Path = typer.Option(Path("predictions"), help="output folder"),
    pixel_size: float | None = typer.Option(
        None, help="µm/px; default: the file's metadata", callback=positive
    ),
    bundle: Path | None = typer.Option(None, help="a kernel model bundle (ftuseg-bundle.json)"),
    models: Path | None = typer.Option(
        None, help="a pipeline's models/ (default: the model shipped for --organ, if any)"
    ),
    ensemble: Path = typer.Option(PIPELINE.ensemble, help="its ensemble config"),
    params: Path = typer.Option(Path("params.yaml"), help="its inference settings (if present)"),
    chunk: int = typer.Option(
        4096, help="slide pixels per chunk side (multiple of 512)", callback=chunk_side
    ),
    tissue: bool = typer.Option(True, "--tissue/--no-tissue", help="skip chunks without tissue"),
    rle_out: bool | None = typer.Option(
        None, "--rle/--no-rle", help="also an RLE csv (default: images up to 100 MP)"
    ),
    probability: bool = typer.Option(
        False, "--probability", help="also the probability (255 = 1) as a pyramidal TIFF"
    ),
    adapt_norm: float | None = typer.Option(
        None,
        min=0.0,
        max=1.0,
        help="weight of each image's own BatchNorm statistics (slides from another lab: 1.0; "
        "default: the models' inference settings)",
    ),
) -> None:
    """Predict FTUs on any image or whole slide with a trained ensemble: a pyramidal TIFF mask,
    GeoJSON polygons (QuPath), an overlay thumbnail and a JSON summary per image."""
    from ftuseg.core.organs import ORGANS
    from ftuseg.core.stage import load_params, make_config
    from ftuseg.infer.engine import InferenceConfig
    from ftuseg.infer.slide import load_ensemble, predict_slide

    if organ not in ORGANS:
        raise DataError(f"--organ {organ!r}: not one of {', '.join(ORGANS)}")
    if bundle is None and models is None:
        from ftuseg.infer.shipped import shipped_bundle

        bundle = shipped_bundle(organ)  # an error naming the ways to get a model, if none ships
        typer.echo(f"predict: the shipped {organ} model ({bundle / 'MODEL_CARD.md'})")
    if bundle is not None:
        from ftuseg.kaggle.runtime import load_bundle

        predictor, config, _ = load_bundle(bundle)
    else:
        inference = (
            make_config(InferenceConfig, load_params(params), "inference")
            if params.is_file()
            else InferenceConfig()
        )
        predictor, config = load_ensemble(models, ensemble, inference)
    if adapt_norm is not None:
        from dataclasses import replace

        predictor.config = replace(predictor.config, adapt_norm=adapt_norm)
    for image in images:
        result = predict_slide(
            image,
            predictor,
            config,
            organ,
            out,
            pixel_size=pixel_size,
            chunk=chunk,
            detect_tissue=tissue,
            want_rle=rle_out,
            show_progress=True,
            want_prob=probability,
        )
        s = result.summary()
        typer.echo(
            f"{image}: {s['megapixels']} MP in {s['seconds']} s, {s['chunks_skipped_no_tissue']}/"
            f"{s['chunks']} chunks without tissue, {s['ftu_polygons']} FTUs -> {out}"
        )


if __name__ == "__main__":
    app()
