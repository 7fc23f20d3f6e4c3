"""Langevin dynamics on any energy function (stochastic gradient Langevin dynamics, Welling & Teh 2011), with the
clipped, decoupled step of Du & Mordatch (2019, arXiv 1903.08689) and Foster's Generative Deep Learning, ch. 7.

One step moves every chain downhill on the energy and adds Gaussian noise:

    x_{t+1} = clamp(x_t - step_size * clip(dE/dx(x_t)) + noise * xi_t, lo, hi),   xi_t ~ N(0, I).

With noise**2 == 2 * step_size, no clip and no bounds this is the unadjusted Langevin algorithm, whose chains are
distributed as p(x) ~ exp(-E(x)) for small steps. Energy-based models decouple the two (a large step, little
noise): that samples a colder distribution, but reaches the data's modes in the tens of steps a training step can
afford. The sampler knows nothing of model classes: it takes a function from inputs (B, ...) to energies (B,), and
takes gradients with respect to the input only (torch.autograd.grad), so no parameter's `.grad` or `requires_grad`
is ever touched, and it is safe to run next to a thread that trains the same model.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

import torch

from genlib.config import check_int
from genlib.devices import device_generator

EnergyFn = Callable[[torch.Tensor], torch.Tensor]  # inputs (B, ...) -> energies (B,), lower = more likely


class LangevinChain(NamedTuple):
    """What a chain returns; every tensor is detached."""

    x: torch.Tensor  # the chains' last state (B, ...)
    trajectory: torch.Tensor | None  # (T, B, ...) with T = 1 + steps // every, x0 first; None unless asked for
    grad_norm: torch.Tensor  # 0-dim: mean over steps and chains of ||dE/dx|| before clipping (0 for 0 steps)


def energy_gradient(energy_fn: EnergyFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E(x) (B,), dE/dx (B, ...)) for inputs x, both detached; x itself is not modified.

    The gradient of E.sum() is each chain's own gradient as long as chain i's energy depends on x_i alone (no
    batch statistics); torch.autograd.grad returns it without accumulating anything into parameters' `.grad`.
    """
    x = x.detach().requires_grad_(True)  # a new leaf; the caller's tensor stays as it was
    with torch.enable_grad():
        energy = energy_fn(x).float()  # (B,)
        if energy.shape != x.shape[:1]:
            raise ValueError(f"the energy function must return one energy per input, shape ({x.shape[0]},); "
                             f"got {tuple(energy.shape)}")
        (grad,) = torch.autograd.grad(energy.sum(), x)  # (B, ...), the same shape as x
    return energy.detach(), grad


def langevin_chain(energy_fn: EnergyFn, x0: torch.Tensor, steps: int, *, step_size: float, noise: float,
                   clip: float | None = None, bounds: tuple[float, float] | None = (0.0, 1.0),
                   generator: torch.Generator | None = None, every: int = 1,
                   return_trajectory: bool = False) -> LangevinChain:
    """Run `steps` Langevin steps on `energy_fn` from x0 (B, ...), e.g. images (B, 1, 28, 28) in [0, 1].

    `step_size` multiplies the (clipped) gradient, `noise` is the standard deviation of the Gaussian noise added
    each step, `clip` bounds every gradient component to [-clip, clip] (None: no clipping), `bounds` clamps the
    state after each step (None: unbounded). `generator` makes the noise reproducible (a CPU generator for chains on
    another device seeds a fresh one there). With `return_trajectory` the result holds the states after every
    `every` steps (x0 first). Must not run under torch.inference_mode, which forbids gradients.
    """
    check_int("steps", steps, 0)
    check_int("every", every, 1)
    if not step_size >= 0 or not noise >= 0:
        raise ValueError(f"step_size and noise must be >= 0, got {step_size!r} and {noise!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be positive or None, got {clip!r}")
    if bounds is not None and not bounds[0] < bounds[1]:
        raise ValueError(f"bounds must be (lo, hi) with lo < hi, got {bounds!r}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("langevin_chain needs gradients: call it outside torch.inference_mode() "
                           "(torch.no_grad() is fine, the chain turns gradients on for itself).")
    if generator is not None and generator.device != x0.device:
        generator = device_generator(generator, x0.device)
    x = x0.detach().to(torch.float32 if not x0.is_floating_point() else x0.dtype).clone()  # (B, ...)
    frames = [x.clone()] if return_trajectory else []
    norm_sum = torch.zeros((), device=x.device)
    for step in range(1, steps + 1):
        _, grad = energy_gradient(energy_fn, x)  # (B, ...)
        norm_sum += grad.flatten(1).norm(dim=1).mean()
        if clip is not None:
            grad = grad.clamp_(-clip, clip)
        x = x.sub_(grad, alpha=step_size)  # downhill: lower energy is more likely
        if noise > 0:
            x = x.add_(torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype), alpha=noise)
        if bounds is not None:
            x = x.clamp_(bounds[0], bounds[1])
        if return_trajectory and step % every == 0:
            frames.append(x.clone())
    trajectory = torch.stack(frames) if return_trajectory else None  # (T, B, ...)
    return LangevinChain(x=x, trajectory=trajectory, grad_norm=norm_sum / max(steps, 1))


@torch.no_grad()
def trajectory_energies(energy_fn: EnergyFn, trajectory: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """The energy (T, B) of every state of a trajectory (T, B, ...), in batches of `batch` states, no gradients."""
    flat = trajectory.reshape(-1, *trajectory.shape[2:])  # (T * B, ...)
    out = torch.cat([energy_fn(flat[i:i + batch]).float() for i in range(0, flat.shape[0], batch)])
    return out.reshape(trajectory.shape[0], trajectory.shape[1])


# ---- energies of other models ----

class FreeEnergyModel(Protocol):
    """A model with a free energy F(v) = -log sum_h exp(-E(v, h)) on flat visibles (B, n_visible), as the RBM."""

    def free_energy(self, v: torch.Tensor) -> torch.Tensor: ...  # (B, n_visible) -> (B,)


def free_energy_fn(model: FreeEnergyModel) -> EnergyFn:
    """The model's free energy as an energy on images (B, C, H, W) with continuous pixels in [0, 1].

    For an RBM, F(v) = -b.v - sum_j softplus((W v + c)_j) is defined for any real v, not only binary ones, so the
    same Langevin chain that samples an EBM runs on it: the seed's point that an RBM is an energy-based model.
    F is concave in v (minus a sum of convex softplus terms, plus a linear one), so the chains drift to corners of
    the [0, 1] box, i.e. to binary images, as Gibbs sampling's visibles are.
    """

    def energy(x: torch.Tensor) -> torch.Tensor:
        return model.free_energy(x.reshape(x.shape[0], -1))  # (B, C, H, W) -> (B, n_visible) -> (B,)

    return energy
