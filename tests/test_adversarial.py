"""Domain-adversarial parts: the gradient-reversal layer and its schedule."""

from __future__ import annotations

import math

import pytest
import torch

from ftuseg.models.adversarial import (
    DomainClassifier,
    GradientReversal,
    dann_schedule,
    reverse_gradient,
)


@pytest.mark.parametrize("scale", [0.0, 0.3, 1.0, 2.5])
def test_reversal_is_identity_forward_and_flips_and_scales_the_gradient(scale):
    x = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(4, 7, dtype=torch.float64)
    y = reverse_gradient(x, scale)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.equal(x.grad, -scale * upstream)


def test_reversal_module_reverses_only_what_passes_through_it():
    """The classifier's own parameters get the ordinary gradient; the features the reversed one."""
    torch.manual_seed(0)
    features = torch.randn(3, 8, 5, 5, requires_grad=True)
    clf = DomainClassifier(8, hidden=16, scale=0.5)
    clf.eval()  # no dropout: the two passes below must see the same function
    clf(features).sum().backward()
    reversed_grad = features.grad.clone()
    head_grad = [p.grad.clone() for p in clf.head.parameters()]

    features.grad = None
    clf.zero_grad()
    clf.reversal = torch.nn.Identity()
    clf(features).sum().backward()
    assert torch.allclose(reversed_grad, -0.5 * features.grad, atol=1e-7)
    for before, p in zip(head_grad, clf.head.parameters(), strict=True):
        assert torch.equal(before, p.grad)


def test_negative_scale_is_an_error():
    with pytest.raises(ValueError, match="reversal scale"):
        reverse_gradient(torch.zeros(1), -1.0)
    assert "scale=0.25" in repr(GradientReversal(0.25))


def test_dann_schedule_rises_from_zero_to_almost_one():
    assert dann_schedule(0.0) == 0.0
    assert dann_schedule(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    values = [dann_schedule(p / 10) for p in range(11)]
    assert values == sorted(values) and values[-1] > 0.999
    with pytest.raises(ValueError):
        dann_schedule(1.5)
