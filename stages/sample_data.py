"""Stage `sample`: generate the embedded sample dataset (skipped when real data is used)."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)
import typer

from ftuseg.core.layout import Layout
from ftuseg.core.stage import group, load_params, stage_main
from ftuseg.core.utils import atomic_path
from ftuseg.data.sample import SampleConfig, generate

app = typer.Typer(add_completion=False)


@app.command()
@stage_main
def main(params: Path = Path("params.yaml")) -> None:
    p = load_params(params)
    layout = Layout.from_params(p)
    raw_dir, out = layout.raw, layout.sample
    if raw_dir.resolve() != out.resolve():
        # Real data is configured: keep this stage's output to a note instead of a dataset.
        with atomic_path(out, is_dir=True) as tmp:
            (tmp / "SKIPPED.md").write_text(
                f"The sample dataset was not generated: data.raw_dir points at {raw_dir}.\n"
            )
        typer.echo(f"sample: skipped (data.raw_dir = {raw_dir})")
        return
    counts = generate(out, SampleConfig(**group(p, "sample")))
    typer.echo(f"sample: wrote {counts['train']} train and {counts['test']} test images to {out}")


if __name__ == "__main__":
    app()
