"""FTU annotations as polygons: the competition's polygon JSON, GeoJSON (QuPath), masks.

Coordinates are pixel ``[x, y]`` = ``[column, row]`` with integers at pixel centres, as in the
competition's ``train_annotations/*.json`` (filling them reproduces the RLE masks, see
tests/test_rle.py). QuPath's origin is the corner of the first pixel, half a pixel away: within
any annotation's precision, so files are read and written as they are.

Polygons are shapely geometries; a polygon's holes (a lumen inside a gland, say) survive the
round trip mask -> polygons -> mask.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, box, mapping, shape

from ftuseg.core.errors import DataError
from ftuseg.core.utils import atomic_path

log = logging.getLogger(__name__)

SHIFT = 4  # cv2.fillPoly sub-pixel bits: coordinates keep 1/16 px
FTU_CLASS = "FTU"
FTU_COLOR = [0, 200, 0]


def _ring(points: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(points, dtype=float)
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.isfinite(arr).all():
        raise DataError(f"{where}: a polygon must be a list of [x, y] number pairs")
    return arr


def read_polygon_json(path: str | Path) -> list[Polygon]:
    """The competition's annotation file: a JSON list of polygons, each a list of ``[x, y]``.
    Polygons with fewer than 3 points are an error (they have no area to fill)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of polygons, got {type(data).__name__}")
    polygons = []
    for k, points in enumerate(data):
        ring = _ring(points, f"{path}: polygon {k}")
        if len(ring) < 3:
            raise DataError(f"{path}: polygon {k} has {len(ring)} point(s), needs at least 3")
        polygons.append(Polygon(ring))
    return polygons


def _features(data: Any, path: Path) -> list[dict]:
    """The features of a GeoJSON document: a FeatureCollection, one Feature, a bare geometry or
    a plain list of Features (QuPath's "export as array")."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        return list(data.get("features") or [])
    if isinstance(data, dict) and data.get("type") == "Feature":
        return [data]
    if isinstance(data, dict) and "coordinates" in data:
        return [{"type": "Feature", "geometry": data, "properties": {}}]
    raise DataError(f"{path}: not GeoJSON (no FeatureCollection, Feature or geometry)")


def _numbers(node: Any) -> Iterable[float]:
    """Every number in a (nested) GeoJSON coordinates list."""
    if isinstance(node, int | float):
        yield float(node)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _numbers(item)


def feature_class(feature: dict) -> str | None:
    """QuPath's class name of a feature (``properties.classification.name``), if any."""
    cls = (feature.get("properties") or {}).get("classification")
    if isinstance(cls, dict):
        return cls.get("name")
    return cls if isinstance(cls, str) else None


def read_geojson(path: str | Path, class_name: str | None = None) -> list[Polygon]:
    """The (Multi)Polygon features of a GeoJSON file, optionally only those of QuPath class
    ``class_name``. Other geometry types (points, lines) among the kept features are an error
    naming the feature: they mark no area, and dropping them silently would lose annotations."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err})") from None
    polygons: list[Polygon] = []
    for k, feature in enumerate(_features(data, path)):
        if not isinstance(feature, dict) or not isinstance(feature.get("geometry"), dict):
            raise DataError(f"{path}: feature {k} has no geometry")
        if class_name is not None and feature_class(feature) != class_name:
            continue
        if not all(math.isfinite(v) for v in _numbers(feature["geometry"].get("coordinates"))):
            raise DataError(f"{path}: feature {k} has a non-finite coordinate (NaN or infinity)")
        try:
            geom = shape(feature["geometry"])
        except (ValueError, TypeError, AttributeError, shapely.errors.GEOSException) as err:
            raise DataError(f"{path}: feature {k}: invalid geometry ({err})") from None
        if isinstance(geom, Polygon):
            polygons.append(geom)
        elif isinstance(geom, MultiPolygon):
            polygons.extend(geom.geoms)
        else:
            raise DataError(
                f"{path}: feature {k} is a {geom.geom_type}, not an area; keep only the FTU "
                "class with --class, or remove it"
            )
    return polygons


def checked_polygons(
    polygons: Sequence[Polygon], where: str, shape_hw: tuple[int, int]
) -> list[Polygon]:
    """Every polygon of an annotation file checked against its image: finite coordinates, at
    least 3 distinct points and an area (else an error naming the file and polygon); one lying
    wholly outside the ``(H, W)`` image is an error, one reaching past its edge is clipped to it
    with a warning that says so."""
    height, width = shape_hw
    frame = box(0, 0, width, height)
    out = []
    for k, poly in enumerate(polygons):
        rings = [poly.exterior, *poly.interiors]
        coords = np.concatenate([np.asarray(r.coords, dtype=float).reshape(-1, 2) for r in rings])
        if not np.isfinite(coords).all():
            raise DataError(f"{where}: polygon {k} has a non-finite coordinate (NaN or infinity)")
        distinct = len({tuple(xy) for xy in np.asarray(poly.exterior.coords)[:, :2].tolist()})
        if distinct < 3:
            raise DataError(f"{where}: polygon {k} has {distinct} distinct point(s), needs 3")
        poly, parts = _repaired(poly, where, k)
        if not parts:
            raise DataError(f"{where}: polygon {k} has no area (its points are collinear)")
        if not poly.intersects(frame):
            raise DataError(f"{where}: polygon {k} lies outside the {width}x{height} image")
        if not frame.contains(poly):
            log.warning(
                "%s: polygon %d reaches past the %dx%d image: clipped", where, k, width, height
            )
            out += [p for p in _parts(poly.intersection(frame)) if p.area > 0]
            continue
        out += parts
    return out


def _repaired(poly: Polygon, where: str, k: int) -> tuple[Any, list[Polygon]]:
    """A valid form of polygon ``k`` and its parts with area. A self-intersecting outline (a
    "bow-tie", as hand-drawn outlines and QuPath exports can be) has lobes whose signed areas
    cancel: shapely's ``make_valid`` keeps every lobe, with a warning naming the polygon."""
    if poly.is_valid:
        return poly, [poly] if poly.area > 0 else []
    valid = shapely.make_valid(poly)
    parts = [p for p in _parts(valid) if p.area > 0]
    if parts:
        log.warning(
            "%s: polygon %d crosses itself: repaired into %d part(s) of %.1f px² in all "
            "(shapely make_valid)",
            where,
            k,
            len(parts),
            sum(p.area for p in parts),
        )
    return valid, parts


def rasterise(polygons: Iterable[Polygon], shape_hw: tuple[int, int]) -> np.ndarray:
    """uint8 0/1 mask of polygons (sub-pixel precise), holes cleared after each exterior."""
    mask = np.zeros(shape_hw, np.uint8)

    def pts(ring: Any) -> np.ndarray:
        return np.round(np.asarray(ring.coords)[:, :2] * (1 << SHIFT)).astype(np.int32)

    for poly in polygons:
        if poly.is_empty:
            continue
        cv2.fillPoly(mask, [pts(poly.exterior)], 1, lineType=cv2.LINE_8, shift=SHIFT)
        if poly.interiors:
            cv2.fillPoly(mask, [pts(r) for r in poly.interiors], 0, cv2.LINE_8, shift=SHIFT)
    return mask


def mask_to_polygons(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[Polygon]:
    """Polygons (with holes) tracing a mask's foreground pixel centres; ``offset`` (x, y) is
    added to every coordinate (a chunk's place in its slide). Single pixels and one-pixel-thin
    lines, which have no area, are dropped."""
    contours, hierarchy = cv2.findContours(
        np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    dx, dy = offset
    polygons = []
    for k, contour in enumerate(contours):
        if hierarchy[k][3] != -1 or len(contour) < 3:  # a hole, or no area
            continue
        holes, child = [], hierarchy[k][2]
        while child != -1:
            if len(contours[child]) >= 3:
                holes.append(contours[child][:, 0] + (dx, dy))
            child = hierarchy[child][0]
        poly = Polygon(contour[:, 0] + (dx, dy), holes)
        if not poly.is_valid:  # pixel contours can touch themselves (a one-pixel neck)
            poly = shapely.make_valid(poly)
        polygons += [p for p in _parts(poly) if p.area > 0]
    return polygons


def _parts(geom: Any) -> list[Polygon]:
    """The polygons of a geometry (a make_valid result can be a collection)."""
    if isinstance(geom, Polygon):
        return [geom]
    return [p for g in getattr(geom, "geoms", []) for p in _parts(g)]


def feature_collection(
    polygons: Sequence[Polygon], properties: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A GeoJSON FeatureCollection QuPath imports as annotations of class ``FTU``."""
    features = []
    for poly in polygons:
        props = {
            "objectType": "annotation",
            "classification": {"name": FTU_CLASS, "color": FTU_COLOR},
            **(properties or {}),
        }
        features.append({"type": "Feature", "geometry": mapping(poly), "properties": props})
    return {"type": "FeatureCollection", "features": features}


def write_geojson(
    path: str | Path, polygons: Sequence[Polygon], properties: dict[str, Any] | None = None
) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(feature_collection(polygons, properties)))
