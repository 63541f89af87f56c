"""Stage `stain`: recoloured stain copies of every prepared training image."""

import _checkout  # noqa: F401  (before any ftuseg import)

from ftuseg.core.stage import Stage, stage
from ftuseg.core.utils import write_json
from ftuseg.domain.stain import StainAugmentConfig, copy_timing, run_stain_stage


@stage
def main(s: Stage) -> None:
    table = run_stain_stage(
        s.layout.prepared, s.layout.stain, s.config(StainAugmentConfig, "stain.augment")
    )
    timing = copy_timing(table)
    # A measurement: kept out of data/stain, which stays byte-stable.
    write_json(s.layout.metric("stain.json"), timing)
    print(
        f"stain: {timing['copies']} copies of {timing['images']} images; per image: fit "
        f"{timing['fit_seconds_per_image']:.3f} s, each copy {timing['seconds_per_copy']:.4f} s"
    )


if __name__ == "__main__":
    main()
