"""The RBM's fast CD-k/PCD-k step: genlib.models.rbm's reference update computed in reused buffers, with the fused CPU
passes of genlib.sampling.kernels.cd in float32 or a bfloat16 chain, and tested against that reference step."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from genlib.sampling.bernoulli import LANES, draw_, words_for
from genlib.sampling.kernels.cd import CDKernels, load as load_cd_kernels, new_stream

# How this step is faster than the reference, with the same maths (tests/test_rbm_fast.py checks the updates agree):
# - the states live in (2B, n) buffers [v0; vk], [W v0 + c; W vk + c], [p(h|v0); p(h|vk)], made once per batch size
#   and reused, so a step allocates nothing;
# - the positive and the negative statistics come from one (n_h, 2B) @ (2B, n_v) product
#   [p(h|v0); -p(h|vk)]^T [v0; vk] = sum_b p(h|v0) v0^T - sum_b p(h|vk) vk^T, added to W in place under plain SGD;
# - on a CPU in float32, the passes between the matmuls (binarising, sigmoids, draws, the statistics and the loss) run
#   as compiled C (genlib.sampling.kernels.cd: a few passes instead of ~40 PyTorch calls), and so do the products with
#   a binary operand while it is sparse (W v for v in {0, 1}, and the statistics [p(h|v0); -p(h|vk)]^T [v0; vk]): sums
#   of the rows of W^T or of p(h|v) at the ones, which needs W stored column-major (`rows_of_wt`);
# - with precision "bf16" the weights are cast once per step and the chain runs in bfloat16 ({0, 1} states are exact
#   in it; the matmuls accumulate in fp32), the parameters and their update staying in fp32.


def fused_kernels(model: nn.Module) -> CDKernels | None:
    """The compiled CD passes when this RBM's step can use them: `fused_cpu` on, a float32 chain on a CPU."""
    if not model.fused_cpu or model.precision == "bf16" or model.W.device.type != "cpu" \
            or model.W.dtype != torch.float32:
        return None
    return load_cd_kernels()  # compiled once per machine, loaded once per process


# The row sums run on one thread (the fused passes use none of their own). Up to two torch threads the step with them
# beats the step with MKL's products (lecture recipe: 2.59 against 4.90 ms on one thread, 2.41 against 3.30 on two;
# scripts/rbm_step_ab.py); with more threads MKL's would outrun them (not measured: no such CPU here)
ROW_SUMS_MAX_THREADS = 2


def rows_of_wt(model: nn.Module) -> torch.Tensor:
    """W^T (n_v, n_h), contiguous: W (n_h, n_v) keeps its shape and values and is stored column-major from the first
    call on (one copy), so the binary products read each visible unit's weights as one row."""
    if not model.W.t().is_contiguous():
        model.W.data = model.W.data.t().contiguous().t()
    return model.W.t()


def binary_logits(kernels: CDKernels | None, v: torch.Tensor, model: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """out = W v + c (n, n_h) for binary v (n, n_v), W and c the model's: as row sums where the kernels run and v is
    sparse enough, else BLAS."""
    if kernels is None or not kernels.binary_mm_(v, rows_of_wt(model), model.h_bias, out):
        torch.addmm(model.h_bias, v, model.W.t(), out=out)
    return out


def binary_statistics(kernels: CDKernels | None, p_h: torch.Tensor, vis: torch.Tensor, out: torch.Tensor
                      ) -> torch.Tensor:
    """out = p_h^T vis (n_h, n_v) for p_h (2B, n_h) and binary vis (2B, n_v); out stored like W. Row sums into out^T
    where the kernels run, out is column-major and vis sparse enough, else BLAS."""
    if kernels is None or not out.t().is_contiguous() or not kernels.binary_tmm_(vis, p_h, out.t()):
        torch.mm(p_h.t(), vis, out=out)
    return out


def applies(model: nn.Module) -> bool:
    """Whether this module runs the RBM's training step: under precision "bf16", or where the fused passes run."""
    return model.precision == "bf16" or fused_kernels(model) is not None


class Scratch:
    """The chain's buffers for one (batch size, device, dtype): allocated once, reused by every step."""

    def __init__(self, n: int, n_v: int, n_h: int, device: torch.device, dtype: torch.dtype) -> None:
        self.key = (n, device, dtype)
        kw = {"device": device, "dtype": dtype}
        self.visibles = torch.empty(2 * n, n_v, **kw)  # [v0; vk]
        self.h_logits = torch.empty(2 * n, n_h, **kw)  # [a0; ak], a = W v + c
        self.p_h = torch.empty(2 * n, n_h, **kw)  # [p(h|v0); p(h|vk)]
        self.recon = torch.empty(n, n_v, **kw)  # p(v|h0)
        self.h0 = torch.empty(n, n_h, **kw)  # h0 ~ p(h|v0)
        self.hidden = torch.empty(n, n_h, **kw)  # the later hidden draws (k > 1 or PCD)
        self.p_v: torch.Tensor | None = None  # p(v|h) of later Gibbs steps (k > 1 or PCD), made on first use
        self.words = words_for(n * max(n_v, n_h), device)  # random bits of the PyTorch draws (bf16 chains)
        self.weight: torch.Tensor | None = None  # W cast to the compute dtype (bf16 precision only)
        self.stats: torch.Tensor | None = None  # [p(h|v0); -p(h|vk)]^T [v0; vk] in the compute dtype (bf16 only)
        # the halves [:n] (data) and [n:] (chain's end) of the stacked buffers, made once
        self.halves = tuple(t[i] for t in (self.visibles, self.h_logits, self.p_h)
                            for i in (slice(None, n), slice(n, None)))
        self.sums: tuple[torch.Tensor, ...] | None = None  # the fused passes' dv, v0 sum (n_v), dh, p(h|v0) sum (n_h)

    def fused_sums(self) -> tuple[torch.Tensor, ...]:
        if self.sums is None:
            n_v, n_h = self.visibles.shape[1], self.p_h.shape[1]
            kw = {"device": self.visibles.device, "dtype": self.visibles.dtype}
            self.sums = (torch.empty(n_v, **kw), torch.empty(n_v, **kw), torch.empty(n_h, **kw), torch.empty(n_h, **kw))
        return self.sums

    def draw(self, p: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Bernoulli(p) into `out` (same shape) from the default generator of p's device, taking as many random words
        as genlib.sampling.bernoulli.bernoulli(p) would: the reference step on the same seed draws the same uniforms."""
        return draw_(p, out, self.words[:(p.numel() + LANES - 1) // LANES])


class FastCD:
    """One RBM's fast-step state (the chain's buffers, the gradient buffers); the model is passed to each call."""

    def __init__(self) -> None:
        self.scratch: Scratch | None = None  # the chain's buffers for the last batch size, device and dtype
        self.grads: dict[str, torch.Tensor] = {}  # gradient buffers (momentum, weight decay, centring or bf16)
        self.row_sums = True  # binary products as row sums where they apply (scripts/rbm_step_ab.py times both ways)

    def row_sum_kernels(self, kernels: CDKernels | None) -> CDKernels | None:
        """The kernels for the binary products: None (BLAS) when row sums are off or torch runs more threads."""
        return kernels if self.row_sums and torch.get_num_threads() <= ROW_SUMS_MAX_THREADS else None

    @staticmethod
    def compute_dtype(model: nn.Module) -> torch.dtype:
        return torch.bfloat16 if model.precision == "bf16" else model.W.dtype

    def scratch_for(self, model: nn.Module, n: int, dtype: torch.dtype) -> Scratch:
        key = (n, model.W.device, dtype)
        if self.scratch is None or self.scratch.key != key:
            self.scratch = Scratch(n, model.n_visible, model.latent_dim, model.W.device, dtype)
        return self.scratch

    def train_step(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The RBM's `train_step` on images x (B, C, H, W) in [0, 1]."""
        kernels = fused_kernels(model)
        v0 = model.visibles(x) if kernels is None else self._fused_visibles(model, x, kernels)  # (B, n_v) in {0, 1}
        return self.step(model, v0, kernels)

    @staticmethod
    def takes_bytes(model: nn.Module, x: torch.Tensor) -> bool:
        """Whether `train_step_uint8` binarises these uint8 images (B, C, H, W) itself, in one fused pass."""
        return fused_kernels(model) is not None and model.config.binarize == "stochastic" \
            and x.dtype == torch.uint8 and x.device.type == "cpu" and math.prod(x.shape[1:]) == model.n_visible

    def train_step_uint8(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """`train_step` on uint8 images where `takes_bytes`: v = Bernoulli(x / 255) drawn from the bytes in one pass,
        straight into the chain's buffer (no float copy of the batch)."""
        kernels, n = fused_kernels(model), x.shape[0]
        v_0 = self.scratch_for(model, n, torch.float32).halves[0]
        return self.step(model, kernels.bernoulli_u8_(x.reshape(n, -1).contiguous(), v_0, new_stream()), kernels)

    def _fused_visibles(self, model: nn.Module, x: torch.Tensor, kernels: CDKernels) -> torch.Tensor:
        """`model.visibles(x)` binarised by the fused pass straight into the chain's v0 buffer (B, n_v)."""
        v = x.reshape(x.shape[0], -1)
        if model.config.binarize != "stochastic" or v.shape[1] != model.n_visible or v.dtype != torch.float32 \
                or v.device.type != "cpu":
            return model.visibles(x)  # thresholds, conversions and the shape error stay with the model
        v_0 = self.scratch_for(model, v.shape[0], torch.float32).halves[0]
        return kernels.bernoulli_(v.contiguous(), v_0, new_stream())

    @staticmethod
    def _chain_ops(s: Scratch, kernels: CDKernels | None) -> tuple[Callable, Callable]:
        """(sigmoid(a, out), draw(p, out)) of the chain: the fused passes', or PyTorch's (genlib.sampling.bernoulli)."""
        if kernels is None:
            return (lambda a, out: torch.sigmoid(a, out=out)), s.draw
        stream = new_stream()
        return kernels.sigmoid_, (lambda p, out: kernels.bernoulli_(p, out, stream))

    @torch.no_grad()
    def chain(self, model: nn.Module, v0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The reference chain (RBM.contrastive_chain) in the buffers: (h0, recon, vk, a0, ak), (B, n) views in the
        compute dtype, overwritten by the next call, so clone what must outlive it."""
        n = v0.shape[0]
        s = self.scratch_for(model, n, self.compute_dtype(model))
        kernels = fused_kernels(model)
        sigmoid, draw = self._chain_ops(s, kernels)
        sums = self.row_sum_kernels(kernels)
        W, b, c = model.W, model.v_bias, model.h_bias
        if s.visibles.dtype != W.dtype:  # bf16: one cast of W per step, the biases follow (as autocast would)
            if s.weight is None:
                s.weight = torch.empty_like(W, dtype=s.visibles.dtype)
            W = s.weight.copy_(W)
            b, c = b.to(W.dtype), c.to(W.dtype)
        v_0, v_k, a_0, a_k, ph_0, ph_k = s.halves
        persistent, k = model.config.persistent, model.k

        def p_v(h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:  # p(v|h) = sigmoid(h W + b) (n, n_v)
            return sigmoid(torch.addmm(b, h, W, out=out), out)

        def logits(v: torch.Tensor, out: torch.Tensor) -> torch.Tensor:  # W v + c (n, n_h)
            if W is not model.W:  # bf16's cast weights
                return torch.addmm(c, v, W.t(), out=out)
            return binary_logits(sums, v, model, out)

        if v0 is not v_0:  # the fused path binarises straight into the buffer
            v_0.copy_(v0)
        logits(v_0, a_0)  # W v0 + c (n, n_h)
        sigmoid(a_0, ph_0)
        h = h0 = draw(ph_0, s.h0)  # h0 (n, n_h)
        if (persistent or k > 1) and s.p_v is None:
            s.p_v = torch.empty_like(s.recon)
        if persistent:
            if model.pcd_chain is None or model.pcd_chain.shape != h.shape:
                model.pcd_chain = h.to(model.W.dtype, copy=True)  # first use, or a new batch size: start at the data
            else:
                h = s.hidden.copy_(model.pcd_chain)
        pv = p_v(h, s.recon if h is h0 else s.p_v)  # the chain's first p(v|h) (n, n_v)
        # the reconstruction p(v|h0): CD's chain starts with it; PCD's does not, so it is made for RECON_ROWS rows only
        recon = pv if h is h0 else p_v(h0[:model.RECON_ROWS], s.recon[:model.RECON_ROWS])  # (R, n_v)
        for step in range(k):
            if step:
                pv = p_v(h, s.p_v)
            draw(pv, v_k)  # (n, n_v)
            logits(v_k, a_k)  # W vk + c (n, n_h)
            sigmoid(a_k, ph_k)
            if step < k - 1:  # CD never uses the last hidden draw (the gradient takes p(h|vk))
                h = draw(ph_k, s.hidden)
        if persistent:
            model.pcd_chain.copy_(draw(ph_k, s.hidden))  # the particles' next hidden state
        return s.h0, recon, v_k, a_0, a_k

    def step(self, model: nn.Module, v0: torch.Tensor, kernels: CDKernels | None) -> dict[str, torch.Tensor]:
        """RBM.cd_update's step from binary visibles v0 (B, n_v), the chain included; `kernels` where the passes run."""
        _, recon, vk, _, _ = model.contrastive_chain(v0)  # views of the buffers in self.scratch
        s, n, dtype, cfg = self.scratch, v0.shape[0], model.W.dtype, model.config
        lr = model.step_lr()
        model.updates += 1
        vis, p_h = s.visibles, s.p_h  # [v0; vk] (2B, n_v), [p(h|v0); p(h|vk)] (2B, n_h)
        # metrics first, at the parameters the chain ran with, from the logits it already has:
        # mean F(v0) - mean F(vk) = -((sum v0 - sum vk).b + sum softplus(a0) - sum softplus(ak)) / B
        if kernels is None:
            v_sums = vis.view(2, n, -1).sum(1, dtype=dtype)  # (2, n_v)
            dv = v_sums[0] - v_sums[1]  # sum_b (v0 - vk) (n_v): B (<v>_data - <v>_model)
            sp = F.softplus(s.h_logits.to(dtype)).view(2, -1).sum(1)  # (2,)
            loss = (torch.dot(dv, model.v_bias) + (sp[0] - sp[1])).div_(-n)
            metrics = {"loss": loss, "recon_error": F.mse_loss(recon.to(dtype), v0[:recon.shape[0]])}
            p_h[n:].neg_()
            dh = p_h.sum(0, dtype=dtype)  # sum_b p(h|v0) - p(h|vk) (n_h): B (<h>_data - <h>_model)
            v0_sum, h0_sum = v_sums[0], (p_h[:n].sum(0, dtype=dtype) if cfg.centering else None)
        else:  # the same sums in two fused passes (p_h negated in the second)
            dv, v0_sum, dh, h0_sum = s.fused_sums()
            out = torch.empty(3, dtype=torch.float64)  # sum (recon - v0)^2, dv . b, sum softplus(a0) - softplus(ak)
            kernels.visible_stats(recon, v0, vk, model.v_bias, dv, v0_sum, out)
            kernels.hidden_stats(s.h_logits, p_h, dh, h0_sum, out)
            sq, dvb, sp = out.tolist()
            metrics = {"loss": torch.tensor(-(dvb + sp) / n), "recon_error": torch.tensor(sq / recon.numel())}
        if cfg.centering:  # this batch moves the offsets first: mean v0 (n_v) and mean p(h|v0) (n_h)
            model._move_offsets(v0_sum / n, h0_sum / n)
        bf16 = vis.dtype != dtype
        plain = not (cfg.momentum or cfg.weight_decay or cfg.centering)  # plain SGD needs no fp32 gradient buffers
        sums = self.row_sum_kernels(kernels)
        g = self.grads  # ... but for the binary statistics' row sums, which write a buffer
        stale = not g or g["W"].device != model.W.device or g["W"].dtype != dtype
        if (bf16 or not plain or sums is not None) and stale:  # made like W: column-major where the kernels run
            g.update({name: torch.empty_like(getattr(model, name)) for name in ("W", "v_bias", "h_bias")})
        if bf16:  # bf16 operands, fp32 accumulation inside the GEMM, one bf16 rounding of the result
            if s.stats is None:
                s.stats = torch.empty_like(model.W, dtype=vis.dtype)
            stats = g["W"].copy_(torch.mm(p_h.t(), vis, out=s.stats))  # to fp32 in a buffer (no temporary)
        if plain:  # p += lr (<.>_data - <.>_model), fused into one pass per parameter
            step = lr / n
            if bf16:
                model.W.add_(stats, alpha=step)
            elif sums is not None:
                model.W.add_(binary_statistics(sums, p_h, vis, g["W"]), alpha=step)
            else:
                model.W.addmm_(p_h.t(), vis, alpha=step)  # (n_h, 2B) @ (2B, n_v), added in place
            model.v_bias.add_(dv, alpha=step)
            model.h_bias.add_(dh, alpha=step)
            return metrics
        if bf16:
            stats.div_(-n)
        else:
            binary_statistics(sums, p_h, vis, g["W"]).div_(-n)  # the loss's gradient -dW (n_h, n_v)
        torch.div(dv, -n, out=g["v_bias"])  # mean(vk - v0) (n_v)
        torch.div(dh, -n, out=g["h_bias"])  # mean(p(h|vk) - p(h|v0)) (n_h)
        model._descend(g, lr)
        return metrics
