"""Stage `sample`: generate the embedded sample dataset (skipped when real data is used)."""

import _checkout  # noqa: F401  (before any ftuseg import)

from ftuseg.core.stage import Stage, stage
from ftuseg.core.utils import atomic_path
from ftuseg.data.sample import SampleConfig, generate


@stage
def main(s: Stage) -> None:
    raw_dir, out = s.layout.raw, s.layout.sample
    if raw_dir.resolve() != out.resolve():
        # Real data is configured: keep this stage's output to a note instead of a dataset.
        with atomic_path(out, is_dir=True) as tmp:
            (tmp / "SKIPPED.md").write_text(
                f"The sample dataset was not generated: data.raw_dir points at {raw_dir}.\n"
            )
        print(f"sample: skipped (data.raw_dir = {raw_dir})")
        return
    counts = generate(out, s.config(SampleConfig, "sample"))
    print(f"sample: wrote {counts['train']} train and {counts['test']} test images to {out}")


if __name__ == "__main__":
    main()
