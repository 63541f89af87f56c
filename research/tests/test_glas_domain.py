"""research/glas_domain: which runs a method's row is compared with (no training here)."""

from __future__ import annotations

from experiments import merged
from glas_domain import COMMON, METHODS, baseline_of, exp_name


def test_each_variant_is_compared_with_the_default_at_its_own_budget() -> None:
    """A paired difference is only meaningful between runs of the same training budget:
    pseudo-x3 against recolour-x3, not against the 1x default; a recipe variant (its own
    test-side handling included) against the default."""
    assert baseline_of("pseudo-x3") == "recolour-x3"
    assert baseline_of("pseudo") == "recolour"
    assert baseline_of("recolour-od") == "recolour"
    assert baseline_of("recolour") is None
    assert baseline_of("same-stain-x3") is None
    # A recipe variant at the default's budget is compared with the default itself.
    assert baseline_of("recolour-lean-scale") == "recolour"
    assert baseline_of("recolour-x3") is None

    def budget(name: str) -> list[str]:
        keys = ("train.epochs=", "train.samples_per_image=")
        return [s for s in merged(COMMON, METHODS[name].overrides) if s.startswith(keys)]

    for name, method in METHODS.items():
        base = baseline_of(name)
        if base is not None:
            assert budget(base) == budget(name), name
            assert METHODS[base].stain == method.stain == "hpa"


def test_a_methods_budget_replaces_the_common_one() -> None:
    sets = merged(("train.epochs=10", "model=unet"), ("train.epochs=15", "domain=all"))
    assert sets == ["model=unet", "train.epochs=15", "domain=all"]
    assert exp_name("hard", "pseudo-x3", 2, 1, 2.0) == "glas-hard-pseudo-x3-2um-f2-s1"
    assert exp_name("hard", "recolour", 0) == "glas-hard-recolour-f0"
