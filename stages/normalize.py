"""Stage `normalize`: stain-normalise every prepared image and stain copy once (staintools),
when `stain.normalize.method` is not `none`; training memory-maps the cached results."""

import _checkout  # noqa: F401  (before any ftuseg import)

from ftuseg.core.stage import Stage, stage
from ftuseg.domain.normalize import NormalizeConfig, run_normalize_stage


@stage
def main(s: Stage) -> None:
    cfg = s.config(NormalizeConfig, "stain.normalize")
    table = run_normalize_stage(s.layout.prepared, s.layout.stain, s.layout.normalized, cfg)
    if cfg.method == "none":
        print("normalize: stain.normalize.method is none, nothing to normalise")
    else:
        print(f"normalize: {len(table)} images and copies normalised ({cfg.method})")


if __name__ == "__main__":
    main()
