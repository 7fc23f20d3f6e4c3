"""genlib.models.spectral_norm against torch's spectral_norm: the same normalised weight from the same singular-vector
estimates, the same state-dict names, a power iteration that finds the largest singular value, and forward passes
that never move the estimates."""

import torch
from torch import nn

from genlib.models.spectral_norm import SpectralNorm, power_iteration_, spectral_norm_


def _pairs():
    """(a layer under torch's spectral_norm, the same layer under ours), a convolution and a Linear."""
    for make in (lambda: nn.Conv2d(3, 8, 3), lambda: nn.Linear(20, 7)):
        torch.manual_seed(0)
        yield nn.utils.parametrizations.spectral_norm(make()), spectral_norm_(make())


def test_the_normalised_weight_is_torchs_with_the_same_estimates():
    for reference, ours in _pairs():
        reference.eval()  # in eval mode torch's forward only reads u and v
        assert ours.state_dict().keys() == reference.state_dict().keys()
        ours.load_state_dict(reference.state_dict())
        torch.testing.assert_close(ours.weight, reference.weight)
        assert abs(float(torch.linalg.matrix_norm(ours.weight.detach().flatten(1), ord=2)) - 1.0) < 0.01


def test_power_iteration_finds_the_largest_singular_value():
    torch.manual_seed(1)
    w = torch.randn(16, 40)
    norm = SpectralNorm(w, iterations=1)
    for _ in range(200):
        norm.power_iteration_(w)
    sigma = float(norm._u @ w @ norm._v)
    assert abs(sigma - float(torch.linalg.matrix_norm(w, ord=2))) < 1e-3 * sigma
    assert abs(float(torch.linalg.matrix_norm(norm(w), ord=2)) - 1.0) < 1e-3


def test_forward_passes_leave_the_estimates_and_a_step_moves_them():
    layer = spectral_norm_(nn.Linear(20, 7)).train()
    estimates = lambda: [b.clone() for b in layer.parametrizations.weight[0].buffers()]  # noqa: E731
    before = estimates()
    for _ in range(3):
        layer(torch.randn(4, 20)).sum().backward()
    assert all(torch.equal(a, b) for a, b in zip(before, estimates()))  # sampling or training passes: read only
    with torch.no_grad():
        layer.parametrizations.weight.original.add_(torch.randn(7, 20))  # an optimiser step
    power_iteration_(layer)
    assert not all(torch.equal(a, b) for a, b in zip(before, estimates()))
