"""Stage `unlabeled`: unlabeled target-domain images at the training scale (domain-adversarial
training and pseudo-labels read them; with `train.domain_weight: 0` and `train.pseudo_start: 0`
the stage writes an empty index)."""

from pathlib import Path

import _checkout  # noqa: F401  (before any ftuseg import)

from ftuseg.core.errors import DataError
from ftuseg.core.stage import Stage, stage
from ftuseg.data.unlabeled import prepare_unlabeled


@stage
def main(s: Stage) -> None:
    out, source = s.layout.unlabeled, s.layout.unlabeled_source
    used = float(s.value("train.domain_weight")) > 0 or int(s.value("train.pseudo_start")) > 0
    um_per_px = float(s.value("prepare.um_per_px"))
    if used and source is None:
        raise DataError(
            "params.yaml: data.unlabeled_dir is not set but the unlabeled images are used"
        )
    index = prepare_unlabeled(source or Path(), out, um_per_px, used)
    state = (
        f"{len(index)} images at {um_per_px} µm/px"
        if used
        else "off (domain_weight 0, pseudo_start 0)"
    )
    print(f"unlabeled: {state} -> {out}")


if __name__ == "__main__":
    main()
