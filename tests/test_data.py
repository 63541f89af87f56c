"""The data contract: every bad input is refused with a message naming the file and row."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from ftuseg.core import rle
from ftuseg.core.errors import DataError
from ftuseg.data.contract import (
    TRAIN_COLUMNS,
    decode_mask,
    read_image,
    read_metadata,
    to_rgb_uint8,
)

GOOD = {
    "id": "1",
    "organ": "kidney",
    "data_source": "HPA",
    "img_height": 4,
    "img_width": 3,
    "pixel_size": 0.4,
    "tissue_thickness": 4,
    "rle": "2 3",
    "age": 50,
    "sex": "Male",
}


def write_csv(tmp_path: Path, rows: list[dict], name: str = "train.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_valid_train_csv_is_read_with_typed_columns(tmp_path):
    df = read_metadata(write_csv(tmp_path, [GOOD, {**GOOD, "id": "2", "organ": "lung"}]), "train")
    assert list(df["id"]) == ["1", "2"]
    assert df["img_height"].dtype == np.int64
    assert df["pixel_size"].dtype == np.float64
    assert set(TRAIN_COLUMNS) <= set(df.columns)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rle": "2 3 4"}, r"row id=7: RLE has an odd number of tokens"),
        ({"rle": "10 5"}, r"row id=7: RLE run ends at pixel 14, past the image area 4x3=12"),
        ({"rle": "5 3 6 1"}, r"row id=7: RLE runs overlap"),
        ({"rle": "NA"}, r"row id=7: RLE has a token that is not an integer"),
        ({"organ": "liver"}, r"row id=7: unknown organ 'liver'"),
        ({"pixel_size": None}, r"row id=7: pixel_size must be a positive number"),
        ({"pixel_size": 0}, r"row id=7: pixel_size must be a positive number"),
        ({"pixel_size": -0.4}, r"row id=7: pixel_size must be a positive number"),
        ({"img_height": 0}, r"row id=7: img_height must be a positive integer"),
        ({"img_width": 2.5}, r"row id=7: img_width must be a positive integer"),
    ],
)
def test_bad_rows_are_refused_naming_file_and_row(tmp_path, change, message):
    path = write_csv(tmp_path, [GOOD, {**GOOD, "id": "7", **change}])
    with pytest.raises(DataError, match=message) as err:
        read_metadata(path, "train")
    assert str(path) in str(err.value)


def test_duplicate_ids_are_refused(tmp_path):
    path = write_csv(tmp_path, [GOOD, {**GOOD, "organ": "lung"}])
    with pytest.raises(DataError, match=r"duplicate id\(s\) 1"):
        read_metadata(path, "train")


def test_missing_column_and_missing_file_are_refused(tmp_path):
    row = {k: v for k, v in GOOD.items() if k != "pixel_size"}
    with pytest.raises(DataError, match=r"missing column\(s\) pixel_size"):
        read_metadata(write_csv(tmp_path, [row]), "train")
    with pytest.raises(DataError, match=r"nope.csv: metadata file not found"):
        read_metadata(tmp_path / "nope.csv", "train")


def test_test_csv_needs_no_rle(tmp_path):
    row = {k: v for k, v in GOOD.items() if k not in ("rle", "age", "sex")}
    df = read_metadata(write_csv(tmp_path, [row], "test.csv"), "test")
    assert len(df) == 1


def test_real_rows_pass_validation(tmp_path, bundled_rows):
    path = tmp_path / "train.csv"
    bundled_rows.to_csv(path, index=False)
    df = read_metadata(path, "train")
    assert len(df) == len(bundled_rows)


# ---------------------------------------------------------------------------- images


def rgb(h: int = 4, w: int = 3) -> np.ndarray:
    return np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)


def test_rgb_tiff_round_trips(tmp_path):
    tifffile.imwrite(tmp_path / "a.tiff", rgb(), photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "a.tiff", (4, 3)), rgb())


def test_missing_unreadable_and_wrong_size_images_are_refused(tmp_path):
    with pytest.raises(DataError, match=r"x.tiff: image file not found"):
        read_image(tmp_path / "x.tiff")
    (tmp_path / "bad.tiff").write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match=r"bad.tiff: unreadable image"):
        read_image(tmp_path / "bad.tiff")
    tifffile.imwrite(tmp_path / "a.tiff", rgb(), photometric="rgb")
    with pytest.raises(DataError, match=r"a.tiff: image is 4x3 \(HxW\) but the metadata says 3x4"):
        read_image(tmp_path / "a.tiff", (3, 4))


def test_rgba_grayscale_16bit_and_channels_first_are_converted_with_a_warning(caplog):
    caplog.set_level(logging.WARNING)
    rgba = np.dstack([rgb(), np.full((4, 3), 255, np.uint8)])
    np.testing.assert_array_equal(to_rgb_uint8(rgba, "rgba.tiff"), rgb())
    gray = np.arange(12, dtype=np.uint8).reshape(4, 3)
    out = to_rgb_uint8(gray, "gray.tiff")
    assert out.shape == (4, 3, 3) and (out[..., 0] == gray).all() and (out[..., 2] == gray).all()
    deep = (rgb().astype(np.uint16) * 257).astype(np.uint16)
    np.testing.assert_array_equal(to_rgb_uint8(deep, "deep.tiff"), rgb())
    planar = np.moveaxis(rgb(5, 6), -1, 0)
    np.testing.assert_array_equal(to_rgb_uint8(planar, "planar.tiff"), rgb(5, 6))
    text = caplog.text
    for name in ("rgba.tiff", "gray.tiff", "deep.tiff", "planar.tiff"):
        assert name in text


def test_float_and_odd_channel_images_are_refused():
    with pytest.raises(DataError, match=r"f.tiff: unsupported pixel type float32"):
        to_rgb_uint8(np.zeros((4, 3, 3), np.float32), "f.tiff")
    with pytest.raises(DataError, match=r"two.tiff: unsupported image shape"):
        to_rgb_uint8(np.zeros((4, 3, 2), np.uint8), "two.tiff")


def test_grayscale_tiff_on_disk_is_read_as_rgb(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(4, 3)
    tifffile.imwrite(tmp_path / "g.tiff", gray)
    assert read_image(tmp_path / "g.tiff", (4, 3)).shape == (4, 3, 3)


def test_encoded_sample_masks_validate(tmp_path):
    mask = np.zeros((4, 3), np.uint8)
    mask[1:3, 1] = 1
    row = {**GOOD, "rle": rle.encode(mask)}
    df = read_metadata(write_csv(tmp_path, [row]), "train")
    assert df.loc[0, "rle"] == "6 2"


def test_an_empty_rle_is_an_image_without_ftus(tmp_path):
    """A negative tile (no FTU in the image) has an empty rle: valid, decoded to an empty mask."""
    path = write_csv(tmp_path, [GOOD, {**GOOD, "id": "8", "rle": ""}])
    meta = read_metadata(path, "train")
    row = meta.set_index("id").loc["8"]
    assert row["rle"] == ""
    assert not decode_mask(row["rle"], (row["img_height"], row["img_width"]), "x").any()
