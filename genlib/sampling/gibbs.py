"""Model-agnostic MCMC samplers: block Gibbs sampling for models with binary hidden units (Hinton 2002, as in the course notes).

A sampler sees only a few methods of the model (a Protocol), never a model class, so the dashboard can run it on any
RBM-like object. Further samplers (Langevin dynamics for energy-based models) will join this module.
"""

from __future__ import annotations

from typing import Protocol

import torch

from genlib.devices import device_generator
from genlib.sampling.bernoulli import bernoulli


class GibbsModel(Protocol):
    """What `gibbs_chain` needs: the two conditionals of a bipartite model and draws from them, batched as (B, n)."""

    def p_h_given_v(self, v: torch.Tensor) -> torch.Tensor: ...  # (B, n_visible) -> (B, n_hidden) probabilities

    def p_v_given_h(self, h: torch.Tensor) -> torch.Tensor: ...  # (B, n_hidden) -> (B, n_visible) probabilities

    def sample_h_given_v(self, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def sample_v_given_h(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


@torch.no_grad()
def gibbs_chain(model: GibbsModel, v0: torch.Tensor, steps: int, *, generator: torch.Generator | None = None,
                every: int = 1, return_trajectory: bool = False,
                clamp: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Run `steps` rounds of block Gibbs sampling h ~ p(h|v), v ~ p(v|h) from visibles v0 (B, n_visible).

    Returns the mean-field visibles p(v|h) (B, n_visible) of the last step (v0 itself, as float, when steps is 0),
    or with `return_trajectory` a tensor (T, B, n_visible), T = 1 + steps // every: the start v0 at index 0, then
    p(v|h) after steps every, 2 * every, ... (choose `every` dividing `steps` to end on the last step).

    `generator` makes the chain reproducible; a generator on another device than v0 (e.g. a CPU one for a CUDA
    model) seeds a fresh one on v0's device. `clamp = (mask, values)` fixes hidden probabilities: where the bool
    mask (n_hidden,) or (B, n_hidden) is True, p(h|v) is replaced by `values` (broadcastable, in [0, 1]) at every
    step before the hiddens are drawn; the dashboard's "clamp hidden units" sliders use it.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive int, got {every!r}")
    if v0.ndim != 2:
        raise ValueError(f"v0 must be (B, n_visible), got shape {tuple(v0.shape)}")
    if generator is not None and generator.device != v0.device:
        generator = device_generator(generator, v0.device)
    v = v0 if v0.is_floating_point() else v0.to(torch.get_default_dtype())  # (B, n_visible)
    if clamp is not None:
        mask, values = clamp
        mask = torch.as_tensor(mask, dtype=torch.bool, device=v.device)  # (n_hidden,) or (B, n_hidden)
        values = torch.as_tensor(values, dtype=v.dtype, device=v.device)
    frames = [v.clone()] if return_trajectory else []
    pv = v
    for step in range(1, steps + 1):
        if clamp is None:
            h = model.sample_h_given_v(v, generator)  # (B, n_hidden) in {0, 1}
        else:
            ph = torch.where(mask, values, model.p_h_given_v(v))  # clamped units keep their given probability
            h = bernoulli(ph, generator)
        record = return_trajectory and step % every == 0
        if record or step == steps:
            pv = model.p_v_given_h(h)  # (B, n_visible), the mean-field image of this step
            if record:
                frames.append(pv.clone())
        if step < steps:  # the last step's visible draw is never used: skip it
            v = model.sample_v_given_h(h, generator)
    if return_trajectory:
        return torch.stack(frames)  # (T, B, n_visible)
    return pv.clone() if steps == 0 else pv
