"""The Langevin sampler against a known density, its bookkeeping (trajectory, clipping, bounds), its hands-off
treatment of parameters, and the RBM's free energy as an energy."""

import math

import pytest
import torch
from torch import nn

from genlib.sampling.langevin import energy_gradient, free_energy_fn, langevin_chain, trajectory_energies
from genlib.models import build_model


def gaussian_energy(mu: torch.Tensor, sigma: torch.Tensor):
    """E(x) = sum_i (x_i - mu_i)^2 / (2 sigma_i^2): p(x) ~ exp(-E) is N(mu, diag(sigma^2))."""
    return lambda x: ((x - mu) ** 2 / (2 * sigma ** 2)).sum(1)


def test_langevin_recovers_a_gaussians_mean_and_variance():
    # Unadjusted Langevin (noise^2 = 2 eps, no clip, no bounds) on a 2-D Gaussian. For a Gaussian the chain is an
    # AR(1) process x' = a x + (1 - a) mu + sqrt(2 eps) xi with a = 1 - eps / sigma^2, whose stationary law is
    # N(mu, sigma^2 / (1 - eps / (2 sigma^2))): the discretisation inflates the variance by 0.5% for sigma 1 and
    # 2% for sigma 0.5 at eps = 0.01. 1500 steps shrink the start's offset by a^1500 < e^-6.6. With N = 4000
    # independent chains the sample mean has standard error sigma / sqrt(N) (0.024 at most) and the sample variance
    # sigma^2 sqrt(2 / N) (0.05 at most): the tolerances are 4 standard errors, and the variance is compared with
    # the exact stationary value, so a wrong sign or a factor 2 in the noise (variance off by 2x) cannot pass.
    torch.manual_seed(0)
    mu, sigma = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.5])
    eps, n = 0.01, 4000
    chain = langevin_chain(gaussian_energy(mu, sigma), torch.zeros(n, 2), 1500, step_size=eps,
                           noise=math.sqrt(2 * eps), clip=None, bounds=None,
                           generator=torch.Generator().manual_seed(1))
    x = chain.x
    stationary_var = sigma ** 2 / (1 - eps / (2 * sigma ** 2))
    assert torch.all((x.mean(0) - mu).abs() < 4 * sigma / math.sqrt(n)), x.mean(0)
    assert torch.all((x.var(0) - stationary_var).abs() < 4 * stationary_var * math.sqrt(2 / n)), x.var(0)
    # the chain's reported gradient norm is the mean ||dE/dx|| = ||(x - mu) / sigma^2||: about sqrt(1/0.25 + 1/2.25)
    assert 1.5 < float(chain.grad_norm) < 2.6


def test_zero_noise_is_gradient_descent_to_the_minimum():
    mu = torch.tensor([0.3, 0.7])
    chain = langevin_chain(gaussian_energy(mu, torch.ones(2)), torch.rand(5, 2), 300, step_size=0.1, noise=0.0)
    assert torch.allclose(chain.x, mu.expand(5, 2), atol=1e-4)


def test_trajectory_clip_and_bounds():
    energy = gaussian_energy(torch.full((3,), 5.0), torch.ones(3))  # pulls every coordinate up, far past 1
    x0 = torch.full((4, 3), 0.5)
    chain = langevin_chain(energy, x0, 10, step_size=1.0, noise=0.0, clip=0.03, every=2, return_trajectory=True)
    traj = chain.trajectory
    assert traj.shape == (6, 4, 3) and torch.equal(traj[0], x0) and torch.equal(traj[-1], chain.x)
    # the clipped gradient moves each coordinate by exactly step_size * clip per step (the gradient is -4.5)
    assert torch.allclose(traj[1], x0 + 2 * 0.03)
    long = langevin_chain(energy, x0, 100, step_size=1.0, noise=0.0, clip=0.03)
    assert torch.equal(long.x, torch.ones(4, 3))  # clamped at the upper bound
    assert langevin_chain(energy, x0, 3, step_size=1.0, noise=0.0).trajectory is None


def test_same_generator_same_chain_and_input_untouched():
    energy = gaussian_energy(torch.zeros(4), torch.ones(4))
    x0 = torch.rand(3, 4)
    before = x0.clone()
    a = langevin_chain(energy, x0, 20, step_size=0.01, noise=0.1, generator=torch.Generator().manual_seed(5)).x
    b = langevin_chain(energy, x0, 20, step_size=0.01, noise=0.1, generator=torch.Generator().manual_seed(5)).x
    assert torch.equal(a, b) and torch.equal(x0, before) and not x0.requires_grad


def test_the_sampler_leaves_parameters_as_it_found_them():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    net[0].bias.requires_grad_(False)  # a frozen parameter must stay frozen
    net[2].weight.grad = torch.full_like(net[2].weight, 7.0)  # a gradient from elsewhere must stay untouched
    flags = [p.requires_grad for p in net.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in net.parameters()]
    weights = [p.detach().clone() for p in net.parameters()]
    chain = langevin_chain(lambda x: net(x).squeeze(1), torch.rand(5, 6), 25, step_size=0.1, noise=0.01)
    assert chain.x.shape == (5, 6) and not chain.x.requires_grad
    assert [p.requires_grad for p in net.parameters()] == flags
    for p, g, w in zip(net.parameters(), grads, weights):
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)
        assert torch.equal(p.detach(), w)


def test_the_ebm_sampler_needs_no_parameter_gradients_and_refuses_inference_mode():
    model = build_model("ebm", {"channels": (4, 4, 8, 8), "hidden": 8, "sample_steps": 4})
    flags = [p.requires_grad for p in model.parameters()]
    with torch.no_grad():  # no_grad is fine: the chain turns gradients on for itself
        x = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 28, 28) and all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        model.sample(2)


def test_bad_arguments_are_refused():
    energy = gaussian_energy(torch.zeros(2), torch.ones(2))
    x0 = torch.zeros(3, 2)
    for kwargs in ({"step_size": -1.0, "noise": 0.1}, {"step_size": 0.1, "noise": 0.1, "clip": 0.0},
                   {"step_size": 0.1, "noise": 0.1, "bounds": (1.0, 0.0)}, {"step_size": 0.1, "noise": 0.1, "every": 0}):
        with pytest.raises(ValueError):
            langevin_chain(energy, x0, 3, **kwargs)
    with pytest.raises(ValueError, match="non-negative"):
        langevin_chain(energy, x0, -1, step_size=0.1, noise=0.1)
    with pytest.raises(ValueError, match="one energy per input"):
        energy_gradient(lambda x: x.sum(), x0)


def test_rbm_free_energy_as_an_energy_and_its_gradient():
    torch.manual_seed(0)
    rbm = build_model("rbm", {"n_hidden": 16})
    with torch.no_grad():
        rbm.v_bias.normal_(0, 0.1)
        rbm.h_bias.normal_(0, 0.1)
        rbm.W.normal_(0, 0.1)
    energy = free_energy_fn(rbm)
    x = torch.rand(5, 1, 28, 28)
    v = x.reshape(5, -1)
    assert torch.allclose(energy(x), rbm.free_energy(v))
    # brute force over h for a tiny RBM is in test_rbm.py; here the gradient against the closed form
    # dF/dv = -b - W^T sigmoid(W v + c)
    e, grad = energy_gradient(energy, x)
    expected = -rbm.v_bias - torch.sigmoid(v @ rbm.W.t() + rbm.h_bias) @ rbm.W
    assert torch.allclose(grad.reshape(5, -1), expected.detach(), atol=1e-5)
    assert all(p.grad is None for p in rbm.parameters())
    # with no noise, Langevin on F only ever lowers it
    chain = langevin_chain(energy, x, 30, step_size=0.01, noise=0.0, return_trajectory=True)
    f = trajectory_energies(energy, chain.trajectory)  # (31, 5)
    assert f.shape == (31, 5) and torch.all(f[1:] <= f[:-1] + 1e-4)
