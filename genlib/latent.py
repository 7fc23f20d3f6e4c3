"""Moving through latent spaces: interpolation, the seed's latent points, manifold grids, traversals, projections.

Pure torch (no streamlit), after these sources:
- White (2016), "Sampling generative networks" (arXiv:1609.04468): spherical interpolation (slerp), because in high
  dimensions N(0, I) puts its mass near the sphere of radius sqrt(d), which linear midpoints leave;
- Kingma & Welling (2014), "Auto-Encoding Variational Bayes", fig. 4: a 2-D latent's learned manifold, drawn on a grid
  of the Gaussian's quantiles (linearly spaced probabilities through the inverse normal CDF);
- the course seed's GAN section "Exploring the latent space": `generate_latent_points(number, scale_means, scale_stds)`;
- Radford et al. (2016, DCGAN) and Higgins et al. (2017, beta-VAE): walking one code along a direction (traversals).

Shapes: `d` is the latent dimension, `n` a count of points; every function returns float32 tensors on the CPU unless
its inputs live elsewhere.
"""

from __future__ import annotations

import math

import torch

SEED_LATENT_DIM = 100  # the seed's generator takes 100 numbers


def _as_t(t: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """t as a tensor on z's device and dtype: a scalar stays 0-dim, a sequence becomes (T,)."""
    return torch.as_tensor(t, dtype=like.dtype, device=like.device)


def _expand_t(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(T,) -> (T, 1, ..., 1) so it broadcasts against z (..., d) to give (T, ..., d); a 0-dim t stays a scalar."""
    return t if t.ndim == 0 else t.reshape(-1, *([1] * z.ndim))


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Linear interpolation (1 - t) z0 + t z1.

    z0, z1: (..., d); t: a scalar -> result (..., d), or (T,) values -> (T, ..., d).
    """
    t = _as_t(t, z0)
    t = _expand_t(t, z0)
    return (1.0 - t) * z0 + t * z1


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: float | torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Spherical interpolation (White 2016, after Shoemake 1985):

        slerp(z0, z1; t) = sin((1 - t) theta) / sin(theta) * z0 + sin(t theta) / sin(theta) * z1,
        theta = arccos(<z0, z1> / (|z0| |z1|)),

    the great-circle path: for unit z0 and z1 every point is a unit vector; for Gaussian draws the norm moves smoothly
    between |z0| and |z1| instead of dipping toward 0 at the midpoint as the straight line does. Where z0 and z1 are
    (anti)parallel (sin(theta) < eps) the great circle is undefined and we fall back to lerp.

    z0, z1: (..., d); t: a scalar -> (..., d), or (T,) -> (T, ..., d).
    """
    t = _expand_t(_as_t(t, z0), z0)
    n0 = z0.norm(dim=-1, keepdim=True)  # (..., 1)
    n1 = z1.norm(dim=-1, keepdim=True)
    cos = ((z0 * z1).sum(-1, keepdim=True) / (n0 * n1).clamp_min(eps)).clamp(-1.0, 1.0)  # (..., 1)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    safe = sin.abs() > eps
    sin_safe = torch.where(safe, sin, torch.ones_like(sin))
    w0 = torch.sin((1.0 - t) * theta) / sin_safe  # (T, ..., 1) or (..., 1)
    w1 = torch.sin(t * theta) / sin_safe
    linear = (1.0 - t) * z0 + t * z1
    return torch.where(safe, w0 * z0 + w1 * z1, linear)


def generate_latent_points(n: int = 100, dim: int = SEED_LATENT_DIM, scale_means: float = 1.0,
                           scale_stds: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """The seed's latent points: n draws (n, dim) with coordinate k ~ N(mean_k, std_k^2), where

        means = scale_means * linspace(-1, 1, dim),   stds = scale_stds * linspace(-1, 1, dim).

    Coordinate 0 gets mean -scale_means, the last +scale_means; the spread grows from the middle outwards.
    Half of the seed's stds are negative (linspace starts at -1). A normal with std -s is the same distribution
    as with std s (the density depends on std^2, and s * eps with eps ~ N(0, 1) is symmetric), which is what
    TensorFlow's random.normal computes; torch.normal refuses negative stds, so we pass |std|.
    The seed draws a [number, number] array, which only broadcasts against its 100 means when number = 100;
    here the shape is (n, dim) for any n. Float32 (the seed's float64 is cast by its generator anyway).
    A CPU `generator` makes the draw reproducible.
    """
    if n < 1 or dim < 1:
        raise ValueError(f"n and dim must be positive, got n={n}, dim={dim}")
    ramp = torch.linspace(-1.0, 1.0, dim)  # (dim,)
    means = (scale_means * ramp).expand(n, dim)  # (n, dim)
    stds = (scale_stds * ramp).abs().expand(n, dim)  # (n, dim), |std|: the same distribution
    return torch.normal(means, stds, generator=generator)


def manifold_values(n: int, span: float = 3.0, quantiles: bool = False) -> torch.Tensor:
    """n coordinates (n,) from -span to +span: evenly spaced, or (quantiles=True) the N(0, 1) quantiles of evenly
    spaced probabilities from Phi(-span) to Phi(span), denser near 0 where the prior has its mass (K&W fig. 4)."""
    if n < 1 or span <= 0:
        raise ValueError(f"need n >= 1 and span > 0, got n={n}, span={span}")
    if n == 1:
        return torch.zeros(1)
    if not quantiles:
        return torch.linspace(-span, span, n)
    normal = torch.distributions.Normal(0.0, 1.0)
    lo = float(normal.cdf(torch.tensor(-span)))
    p = torch.linspace(lo, 1.0 - lo, n, dtype=torch.float64)
    return normal.icdf(p).float()  # (n,)


def manifold_grid(dim: int, i: int = 0, j: int = 1, n: int = 15, span: float = 3.0,
                  base: torch.Tensor | None = None, quantiles: bool | None = None) -> torch.Tensor:
    """Latents (n * n, dim) on a 2-D grid over dimensions i and j, every other dimension fixed at `base` (dim,)
    (default 0, the prior's mean). Row-major like an image grid: column c sets z_i = values[c] (left to right,
    increasing) and row r sets z_j = values[n - 1 - r] (top row largest), so the grid reads like a scatter plot with
    z_i on the x axis and z_j on the y axis. `quantiles` (default: True when dim == 2, as in Kingma & Welling's
    figure) spaces the values as normal quantiles, see `manifold_values`.
    """
    if not (0 <= i < dim and 0 <= j < dim) or i == j:
        raise ValueError(f"need two different dimensions in [0, {dim}), got i={i}, j={j}")
    if quantiles is None:
        quantiles = dim == 2
    values = manifold_values(n, span, quantiles)  # (n,)
    z = torch.zeros(dim) if base is None else base.detach().to("cpu", torch.float32).reshape(dim).clone()
    z = z.expand(n * n, dim).clone()  # (n*n, dim)
    rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")  # (n, n) each
    z[:, i] = values[cols.reshape(-1)]
    z[:, j] = values.flip(0)[rows.reshape(-1)]
    return z


def traverse(z: torch.Tensor, direction: torch.Tensor | int, amounts: torch.Tensor | list[float]) -> torch.Tensor:
    """Points z + a * direction for each a in `amounts`: (T, d) for z (d,) and amounts (T,).

    `direction` is a (d,) vector (used as given: pass a unit vector for amounts in units of distance) or an int k,
    meaning the k-th basis vector (move one latent coordinate).
    """
    z = z.reshape(-1)
    if isinstance(direction, int):
        if not 0 <= direction < z.shape[0]:
            raise ValueError(f"dimension {direction} is outside a latent of {z.shape[0]}")
        k = direction
        direction = torch.zeros_like(z)
        direction[k] = 1.0
    direction = direction.reshape(-1).to(z)
    a = torch.as_tensor(amounts, dtype=z.dtype, device=z.device).reshape(-1, 1)  # (T, 1)
    return z.unsqueeze(0) + a * direction.unsqueeze(0)  # (T, d)


def random_directions(dim: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k unit directions (k, dim), uniformly oriented (normalised Gaussian draws). When k <= dim they are also made
    mutually orthogonal (QR of the Gaussian matrix, with signs fixed so the result is a deterministic function of the
    draw), so that sliders along them move the code independently."""
    if k < 1 or dim < 1:
        raise ValueError(f"k and dim must be positive, got k={k}, dim={dim}")
    g = torch.randn(dim, k, generator=generator, dtype=torch.float64)  # (dim, k)
    if k <= dim:
        q, r = torch.linalg.qr(g)  # q (dim, k) orthonormal columns
        q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(k, dtype=g.dtype))
        return q.T.float().contiguous()  # (k, dim)
    return (g / g.norm(dim=0, keepdim=True)).T.float().contiguous()


def pca_2d(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project points (n, d) onto their two principal axes: (coordinates (n, 2), explained variance ratios (2,)).

    Exact PCA through the SVD of the centred data (n of a few thousand and d <= 100 take milliseconds; use
    torch.pca_lowrank for much larger inputs). Each axis's sign is fixed so its largest loading is positive, so the
    picture does not flip between calls. For d == 1 the second coordinate is 0; for d == 2 the result is a rotation.
    """
    x = points.detach().to("cpu", torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"pca_2d needs (n >= 2, d) points, got shape {tuple(points.shape)}")
    x = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)  # vh (min(n, d), d): rows are the principal axes
    axes = vh[:2]  # (<=2, d)
    idx = axes.abs().argmax(dim=1, keepdim=True)
    axes = axes * torch.sign(axes.gather(1, idx))
    coords = x @ axes.T  # (n, <=2)
    var = s.square()
    ratio = var[:2] / var.sum().clamp_min(1e-12)
    if coords.shape[1] < 2:
        coords = torch.cat([coords, torch.zeros(coords.shape[0], 2 - coords.shape[1], dtype=coords.dtype)], 1)
        ratio = torch.cat([ratio, torch.zeros(2 - ratio.shape[0], dtype=ratio.dtype)])
    return coords.float(), ratio.float()


def unit_filters(weights: torch.Tensor, image_shape: tuple[int, ...] = (1, 28, 28), start: int = 0,
                 count: int = 64) -> torch.Tensor:
    """Hidden units' weight vectors as images (count, C, H, W) in [0, 1]: rows start..start+count of `weights`
    (n_hidden, n_visible), e.g. an RBM's W, each min-max normalised on its own (contrast per filter, as in Hinton's
    practical guide's pictures), so mid-grey is not zero."""
    w = weights.detach().to("cpu", torch.float32)
    n_hidden = w.shape[0]
    if not 0 <= start < n_hidden:
        raise ValueError(f"start {start} is outside the {n_hidden} hidden units")
    w = w[start:start + count]  # (count, n_visible)
    lo = w.min(dim=1, keepdim=True).values
    hi = w.max(dim=1, keepdim=True).values
    w = (w - lo) / (hi - lo).clamp_min(1e-12)
    return w.reshape(w.shape[0], *image_shape)


def norms(z: torch.Tensor) -> torch.Tensor:
    """Euclidean norms (n,) of latents z (n, d); N(0, I) draws concentrate near sqrt(d)."""
    return z.norm(dim=-1)


def expected_norm(dim: int) -> float:
    """E|z| for z ~ N(0, I_dim): sqrt(2) Gamma((d + 1) / 2) / Gamma(d / 2), close to sqrt(d - 1/2)."""
    return math.sqrt(2.0) * math.exp(math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2))
