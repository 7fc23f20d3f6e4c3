"""Spectral normalisation (Miyato et al. 2018, arXiv 1802.05957) with an explicit power iteration: a layer's weight W
is used as W / sigma(W), where sigma(W) = u^T W v estimates W's largest singular value from singular-vector estimates
u and v that only `power_iteration_` moves, once per training step.

torch.nn.utils.parametrizations.spectral_norm steps u and v on every forward pass in training mode, so drawing
samples from a model in training mode would change it (and two draws with one seed would differ), and a sampler
running beside training would write the vectors the training pass is using. Here a forward pass only reads them.
The buffers keep torch's names (`_u`, `_v`), so state dicts of either load into the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

ESTIMATES = ("_u", "_v")  # the buffers of the singular-vector estimates (torch's names): state, not weights


class SpectralNorm(nn.Module):
    """The parametrization W -> W / (u^T W v) of one layer's weight (out, ...), W read as a matrix (out, rest)."""

    def __init__(self, weight: torch.Tensor, iterations: int = 15, eps: float = 1e-12) -> None:
        super().__init__()
        w = weight.detach().flatten(1)  # (out, in * kh * kw)
        self.eps = eps
        for name, size in zip(ESTIMATES, w.shape):  # u (out,), v (rest,)
            self.register_buffer(name, F.normalize(torch.randn(size, dtype=w.dtype, device=w.device), dim=0, eps=eps))
        self.power_iteration_(weight, iterations)  # start from good estimates, as torch does

    @torch.no_grad()
    def power_iteration_(self, weight: torch.Tensor, iterations: int = 1) -> None:
        """Move u and v towards W's top singular vectors: v <- W^T u / |W^T u|, u <- W v / |W v|."""
        w = weight.detach().flatten(1)  # (out, rest)
        for _ in range(iterations):
            self._v.copy_(F.normalize(w.t() @ self._u, dim=0, eps=self.eps))  # (rest,)
            self._u.copy_(F.normalize(w @ self._v, dim=0, eps=self.eps))  # (out,)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # sigma = u^T W v, 0-dim and differentiable in W (u, v are constants); summed elementwise rather than by a
        # matrix product, which autocast would run in bfloat16
        sigma = (self._u[:, None] * weight.flatten(1) * self._v[None, :]).sum()
        return weight / sigma


def is_estimate(state_key: str) -> bool:
    """Whether a state-dict key names a singular-vector estimate (which a weight average must leave out)."""
    return state_key.rsplit(".", 1)[-1] in ESTIMATES


def spectral_norm_(layer: nn.Module) -> nn.Module:
    """Normalise `layer.weight` (a Linear's or a convolution's) from now on; returns the layer."""
    parametrize.register_parametrization(layer, "weight", SpectralNorm(layer.weight))
    return layer


def power_iteration_(module: nn.Module) -> None:
    """One power-iteration step for every spectrally normalised weight in `module` (call once per training step,
    before the step's forward passes)."""
    for layer in module.modules():
        if not parametrize.is_parametrized(layer, "weight"):
            continue
        weights = layer.parametrizations.weight
        for p in weights:
            if isinstance(p, SpectralNorm):
                p.power_iteration_(weights.original)
