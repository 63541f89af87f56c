"""`ftuseg import`: masks, polygon JSON and QuPath GeoJSON into the competition layout; the
import -> RLE -> GeoJSON round trip; every importer's bad inputs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Polygon
from typer.testing import CliRunner

from ftuseg.cli import app
from ftuseg.core import rle
from ftuseg.core.errors import DataError
from ftuseg.core.metrics import dice
from ftuseg.core.params import write_params
from ftuseg.data.annotations import mask_to_polygons, rasterise, read_geojson, write_geojson
from ftuseg.data.contract import read_image, read_metadata
from ftuseg.data.importer import ImportDefaults, import_dataset

SHAPE = (420, 560)  # H, W
DEFAULTS = ImportDefaults("largeintestine", 0.5, 4.0)


def ellipse(cx, cy, rx, ry, n=60, angle=0.3):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1).round(1)


POLYGONS = [
    ellipse(120, 100, 70, 40),
    ellipse(380, 260, 90, 60, angle=1.1),
    ellipse(250, 360, 30, 20),
]
# A gland with a lumen: GeoJSON can say it, the competition's JSON cannot.
WITH_HOLE = Polygon(ellipse(420, 110, 80, 60), [ellipse(420, 110, 30, 20)[::-1]])


def write_images(folder, ids, suffix=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in ids:
        img = rng.integers(0, 255, (*SHAPE, 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"{i}{suffix}"), img)


def test_polygons_import_rle_geojson_round_trip(tmp_path):
    write_images(tmp_path / "img", ["g1"])
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann/g1.json").write_text(json.dumps([p.tolist() for p in POLYGONS]))
    table = import_dataset(
        "polygons", tmp_path / "img", tmp_path / "ann", tmp_path / "out", DEFAULTS
    )
    source = rasterise([Polygon(p) for p in POLYGONS], SHAPE)
    # The written layout passes the data contract and its RLE is the filled polygons exactly.
    meta = read_metadata(tmp_path / "out/train.csv", "train")
    assert meta.iloc[0]["organ"] == "largeintestine" and meta.iloc[0]["pixel_size"] == 0.5
    assert read_image(tmp_path / "out/train_images/g1.tiff").shape == (*SHAPE, 3)
    decoded = rle.decode(table.iloc[0]["rle"], SHAPE)
    assert np.array_equal(decoded, source)
    # RLE -> polygons -> GeoJSON -> mask: what a user gets back in QuPath.
    write_geojson(tmp_path / "g1.geojson", mask_to_polygons(decoded))
    back = rasterise(read_geojson(tmp_path / "g1.geojson", "FTU"), SHAPE)
    assert len(read_geojson(tmp_path / "g1.geojson")) == 3
    assert dice(back, source) >= 0.99


def qupath_collection(polygons, extra=()):
    features = [
        {"type": "Feature", "geometry": json.loads(json.dumps(p.__geo_interface__)),
         "properties": {"objectType": "annotation", "classification": {"name": "Gland"}}}
        for p in polygons
    ]  # fmt: skip
    return {"type": "FeatureCollection", "features": [*features, *extra]}


def test_geojson_import_keeps_holes_and_filters_by_class(tmp_path):
    write_images(tmp_path / "img", ["s1"], ".jpg")
    (tmp_path / "ann").mkdir()
    point = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]},
             "properties": {"classification": {"name": "Region*"}}}  # fmt: skip
    doc = qupath_collection([Polygon(POLYGONS[0]), WITH_HOLE], [point])
    (tmp_path / "ann/s1.geojson").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"s1.geojson: feature 2 is a Point"):
        import_dataset("geojson", tmp_path / "img", tmp_path / "ann", tmp_path / "o1", DEFAULTS)
    assert not (tmp_path / "o1").exists()  # nothing written
    table = import_dataset(
        "geojson", tmp_path / "img", tmp_path / "ann", tmp_path / "o2", DEFAULTS, class_name="Gland"
    )
    mask = rle.decode(table.iloc[0]["rle"], SHAPE)
    assert mask[110, 420] == 0 and mask[110, 475] == 1  # the lumen stays open, the wall is in
    expected = rasterise([Polygon(POLYGONS[0]), WITH_HOLE], SHAPE)
    assert np.array_equal(mask, expected)
    # And back: the hole survives mask -> polygons -> mask.
    polys = mask_to_polygons(mask)
    assert sum(len(p.interiors) for p in polys) == 1
    assert dice(rasterise(polys, SHAPE), mask) >= 0.99


def test_instance_masks_and_per_image_metadata(tmp_path):
    write_images(tmp_path / "img", ["a", "b"])
    (tmp_path / "masks").mkdir()
    labels = np.zeros(SHAPE, np.uint16)
    labels[50:90, 60:120], labels[200:260, 300:380] = 1, 7  # two instances
    cv2.imwrite(str(tmp_path / "masks/a_anno.png"), labels)
    binary = np.zeros(SHAPE, np.uint8)
    binary[10:30, 10:40] = 255
    cv2.imwrite(str(tmp_path / "masks/b_anno.png"), binary)
    pd.DataFrame({"id": ["b"], "organ": ["kidney"], "pixel_size": [0.25]}).to_csv(
        tmp_path / "meta.csv", index=False
    )
    table = import_dataset("masks", tmp_path / "img", tmp_path / "masks", tmp_path / "out",
                           DEFAULTS, meta_csv=tmp_path / "meta.csv", suffix="_anno").set_index("id")  # fmt: skip
    assert np.array_equal(rle.decode(table.loc["a", "rle"], SHAPE), (labels > 0).astype(np.uint8))
    assert np.array_equal(rle.decode(table.loc["b", "rle"], SHAPE), (binary > 0).astype(np.uint8))
    assert table.loc["b", "organ"] == "kidney" and table.loc["b", "pixel_size"] == 0.25
    assert table.loc["a", "organ"] == "largeintestine" and table.loc["b", "tissue_thickness"] == 4.0
    assert "group" not in table.columns  # no group given: none written


def test_a_group_from_the_metadata_csv_reaches_train_csv(tmp_path):
    write_images(tmp_path / "img", ["a", "b", "c"])
    (tmp_path / "masks").mkdir()
    for i in "abc":
        cv2.imwrite(str(tmp_path / f"masks/{i}.png"), np.pad(np.full((20, 20), 255, np.uint8),
                                                               ((0, SHAPE[0] - 20), (0, SHAPE[1] - 20))))  # fmt: skip
    pd.DataFrame({"id": ["a", "b"], "group": ["slide1", "slide1"]}).to_csv(
        tmp_path / "meta.csv", index=False
    )
    import_dataset("masks", tmp_path / "img", tmp_path / "masks", tmp_path / "out", DEFAULTS,
                   meta_csv=tmp_path / "meta.csv")  # fmt: skip
    table = read_metadata(tmp_path / "out" / "train.csv", "train").set_index("id")
    assert table["group"].to_dict() == {"a": "slide1", "b": "slide1", "c": "id:c"}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_annotation", r"img/a\.png: no annotation a\.\*"),
        ("orphan_annotation", r"ann/zz\.png: annotation without an image"),
        ("wrong_size", r"ann/a\.png: mask is 10x10 but its image is 420x560"),
        ("colour_mask", r"ann/a\.png: colour mask"),
        ("no_pixel_size", r"img/a\.png: no pixel_size"),
        ("bad_organ", r"img/a\.png: organ 'liver'"),
        ("exists", r"out: exists already"),
    ],
)
def test_bad_mask_inputs_are_named_and_nothing_is_written(tmp_path, case, message):
    write_images(tmp_path / "img", ["a"])
    (tmp_path / "ann").mkdir()
    mask = np.zeros(SHAPE, np.uint8)
    mask[5:50, 5:50] = 1
    defaults = DEFAULTS
    if case == "wrong_size":
        mask = np.ones((10, 10), np.uint8)
    if case == "colour_mask":
        mask = np.dstack([mask, mask * 2, mask])
    if case == "no_pixel_size":
        defaults = ImportDefaults("kidney", None, 4.0)
    if case == "bad_organ":
        defaults = ImportDefaults("liver", 0.5, 4.0)
    if case == "exists":
        (tmp_path / "out").mkdir()
    if case != "no_annotation":
        cv2.imwrite(str(tmp_path / "ann/a.png"), mask)
    if case == "orphan_annotation":
        cv2.imwrite(str(tmp_path / "ann/zz.png"), mask)
    with pytest.raises(DataError, match=message):
        import_dataset("masks", tmp_path / "img", tmp_path / "ann", tmp_path / "out", defaults)
    assert case == "exists" or not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"a\.json: not a readable JSON file"),
        ('{"a": 1}', r"a\.json: expected a list of polygons"),
        ("[[[1, 2], [3, 4]]]", r"a\.json: polygon 0 has 2 point\(s\)"),
        ('[[[1, 2], [3, "x"], [5, 6]]]', r"a\.json: polygon 0: a polygon must be"),
    ],
)
def test_bad_polygon_files_are_named(tmp_path, content, message):
    write_images(tmp_path / "img", ["a"])
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann/a.json").write_text(content)
    with pytest.raises(DataError, match=message):
        import_dataset("polygons", tmp_path / "img", tmp_path / "ann", tmp_path / "out", DEFAULTS)
    assert not (tmp_path / "out").exists()


def test_bad_geojson_is_named(tmp_path):
    write_images(tmp_path / "img", ["a"])
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann/a.geojson").write_text('{"type": "Topology"}')
    with pytest.raises(DataError, match=r"a\.geojson: not GeoJSON"):
        import_dataset("geojson", tmp_path / "img", tmp_path / "ann", tmp_path / "out", DEFAULTS)


def test_cli_import_exit_codes(tmp_path):
    write_images(tmp_path / "img", ["g1"])
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann/g1.json").write_text(json.dumps([p.tolist() for p in POLYGONS]))
    args = ["import", "polygons", str(tmp_path / "img"), str(tmp_path / "ann"), "--out"]
    opts = ["--organ", "kidney", "--pixel-size", "0.5", "--thickness", "4"]
    ok = CliRunner().invoke(app, [*args, str(tmp_path / "out"), *opts])
    assert ok.exit_code == 0, ok.output
    assert "1 images imported (kidney 1)" in ok.output
    assert f"dvc exp run -S profile=own-data -S data.raw_dir={tmp_path / 'out'}" in ok.output
    bad = CliRunner().invoke(app, [*args, str(tmp_path / "out2"), "--organ", "kidney"])
    assert bad.exit_code != 0 and not (tmp_path / "out2").exists()


def test_an_image_without_ftus_is_imported_as_a_negative_tile(tmp_path):
    """An empty mask, or a GeoJSON without features, becomes a row with an empty RLE that the
    data contract and the prepare stage accept (its crops are plain background)."""
    from ftuseg.data.prepare import PrepareConfig, load_prepared, prepare

    write_images(tmp_path / "img", ["neg", "pos1", "pos2", "pos3"])
    (tmp_path / "ann").mkdir()
    for name in ("pos1", "pos2", "pos3"):
        features = [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [POLYGONS[0].tolist()]},
            }
        ]
        (tmp_path / f"ann/{name}.geojson").write_text(
            json.dumps({"type": "FeatureCollection", "features": features})
        )
    (tmp_path / "ann/neg.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    table = import_dataset(
        "geojson", tmp_path / "img", tmp_path / "ann", tmp_path / "out", DEFAULTS
    )
    assert table.set_index("id").loc["neg", "rle"] == ""
    meta = read_metadata(tmp_path / "out/train.csv", "train").set_index("id")
    assert meta.loc["neg", "rle"] == "" and meta.loc["pos1", "rle"] != ""
    prepare(tmp_path / "out", tmp_path / "prep", PrepareConfig(um_per_px=1.0, n_folds=2))
    _, mask = load_prepared(tmp_path / "prep", "neg")
    assert not mask.any()
    from ftuseg.train.datasets import CropDataset

    crops = CropDataset(tmp_path / "prep", ["neg"], 64, samples_per_image=4, ftu_prob=1.0)
    for k in range(len(crops)):  # FTU-centred crops fall back to random ones (no FTU to draw)
        assert not crops[k]["mask"].any()


def geojson_of(coords) -> str:
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [coords]}}
    return json.dumps({"type": "FeatureCollection", "features": [feature]})


@pytest.mark.parametrize(
    ("coords", "message"),
    [
        (
            [[10, 10], [float("nan"), 20], [30, 10], [10, 10]],
            r"feature 0 has a non-finite coordinate",
        ),
        ([[10, 10], [10, 10], [30, 10], [10, 10]], r"polygon 0 has 2 distinct point"),
        ([[10, 10], [20, 20], [30, 30], [10, 10]], r"polygon 0 has no area"),
        (
            [[900, 900], [950, 900], [950, 950], [900, 900]],
            r"polygon 0 lies outside the 560x420 image",
        ),
    ],
)
def test_every_geometry_is_checked_against_its_image(tmp_path, coords, message):
    write_images(tmp_path / "img", ["a"])
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann/a.geojson").write_text(geojson_of(coords))
    with pytest.raises(DataError, match=message):
        import_dataset("geojson", tmp_path / "img", tmp_path / "ann", tmp_path / "out", DEFAULTS)
    assert not (tmp_path / "out").exists()


def test_a_polygon_past_the_edge_is_clipped_and_said_so(tmp_path, caplog):
    write_images(tmp_path / "img", ["a"])
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann/a.geojson").write_text(
        geojson_of([[500, 300], [700, 300], [700, 500], [500, 500], [500, 300]])
    )
    table = import_dataset(
        "geojson", tmp_path / "img", tmp_path / "ann", tmp_path / "out", DEFAULTS
    )
    assert "reaches past the 560x420 image: clipped" in caplog.text
    mask = rle.decode(table.loc[0, "rle"], SHAPE)
    assert abs(int(mask.sum()) - 60 * 120) <= 0.03 * 60 * 120  # x 500..560, y 300..420


def test_a_self_intersecting_polygon_is_repaired_and_said_so(tmp_path, caplog):
    """A bow-tie (its outline crosses itself at (150, 150)): two triangular lobes of 2500 px²
    each, whose signed areas cancel. Both lobes are kept, with a warning naming the polygon."""
    write_images(tmp_path / "img", ["a"])
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann/a.geojson").write_text(
        geojson_of([[100, 100], [200, 200], [200, 100], [100, 200], [100, 100]])
    )
    table = import_dataset(
        "geojson", tmp_path / "img", tmp_path / "ann", tmp_path / "out", DEFAULTS
    )
    assert "a.geojson: polygon 0 crosses itself: repaired into 2 part(s) of 5000.0 px²" in (
        caplog.text
    )
    mask = rle.decode(table.loc[0, "rle"], SHAPE)
    assert abs(int(mask.sum()) - 5000) <= 0.06 * 5000  # outline pixels included
    # both lobes: the left one (x 100..150) at y 120 and 180, the right one (x 150..200)
    assert mask[180, 110] and mask[120, 110] and mask[150, 190] and not mask[110, 150]


@pytest.mark.parametrize(
    ("option", "value"), [("--pixel-size", "0"), ("--pixel-size", "-1"), ("--thickness", "0")]
)
def test_cli_numbers_are_checked_where_they_are_parsed(tmp_path, option, value):
    write_images(tmp_path / "img", ["a"])
    (tmp_path / "ann").mkdir()
    args = [
        "import",
        "masks",
        str(tmp_path / "img"),
        str(tmp_path / "ann"),
        "--out",
        str(tmp_path / "o"),
    ]
    opts = {"--organ": "kidney", "--pixel-size": "0.5", "--thickness": "4", option: value}
    result = CliRunner().invoke(app, [*args, *(x for kv in opts.items() for x in kv)])
    assert result.exit_code == 2 and "must be > 0" in result.output, result.output


def test_the_profile_the_import_names_trains_on_the_tiles_as_they_are(tmp_path):
    """Own tiles are in the stain they will be predicted in: no HPA recolouring, no stain copies,
    another lab's augmentations and an untuned threshold; kidney-real is the same recipe on the
    bundled tiles, glomerulus fragments removed."""
    own = write_params(["profile=own-data", f"data.raw_dir={tmp_path}"], out=tmp_path / "o.yaml")
    assert own["data"]["raw_dir"] == str(tmp_path)
    assert own["stain"]["augment"]["copies"] == 0 and own["train"]["stain_copy_prob"] == 0.0
    assert own["stain"]["normalize"]["method"] == "none"
    assert own["augment"]["density"] > 0 and own["augment"]["glass"] > 0
    assert own["ensemble"]["thresholds"] == [0.5]
    kidney = write_params(["profile=kidney-real"], out=tmp_path / "k.yaml")
    assert kidney["sample"]["train_source"] == "kidney_pas"
    # Glomerulus fragments removed for kidney only: `own-data` does not know the user's FTU.
    assert own["inference"]["min_component_um2"] == 0
    assert kidney["inference"]["min_component_um2"] == 4000
    inference = {**kidney["inference"], "min_component_um2": 0}
    assert {**kidney, "sample": own["sample"], "data": own["data"], "inference": inference} == own
