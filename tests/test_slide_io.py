"""Slide input read errors and the predict command's numbers: clear errors, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from ftuseg.cli import app
from ftuseg.core.errors import DataError
from ftuseg.infer.slide_io import open_slide


def corrupt_slide(path: Path) -> Path:
    """A 1024² tiled TIFF whose tile at row 1, column 1 is not a deflate stream any more."""
    image = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    tifffile.imwrite(path, image, tile=(256, 256), compression="deflate")
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        offset, count = page.dataoffsets[5], page.databytecounts[5]
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = b"\xff" * count
    path.write_bytes(bytes(data))
    return path


def test_a_corrupt_tile_is_an_error_naming_the_file_and_region(tmp_path):
    slide = open_slide(corrupt_slide(tmp_path / "slide.tif"))
    assert slide.read(0, 0, 256, 256).shape == (256, 256, 3)  # intact tiles still read
    with pytest.raises(
        DataError, match=r"slide\.tif: cannot read level 0, rows 0:512, columns 0:512"
    ):
        slide.read(0, 0, 512, 512)


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--pixel-size", "0"], "must be > 0"), (["--chunk", "1000"], "multiple of 512")],
)
def test_predict_checks_its_numbers_where_they_are_parsed(tmp_path, extra, message):
    image = tmp_path / "x.png"
    image.write_bytes(b"")  # never read: the option fails first
    result = CliRunner().invoke(app, ["predict", str(image), "--organ", "kidney", *extra])
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_truncated_slide_is_an_error_naming_the_file_and_region(tmp_path):
    path = tmp_path / "cut.tif"
    image = np.random.default_rng(1).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    tifffile.imwrite(path, image, tile=(256, 256), compression="deflate")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # an interrupted copy
    slide = open_slide(path)
    with pytest.raises(
        DataError, match=r"cut\.tif: cannot read level 0, rows 0:1024, columns 0:1024"
    ):
        slide.read(0, 0, 1024, 1024)


def test_predict_on_a_corrupt_slide_says_one_error_and_nothing_else(tmp_path):
    """zarr's abandoned chunk reads (asyncio tasks destroyed while pending, coroutines never
    awaited) are not reported after the error that names the file."""
    path = corrupt_slide(tmp_path / "slide.tif")
    cmd = [sys.executable, "-m", "ftuseg.cli", "predict", str(path), "--organ", "kidney"]
    result = subprocess.run(
        [*cmd, "--pixel-size", "1.0", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "slide.tif: cannot read level 0" in result.stderr
    for noise in ("Task was destroyed", "never awaited", "Traceback"):
        assert noise not in result.stderr + result.stdout, result.stderr
