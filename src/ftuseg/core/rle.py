"""Run-length encoding in the competition's format.

Runs are space-separated ``start length`` pairs, **1-indexed** and **column-major**: pixels are
numbered top to bottom, then left to right. Both directions are vectorised; on real
3000×3000 masks they run several times faster than the classic Kaggle loop
(see ``benchmarks/rle.py``).
"""

from __future__ import annotations

import warnings

import numpy as np

from ftuseg.core.errors import DataError


def parse_runs(rle: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate an RLE string into 0-based ``starts`` and ``lengths`` (int64).

    Raises DataError for non-integer tokens, an odd token count, non-positive values, or runs
    that are out of order or overlap. Bounds against an image are checked by :func:`decode`.
    """
    if not isinstance(rle, str):
        raise DataError(f"RLE must be a string, got {type(rle).__name__}")
    text = rle.strip()
    if not text:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    with warnings.catch_warnings():
        # NumPy only warns when it stops before the end of the text: treat that as bad input.
        warnings.simplefilter("error", DeprecationWarning)
        try:
            tokens = np.fromstring(text, dtype=np.int64, sep=" ")
        except (DeprecationWarning, ValueError) as err:
            raise DataError(f"RLE has a token that is not an integer ({err})") from None
    if tokens.size % 2:
        raise DataError(
            f"RLE has an odd number of tokens ({tokens.size}): expected start/length pairs"
        )
    starts = tokens[0::2] - 1
    lengths = tokens[1::2]
    if starts.size and starts.min() < 0:
        raise DataError("RLE has a start below 1 (starts are 1-indexed)")
    if lengths.size and lengths.min() < 1:
        raise DataError("RLE has a run length below 1")
    ends = starts + lengths
    if starts.size > 1:
        bad = np.flatnonzero(starts[1:] < ends[:-1])
        if bad.size:
            i = int(bad[0]) + 1
            raise DataError(
                f"RLE runs overlap or are out of order at pair {i + 1} "
                f"(start {int(starts[i]) + 1} before the previous run ends at {int(ends[i - 1])})"
            )
    return starts, lengths


def decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode an RLE string into a ``(height, width)`` uint8 mask of 0/1.

    The result is a transposed view of a column-major buffer (as the classic implementation
    returns); call ``np.ascontiguousarray`` where C order matters.
    """
    height, width = (int(s) for s in shape)
    n = height * width
    starts, lengths = parse_runs(rle)
    if starts.size == 0:
        return np.zeros((width, height), dtype=np.uint8).T
    last_end = int(starts[-1] + lengths[-1])
    if last_end > n:
        raise DataError(
            f"RLE run ends at pixel {last_end}, past the image area {height}x{width}={n}"
        )
    # Alternate 0/1 segments: gap, run, gap, run, ..., tail gap; np.repeat writes them in one pass.
    segments = np.empty(2 * starts.size + 1, dtype=np.int64)
    segments[0] = starts[0]
    segments[1::2] = lengths
    segments[2:-1:2] = starts[1:] - (starts[:-1] + lengths[:-1])
    segments[-1] = n - last_end
    values = np.zeros(segments.size, dtype=np.uint8)
    values[1::2] = 1
    return np.repeat(values, segments).reshape(width, height).T


def encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (nonzero = foreground) as a competition RLE string.

    Transitions are found along axis 0 of the C-ordered mask (no transposed copy), then sorted
    into column-major order; a run that continues from the bottom of one column into the top of
    the next is merged, exactly as the flat column-major sequence requires.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    m = mask.view(np.uint8) if mask.dtype == np.bool_ else np.not_equal(mask, 0).view(np.uint8)
    height, width = m.shape
    if m.size == 0:
        return ""
    inner = np.flatnonzero(m[1:] != m[:-1])
    rows, cols = np.divmod(inner, width)
    pos = np.concatenate(
        [
            np.flatnonzero(m[0]) * height,
            cols * height + rows + 1,
            np.flatnonzero(m[-1]) * height + height,
        ]
    )
    pos.sort()
    if pos.size > 1:
        touching = pos[1:] == pos[:-1]
        if touching.any():
            keep = np.ones(pos.size, dtype=bool)
            keep[1:][touching] = False
            keep[:-1][touching] = False
            pos = pos[keep]
    pos[1::2] -= pos[0::2]
    pos[0::2] += 1
    return " ".join(map(str, pos.tolist()))
