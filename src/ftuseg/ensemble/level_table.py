"""The weight search's exact objective in bounded memory: per image, the distinct tuples of member
levels (uint8 quantised OOF probabilities) with their pixel and FTU counts, so one evaluation of
the mean Dice at any weights and thresholds touches each distinct tuple once, not every pixel."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ftuseg.core.metrics import dice_from_counts
from ftuseg.infer.maps import dequantize, member_weights, quantize


def threshold_counts(
    prob: np.ndarray, truth: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """|P∩T| and |P| for ``P = prob > t`` at every threshold, in one pass over the pixels."""
    # searchsorted(side="left") counts the thresholds strictly below each pixel's probability.
    above = np.searchsorted(thresholds, prob.ravel(), side="left")
    k = thresholds.size
    all_hist = np.bincount(above, minlength=k + 1)
    in_hist = np.bincount(above[truth.ravel().astype(bool)], minlength=k + 1)
    # Pixels with above == i exceed thresholds 0..i-1: suffix sums give the count for each t.
    pred_sum = np.cumsum(all_hist[::-1])[::-1][1:]
    inter = np.cumsum(in_hist[::-1])[::-1][1:]
    return inter, pred_sum, int(truth.sum())


def best_thresholds(
    scores: np.ndarray, organs: np.ndarray, grid: np.ndarray
) -> tuple[dict[str, float], float]:
    """Per-organ threshold maximising the organ's mean Dice, and the resulting overall mean."""
    chosen, per_image = {}, np.zeros(len(organs))
    for organ in np.unique(organs):
        sel = organs == organ
        j = int(np.argmax(scores[sel].mean(axis=0)))
        chosen[str(organ)] = round(float(grid[j]), 4)
        per_image[sel] = scores[sel, j]
    return chosen, float(per_image.mean())


class LevelTable:
    """The OOF member maps of many images, reduced to what the weight search needs.

    Every step from member maps to a thresholded mask is per pixel (weighted sum of uint8
    levels, re-quantisation to uint8, comparison with a threshold), so a pixel's outcome depends
    only on its tuple of member levels and whether it lies inside the truth. Each image is
    stored as its distinct (levels, inside) tuples with their pixel counts: the objective then
    costs O(distinct tuples) instead of O(pixels) and gives the same numbers as evaluating every
    pixel (the arithmetic is :func:`ftuseg.infer.maps.combine`'s, element by element, through
    256-entry tables per member). Memory holds the tuples, ``members + 4`` bytes each (0.39
    tuples per pixel on noisy synthetic maps, 0.28 on the sample's OOF maps), never the maps;
    evaluation works one image at a time on ``workers`` threads (numpy releases the GIL in the
    gathers and sums that dominate).
    """

    def __init__(self, n_members: int, workers: int | None = None) -> None:
        if not 1 <= n_members <= 7:
            raise ValueError(f"the weight search packs up to 7 members, got {n_members}")
        self.n_members = n_members
        self.workers = workers or os.cpu_count() or 1
        # Per image: member levels (M, U) uint8 and pixel counts (U,) uint32, split into the
        # tuples inside the truth and those outside it.
        self._inside: list[tuple[np.ndarray, np.ndarray]] = []
        self._outside: list[tuple[np.ndarray, np.ndarray]] = []
        self.truth_sums: list[int] = []
        self.pixels = 0

    def add(self, maps: Sequence[np.ndarray], truth: np.ndarray) -> None:
        """One image: its members' quantised maps and its truth mask (same shape)."""
        if len(maps) != self.n_members:
            raise ValueError(f"expected {self.n_members} member maps, got {len(maps)}")
        if truth.size >= 2**32:
            raise ValueError(f"an image of {truth.size} pixels overflows the uint32 counts")
        # 1 + 8 * members bits: uint32 sorts twice as fast as uint64 for up to 3 members.
        dtype = np.uint32 if self.n_members <= 3 else np.uint64
        code = truth.ravel().astype(bool).astype(dtype)
        for m, q in enumerate(maps):
            if q.shape != truth.shape or q.dtype != np.uint8:
                raise ValueError("member maps must be uint8 arrays of the truth's shape")
            code |= q.ravel().astype(dtype) << dtype(1 + 8 * m)
        unique, counts = np.unique(code, return_counts=True)
        levels = np.stack(
            [
                ((unique >> dtype(1 + 8 * m)) & dtype(255)).astype(np.uint8)
                for m in range(self.n_members)
            ]
        )
        inside = (unique & dtype(1)).astype(bool)
        counts = counts.astype(np.uint32)
        self._inside.append((levels[:, inside], counts[inside]))
        self._outside.append((levels[:, ~inside], counts[~inside]))
        self.truth_sums.append(int(np.count_nonzero(truth)))
        self.pixels += truth.size

    def __len__(self) -> int:
        return len(self._inside)

    @property
    def tuples(self) -> int:
        return sum(c.size for _, c in self._inside) + sum(c.size for _, c in self._outside)

    @property
    def nbytes(self) -> int:
        parts = self._inside + self._outside
        return sum(lv.nbytes + c.nbytes for lv, c in parts)

    def _image_counts(
        self, i: int, weights: Sequence[float], bins: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Image ``i``'s histograms over threshold bins: all pixels, pixels inside the truth."""
        total = float(sum(weights))
        # combine()'s arithmetic as tables: float32(w / total) · level / 255 for each level.
        luts = [np.float32(w / total) * dequantize(np.arange(256, dtype=np.uint8)) for w in weights]
        hists = []
        for levels, counts in (self._inside[i], self._outside[i]):
            acc = luts[0][levels[0]]
            for m in range(1, self.n_members):
                acc += luts[m][levels[m]]
            hists.append(np.bincount(bins[quantize(acc)], weights=counts, minlength=k + 1))
        return hists[0] + hists[1], hists[0]

    def dice_table(self, image_weights: Sequence[Sequence[float]], grid: np.ndarray) -> np.ndarray:
        """Per-image Dice at every threshold of ``grid`` (n_images, len(grid)) for the ensemble
        with ``image_weights[i]`` (one weight per member) on image ``i``."""
        # The threshold bin of each of the 256 levels (as threshold_counts bins probabilities).
        bins = np.searchsorted(grid, np.arange(256, dtype=np.float32) / np.float32(255.0))
        k, n = grid.size, len(self)
        all_hist, in_hist = np.zeros((n, k + 1)), np.zeros((n, k + 1))

        def one(i: int) -> None:
            all_hist[i], in_hist[i] = self._image_counts(i, image_weights[i], bins, k)

        if self.workers > 1 and n > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(one, range(n)))
        else:
            for i in range(n):
                one(i)
        pred_sum = np.cumsum(all_hist[:, ::-1], axis=1)[:, ::-1][:, 1:]
        inter = np.cumsum(in_hist[:, ::-1], axis=1)[:, ::-1][:, 1:]
        truth = np.asarray(self.truth_sums, np.float64)[:, None]
        return dice_from_counts(inter, pred_sum, truth)

    def objective(
        self,
        weights: Sequence[float],
        organs: Sequence[str],
        grid: Sequence[float],
        coverage: Sequence[Sequence[str] | None] | None = None,
    ) -> float:
        """OOF mean Dice of the weighted ensemble with the best threshold per organ (``-inf``
        where the weights leave an organ without a member)."""
        coverage = list(coverage) if coverage is not None else [None] * len(weights)
        grid_arr = np.asarray(sorted(grid), dtype=np.float64)
        if not covers_every_organ(weights, coverage, organs):
            return -np.inf  # infeasible for the search: an organ would have no member
        image_weights = [member_weights(weights, coverage, o) for o in organs]
        table = self.dice_table(image_weights, grid_arr)
        return best_thresholds(table, np.asarray(organs), grid_arr)[1]


def covers_every_organ(
    weights: Sequence[float], coverage: Sequence[Sequence[str] | None], organs: Sequence[str]
) -> bool:
    """Whether every organ of ``organs`` has a member with a positive weight covering it."""
    return all(
        any(
            w > 0 and (cov is None or organ in cov)
            for w, cov in zip(weights, coverage, strict=True)
        )
        for organ in set(organs)
    )


def weights_objective(
    weights: Sequence[float],
    maps: Sequence[Sequence[np.ndarray]],
    truths: Sequence[np.ndarray],
    organs: Sequence[str],
    grid: Sequence[float],
    coverage: Sequence[Sequence[str] | None] | None = None,
) -> float:
    """What the weight search maximises: OOF mean Dice of the weighted ensemble with the best
    threshold per organ (``-inf`` where the weights leave an organ without a member)."""
    return level_table(maps, truths).objective(weights, organs, grid, coverage)


def level_table(maps: Sequence[Sequence[np.ndarray]], truths: Sequence[np.ndarray]) -> LevelTable:
    table = LevelTable(len(maps[0]))
    for m, t in zip(maps, truths, strict=True):
        table.add(m, t)
    return table
