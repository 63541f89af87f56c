"""How complete are the kidney tiles' glomerulus masks? An audit with the shipped model.

The shipped glomerulus model (``src/ftuseg/assets/models/kidney``) predicts, through the
product's engine and its own bundle settings, the bundled tiles it never trained on: its 45
validation tiles and the 20 held-out test tiles. Every predicted component of glomerulus size
(``MIN_AREA_UM2``) that touches no annotated glomerulus is listed in
``results/kidney_labels_components.csv`` and drawn on a contact sheet
(``results/kidney_labels.jpg``) to be reviewed by eye; the verdicts (``glomerulus`` | ``other``
| ``unsure``) are in ``kidney_label_review.csv``, keyed by tile and component number.

Per tile the archive keeps the pixel counts |P|, |T| and |P ∩ T|, so the report needs no model:
Dice against the masks as published, and Dice with the components reviewed as glomeruli
*ignored* (scored neither right nor wrong: regions the annotators left out, the "ignore" label
of segmentation benchmarks). A listed component touches no annotation, so ignoring it removes
its area from |P| alone.

    python research/kidney_labels.py            # predict, list, draw (≈ 2 min on 2 cores), report
    python research/kidney_labels.py --report   # tables from the archive and the review
    python research/kidney_labels.py --check    # fail if the tables are stale
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
from experiments import ROOT, interval_text, rounded, table_args, write_tables
from glas_gap import bootstrap
from rich.progress import track
from scipy import ndimage

from ftuseg.data.real_tiles import ID_PREFIX, RealTile, load_real_tiles
from ftuseg.infer.maps import postprocess
from ftuseg.infer.shipped import shipped_bundle
from ftuseg.kaggle.runtime import load_bundle

ORGAN = "kidney"
# Half the area of the smallest human glomerulus (≈ 150 µm across): what is smaller is a
# fragment, not a glomerulus the annotators could have outlined.
MIN_AREA_UM2 = 8000.0
RESULTS = ROOT / "research" / "results"
TILES_CSV = RESULTS / "kidney_labels_tiles.csv"
COMPONENTS_CSV = RESULTS / "kidney_labels_components.csv"
SHEET = RESULTS / "kidney_labels.jpg"
REVIEW = ROOT / "research" / "kidney_label_review.csv"
TABLE = RESULTS / "kidney_labels"
VERDICTS = ("glomerulus", "other", "unsure")
CROP_UM = 320.0  # side of a contact-sheet crop: a glomerulus and its surroundings


def audited_tiles(model_json: dict) -> list[tuple[str, RealTile]]:
    """(set, tile) for the model's validation tiles and every held-out test tile."""
    # The study's import names a tile train_<n>, the bundle hubmap_pas_<n>.
    val = {f"{ID_PREFIX}{i.removeprefix('train_')}" for i in model_json["val_ids"]}
    train = [t for t in load_real_tiles("train") if t.id in val]
    if len(train) != len(val):
        raise SystemExit(f"{len(val) - len(train)} of the model's validation tiles not bundled")
    return [("validation", t) for t in train] + [("test", t) for t in load_real_tiles("test")]


def unannotated(pred: np.ndarray, truth: np.ndarray, pixel_size: float) -> list[dict]:
    """Predicted components of glomerulus size that touch no annotated pixel."""
    labels, n = ndimage.label(pred)
    found = []
    for k, box in enumerate(ndimage.find_objects(labels), 1):
        component = labels[box] == k
        area = int(component.sum())
        if area * pixel_size**2 < MIN_AREA_UM2 or truth[box][component].any():
            continue
        cy, cx = ndimage.center_of_mass(component)
        found.append({"component": len(found) + 1, "area_px": area,
                      "area_um2": round(area * pixel_size**2),
                      "y": int(box[0].start + cy), "x": int(box[1].start + cx)})  # fmt: skip
    return found


def crop(tile: RealTile, pred: np.ndarray, c: dict, side: int = 200) -> np.ndarray:
    """The component's surroundings with its outline in red, labelled tile:component."""
    half = int(CROP_UM / tile.pixel_size / 2)
    y0, x0 = max(0, c["y"] - half), max(0, c["x"] - half)
    view = tile.image[y0 : y0 + 2 * half, x0 : x0 + 2 * half].copy()
    outline, _ = cv2.findContours(
        pred[y0 : y0 + 2 * half, x0 : x0 + 2 * half].astype(np.uint8),
        cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
    )  # fmt: skip
    cv2.drawContours(view, outline, -1, (255, 0, 0), 2)
    # A crop cut by the tile's edge is padded white to the square it would be.
    view = cv2.copyMakeBorder(view, 0, 2 * half - view.shape[0], 0, 2 * half - view.shape[1],
                              cv2.BORDER_CONSTANT, value=(255, 255, 255))  # fmt: skip
    view = cv2.resize(view, (side, side), interpolation=cv2.INTER_AREA)
    cv2.putText(view, f"{tile.id}:{c['component']}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (0, 0, 0), 2)  # fmt: skip
    return view


def measure() -> None:
    """Predict the audited tiles; write the per-tile counts, the components and the sheet."""
    bundle = shipped_bundle(ORGAN)
    predictor, config, manifest = load_bundle(bundle)
    model_json = json.loads((bundle / manifest["members"][0]["path"] / "model.json").read_text())
    threshold = config.threshold(ORGAN)
    tiles, components, crops = [], [], []
    for which, tile in track(audited_tiles(model_json), description="audit"):
        prob = predictor.predict(tile.image, tile.pixel_size, ORGAN)
        pred = postprocess(prob, threshold, tile.pixel_size, predictor.config.min_component_um2)
        truth = tile.mask.astype(bool)
        tiles.append({"id": tile.id, "set": which, "pixel_size": tile.pixel_size,
                      "p": int(pred.sum()), "t": int(truth.sum()),
                      "pt": int((pred & truth).sum())})  # fmt: skip
        for c in unannotated(pred, truth, tile.pixel_size):
            components.append({"id": tile.id, "set": which, **c})
            crops.append(crop(tile, pred, c))
    pd.DataFrame(tiles).to_csv(TILES_CSV, index=False)
    pd.DataFrame(components).to_csv(COMPONENTS_CSV, index=False)
    while len(crops) % 8:
        crops.append(np.full_like(crops[0], 255))
    sheet = np.vstack([np.hstack(crops[k : k + 8]) for k in range(0, len(crops), 8)])
    cv2.imwrite(str(SHEET), sheet[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])


def reviewed(components: pd.DataFrame) -> pd.DataFrame:
    """The components with their verdicts; every listed component must have exactly one."""
    review = pd.read_csv(REVIEW, dtype={"id": str})
    bad = sorted(set(review["verdict"]) - set(VERDICTS))
    if bad:
        raise SystemExit(f"{REVIEW}: verdicts {bad} not in {VERDICTS}")
    merged = components.merge(review, on=["id", "component"], how="outer", indicator=True)
    if (merged["_merge"] != "both").any():
        odd = merged.loc[merged["_merge"] != "both", ["id", "component"]].values.tolist()
        raise SystemExit(f"{REVIEW}: components without a verdict or not listed: {odd[:5]}")
    return merged.drop(columns="_merge")


def report(check: bool = False) -> dict:
    tiles = pd.read_csv(TILES_CSV, dtype={"id": str})
    components = reviewed(pd.read_csv(COMPONENTS_CSV, dtype={"id": str}))
    tiles["dice"] = 2 * tiles["pt"] / (tiles["p"] + tiles["t"])
    # Ignored: the components reviewed as glomeruli; at most: every listed one (unsure too).
    for column, verdicts in (("ignore", ["glomerulus"]), ("ignore_all", list(VERDICTS))):
        area = components[components["verdict"].isin(verdicts)].groupby("id")["area_px"].sum()
        tiles[column] = tiles["id"].map(area).fillna(0).astype(int)
        tiles[f"dice_{column}"] = 2 * tiles["pt"] / (tiles["p"] - tiles[column] + tiles["t"])
    rows = []
    for which, group in tiles.groupby("set", sort=False):
        found = components[components["set"] == which]
        rows.append({
            "set": which, "tiles": len(group),
            "components": len(found),
            **{v: int((found["verdict"] == v).sum()) for v in VERDICTS},
            "tiles_with_unannotated": int(group["ignore"].gt(0).sum()),
            "dice": rounded(bootstrap(group["dice"].to_numpy())),
            "dice_ignore": rounded(bootstrap(group["dice_ignore"].to_numpy())),
            "gain": rounded(bootstrap((group["dice_ignore"] - group["dice"]).to_numpy())),
            "dice_ignore_all": rounded(bootstrap(group["dice_ignore_all"].to_numpy())),
        })  # fmt: skip
    result = {"min_area_um2": MIN_AREA_UM2, "rows": rows}
    write_tables(TABLE, result, markdown(rows), "kidney_labels.py", check)
    return result


def markdown(rows: list[dict]) -> str:
    ci = interval_text
    lines = [
        "# Kidney tiles: glomeruli the masks leave out",
        "",
        "Generated by `research/kidney_labels.py --report` from `kidney_labels_tiles.csv`, "
        "`kidney_labels_components.csv` and the review `../kidney_label_review.csv`. The shipped "
        "glomerulus model on the bundled tiles it never trained on; a component is listed when "
        f"it is at least {MIN_AREA_UM2:.0f} µm² and touches no annotated glomerulus (contact "
        "sheet: `kidney_labels.jpg`). Dice per tile, 95 % bootstrap intervals over tiles; "
        "*ignoring* leaves the components reviewed as glomeruli out of the score (the last "
        "column: every listed component, the unsure ones too, an upper bound).",
        "",
        "| tiles | n | listed | glomerulus | other | unsure | tiles with one | Dice as published "
        "| Dice, glomeruli ignored | gain | every listed one ignored |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['tiles']} | {r['components']} | {r['glomerulus']} | {r['other']} "
            f"| {r['unsure']} | {r['tiles_with_unannotated']} | {ci(r['dice'])} | "
            f"{ci(r['dice_ignore'])} | {ci(r['gain'])} | {ci(r['dice_ignore_all'])} |"
        )
    return "\n".join([*lines, ""])


def main() -> None:
    args = table_args(__doc__)
    if not (args.report or args.check):
        measure()
    print(json.dumps(report(check=args.check), indent=2))


if __name__ == "__main__":
    main()
