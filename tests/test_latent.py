"""genlib.latent against references: closed-form slerp geometry, the seed's latent points, planted PCA structure."""

import math

import pytest
import torch

from genlib.latent import (expected_norm, generate_latent_points, lerp, manifold_grid, manifold_values, pca_2d,
                           random_directions, slerp, traverse, unit_filters)


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


# ---- lerp / slerp ----

def test_lerp_endpoints_midpoint_and_shapes():
    z0, z1 = torch.randn(3, 5), torch.randn(3, 5)
    assert torch.allclose(lerp(z0, z1, 0.0), z0) and torch.allclose(lerp(z0, z1, 1.0), z1)
    assert torch.allclose(lerp(z0, z1, 0.5), (z0 + z1) / 2)
    path = lerp(z0, z1, torch.linspace(0, 1, 7))
    assert path.shape == (7, 3, 5)
    assert torch.allclose(path[3], (z0 + z1) / 2)


def test_slerp_endpoints():
    z0, z1 = torch.randn(4, 16), torch.randn(4, 16)
    assert torch.allclose(slerp(z0, z1, 0.0), z0, atol=1e-5)
    assert torch.allclose(slerp(z0, z1, 1.0), z1, atol=1e-5)
    path = slerp(z0, z1, torch.linspace(0, 1, 5))
    assert path.shape == (5, 4, 16)
    assert torch.allclose(path[0], z0, atol=1e-5) and torch.allclose(path[-1], z1, atol=1e-5)


def test_slerp_keeps_unit_norm_and_moves_at_constant_angle():
    g = torch.Generator().manual_seed(0)
    z0, z1 = _unit(torch.randn(100, generator=g)), _unit(torch.randn(100, generator=g))
    t = torch.linspace(0, 1, 21)
    path = slerp(z0, z1, t)  # (21, 100)
    assert torch.allclose(path.norm(dim=-1), torch.ones(21), atol=1e-5)
    theta = torch.arccos(torch.dot(z0, z1))
    angles = torch.arccos((path @ z0).clamp(-1, 1))  # angle travelled from z0
    assert torch.allclose(angles, t * theta, atol=1e-3)
    # the straight line's midpoint falls inside the sphere, slerp's does not
    assert lerp(z0, z1, 0.5).norm() < 0.8 and slerp(z0, z1, 0.5).norm() == pytest.approx(1.0, abs=1e-5)


def test_slerp_matches_the_formula_for_unnormalised_vectors_and_falls_back_when_parallel():
    z0, z1 = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 3.0])
    # theta = pi/2: slerp(t) = cos(t pi/2) z0 + sin(t pi/2) z1
    t = 0.3
    expected = math.cos(t * math.pi / 2) * z0 + math.sin(t * math.pi / 2) * z1
    assert torch.allclose(slerp(z0, z1, t), expected, atol=1e-6)
    a = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a, atol=1e-5)  # parallel: the straight line
    assert torch.isfinite(slerp(a, a, 0.25)).all()


# ---- the seed's latent points ----

def test_generate_latent_points_matches_the_seeds_means_and_stds():
    n, dim, sm, ss = 40_000, 100, 2.0, 3.0
    z = generate_latent_points(n, dim, sm, ss, torch.Generator().manual_seed(0))
    assert z.shape == (n, dim) and z.dtype == torch.float32
    ramp = torch.linspace(-1, 1, dim)
    means, stds = sm * ramp, (ss * ramp).abs()  # the seed's tf.random.normal(means, stds): |std| is the same law
    # sample mean within 5 standard errors, sample std within 5 standard errors (s / sqrt(2n))
    assert ((z.mean(0) - means).abs() <= 5 * stds / math.sqrt(n) + 1e-6).all()
    assert ((z.std(0) - stds).abs() <= 5 * stds / math.sqrt(2 * n) + 1e-6).all()
    # coordinate 0 has std |-3| = 3 (a negative std in the seed), the middle ones almost 0
    assert z[:, 0].std() == pytest.approx(3.0, rel=0.03)
    assert z[:, 49:51].std() < 0.1


def test_generate_latent_points_is_reproducible_and_seed_dependent():
    a = generate_latent_points(10, 100, 1.0, 1.0, torch.Generator().manual_seed(7))
    b = generate_latent_points(10, 100, 1.0, 1.0, torch.Generator().manual_seed(7))
    c = generate_latent_points(10, 100, 1.0, 1.0, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # scale_stds = 0: every row is exactly the means
    d = generate_latent_points(3, 100, -5.0, 0.0)
    assert torch.allclose(d, (-5.0 * torch.linspace(-1, 1, 100)).expand(3, 100))
    with pytest.raises(ValueError):
        generate_latent_points(0, 100)


# ---- manifold grids ----

def test_manifold_grid_shape_orientation_and_fixed_dimensions():
    base = torch.arange(6, dtype=torch.float32)
    z = manifold_grid(6, 1, 4, n=5, span=2.0, base=base)
    assert z.shape == (25, 6)
    others = [0, 2, 3, 5]
    assert torch.equal(z[:, others], base[others].expand(25, 4))  # the other dimensions stay fixed
    rows = z.reshape(5, 5, 6)
    values = torch.linspace(-2, 2, 5)
    assert torch.allclose(rows[0, :, 1], values)  # z_i grows left to right along every row
    assert torch.allclose(rows[:, 0, 4], values.flip(0))  # z_j largest in the top row
    assert torch.equal(manifold_grid(6, 1, 4, n=5)[:, 0], torch.zeros(25))  # default base: the prior's mean 0
    with pytest.raises(ValueError):
        manifold_grid(6, 2, 2)


def test_manifold_grid_of_a_2d_latent_uses_normal_quantiles():
    n, span = 9, 1.645
    z = manifold_grid(2, 0, 1, n=n, span=span)
    xs = z[:n, 0]
    normal = torch.distributions.Normal(0.0, 1.0)
    p = torch.linspace(float(normal.cdf(torch.tensor(-span))), float(normal.cdf(torch.tensor(span))), n)
    assert torch.allclose(xs, normal.icdf(p), atol=1e-4)  # Kingma & Welling: evenly spaced probabilities
    gaps = xs.diff()
    assert gaps[n // 2] < gaps[0]  # denser near 0
    assert xs[0] == pytest.approx(-span, abs=1e-4) and xs[-1] == pytest.approx(span, abs=1e-4)
    linear = manifold_grid(2, 0, 1, n=n, span=span, quantiles=False)[:n, 0]
    assert torch.allclose(linear, torch.linspace(-span, span, n))
    assert torch.equal(manifold_values(1), torch.zeros(1))


# ---- traversals and directions ----

def test_traverse_moves_along_a_vector_or_one_coordinate():
    z = torch.randn(8)
    d = _unit(torch.randn(8))
    amounts = torch.tensor([-2.0, 0.0, 1.5])
    path = traverse(z, d, amounts)
    assert path.shape == (3, 8)
    assert torch.allclose(path[1], z)
    assert torch.allclose((path - z).norm(dim=1), amounts.abs(), atol=1e-5)
    axis = traverse(z, 3, [1.0, 2.0])
    assert torch.allclose(axis[:, 3], z[3] + torch.tensor([1.0, 2.0]))
    assert torch.equal(axis[:, [0, 1, 2, 4, 5, 6, 7]], z[[0, 1, 2, 4, 5, 6, 7]].expand(2, 7))
    with pytest.raises(ValueError):
        traverse(z, 8, [1.0])


def test_random_directions_are_unit_orthogonal_and_reproducible():
    d = random_directions(100, 5, torch.Generator().manual_seed(1))
    assert d.shape == (5, 100)
    assert torch.allclose(d @ d.T, torch.eye(5), atol=1e-5)
    assert torch.equal(d, random_directions(100, 5, torch.Generator().manual_seed(1)))
    many = random_directions(3, 6, torch.Generator().manual_seed(1))  # more than dim: unit, not orthogonal
    assert torch.allclose(many.norm(dim=1), torch.ones(6), atol=1e-5)


# ---- projections ----

def test_pca_2d_recovers_a_planted_plane():
    g = torch.Generator().manual_seed(0)
    n, d = 2000, 16
    planted = torch.randn(n, 2, generator=g) * torch.tensor([5.0, 2.0])  # the structure: a 2-D plane
    basis, _ = torch.linalg.qr(torch.randn(d, 2, generator=g))  # (d, 2) orthonormal
    points = planted @ basis.T + 0.05 * torch.randn(n, d, generator=g) + 3.0  # (n, d), off-centre
    coords, ratio = pca_2d(points)
    assert coords.shape == (n, 2) and ratio.shape == (2,)
    assert ratio.sum() > 0.99 and ratio[0] > ratio[1]
    # the coordinates are the planted ones up to sign (distinct variances fix the axes)
    for k in range(2):
        corr = torch.corrcoef(torch.stack([coords[:, k], planted[:, k]]))[0, 1]
        assert abs(float(corr)) > 0.999
    assert torch.allclose(coords.mean(0), torch.zeros(2), atol=1e-3)
    assert torch.equal(coords, pca_2d(points)[0])  # deterministic signs


def test_pca_2d_of_a_1d_latent_and_bad_input():
    coords, ratio = pca_2d(torch.randn(50, 1))
    assert coords.shape == (50, 2) and torch.equal(coords[:, 1], torch.zeros(50)) and ratio[1] == 0
    with pytest.raises(ValueError):
        pca_2d(torch.randn(1, 4))


def test_unit_filters_are_images_in_unit_range():
    w = torch.randn(10, 784)
    f = unit_filters(w, (1, 28, 28), start=2, count=5)
    assert f.shape == (5, 1, 28, 28)
    flat = f.reshape(5, -1)
    assert torch.allclose(flat.min(1).values, torch.zeros(5)) and torch.allclose(flat.max(1).values, torch.ones(5))
    assert torch.allclose(flat[0], (w[2] - w[2].min()) / (w[2].max() - w[2].min()))
    assert unit_filters(w, (1, 28, 28), start=8, count=64).shape[0] == 2


def test_expected_norm_matches_monte_carlo():
    z = torch.randn(20000, 100, generator=torch.Generator().manual_seed(0))
    assert z.norm(dim=1).mean() == pytest.approx(expected_norm(100), rel=0.01)
