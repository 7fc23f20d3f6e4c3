"""The Bernoulli-Bernoulli restricted Boltzmann machine of the course notes, trained with CD-k (Hinton 2002) or PCD-k
(Tieleman 2008), optionally with centred gradient steps (Melchior, Fischer & Wiskott 2016).

Energy E(v, h) = -v.b - h.c - h^T W v with binary visibles v (n_visible) and hiddens h (n_hidden), W of shape
(n_hidden, n_visible) as in the seed. The seed trains by autograd of the free-energy gap F(v0).mean() - F(vk).mean()
with SGD; here the same gradient is written in closed form and applied with torch.optim.SGD's exact update rule,
without autograd, so one step costs four matmuls for k = 1 and no graph: v0 -> h0, h0 -> v1, v1 -> h1 and one
(n_h, 2B) @ (2B, n_v) product [p(h|v0); -p(h|v1)]^T [v0; v1] that gives both the positive and the negative
statistics (five matmuls' worth of multiply-adds). The states live in preallocated (2B, n) buffers reused by every
step of the same batch size; Bernoulli draws compare one uniform draw per unit with its probability (u < p), which is
3x cheaper on a CPU than torch.bernoulli, and with precision "bf16" the weights are cast once per step and the chain
runs in bfloat16 ({0, 1} states are exact in it), the parameters and their update staying in fp32. On a CPU in
float32, the passes between the matmuls (binarising, sigmoids, draws, the statistics and the loss) run as compiled C
where a C compiler is present (genlib.sampling.kernels.cd: the same maths, a few passes instead of ~40 PyTorch calls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from genlib.data import binarize
from genlib.sampling.bernoulli import draw_, words_for
from genlib.sampling.kernels.cd import CDKernels, load as load_cd_kernels, new_stream
from genlib.config import bounds, check_declared, check_ints, choice, flag, number, whole
from genlib.models.base import DenseDecoder, EnergyModel, GenerativeModel, LatentModel, dense_layer, device_generator
from genlib.sampling.gibbs import gibbs_chain

BINARIZE_MODES = ("stochastic", "threshold")
PARAMS = ("W", "v_bias", "h_bias")
PCD_GRID = "pcd_chains"  # extra_grids' name: the worker saves the persistent chains as pcd_chains.png
PCD_SHOWN = 64  # persistent chains in that grid


@dataclass(frozen=True, kw_only=True)
class RBMConfig:
    """Constructor arguments of an RBM; the defaults are the seed's (784 visible, 500 hidden, CD-1, plain SGD)."""

    image_shape: tuple[int, int, int] = (1, 28, 28)  # n_visible = C * H * W
    n_hidden: int = whole(500, 1, 10_000)
    k: int = whole(1, 1, 1000)  # Gibbs steps of the negative phase (CD-k / PCD-k); RBM.set_k changes it in training
    persistent: bool = flag(False)  # PCD: the negative chain continues across batches instead of restarting at the data
    momentum: float = number(0.0, 0.0, 1.0, hi_open=True)  # SGD momentum, torch.optim.SGD's convention
    weight_decay: float = number(0.0, 0.0, 1.0, hi_open=True)  # L2 penalty added to the gradient, as torch.optim.SGD
    binarize: str = choice("stochastic", BINARIZE_MODES)  # [0, 1] -> {0, 1}: Bernoulli draws (the seed's) or > 0.5
    init_std: float = number(0.01, 0.0, 1.0, lo_open=True)  # W ~ N(0, init_std^2), the seed's randn * 1e-2
    sample_steps: int = whole(500, 1, 100_000)  # Gibbs steps of `sample`, from uniform random visibles
    # 0: constant step size. N: the step size falls linearly from lr to 0 over the first N updates (set N to the run's
    # total steps): the SGD noise of a constant lr leaves the model's statistics off the data's (Robbins-Monro)
    lr_decay_steps: int = whole(0, 0, 10**9)
    # Centering (Montavon & Mueller 2012; Melchior, Fischer & Wiskott, JMLR 17, 2016): the SGD step is taken in the
    # coordinates E = -(v-mu).b~ - (h-lam).c~ - (h-lam)^T W (v-mu), with mu and lam running means of the data's
    # visibles and p(h|v). The model (W, b, c) is the same RBM; only the gradient's conditioning changes, which
    # matters where 0/1 units code a symmetric variable (Ising spins)
    centering: bool = flag(False)

    def __post_init__(self) -> None:
        check_ints("image_shape", self.image_shape, 3, 1)
        check_declared(self)


class CDChain(NamedTuple):
    """One negative phase: data statistics, the reconstruction and the chain's end, all (B, n) rows.

    The tensors are views of the model's scratch buffers in the chain's compute dtype (the weights' dtype, or bf16
    under precision "bf16"): they are overwritten by the next call (and train_step negates phk in place for its
    gradient matmul), so clone what must outlive it.
    """

    h_logits0: torch.Tensor  # W v0 + c (B, n_hidden)
    ph0: torch.Tensor  # p(h|v0) (B, n_hidden), the positive statistics
    recon: torch.Tensor  # p(v|h0), h0 ~ p(h|v0) (B, n_visible), for the recon_error metric
    vk: torch.Tensor  # the negative particles after k Gibbs steps (B, n_visible), in {0, 1}
    h_logits_k: torch.Tensor  # W vk + c (B, n_hidden)
    phk: torch.Tensor  # p(h|vk) (B, n_hidden), the negative statistics
    visibles: torch.Tensor  # [v0; vk] (2B, n_visible): the storage of v0 (as computed with) and vk
    h_logits: torch.Tensor  # [W v0 + c; W vk + c] (2B, n_hidden): the storage of h_logits0 and h_logits_k
    p_h: torch.Tensor  # [p(h|v0); p(h|vk)] (2B, n_hidden): the storage of ph0 and phk


class _Scratch:
    """The chain's buffers for one (batch size, device, dtype): allocated once, reused by every step."""

    def __init__(self, n: int, n_v: int, n_h: int, device: torch.device, dtype: torch.dtype,
                 param_dtype: torch.dtype) -> None:
        self.key = (n, device, dtype, param_dtype)
        kw = {"device": device, "dtype": dtype}
        self.visibles = torch.empty(2 * n, n_v, **kw)  # [v0; vk]
        self.h_logits = torch.empty(2 * n, n_h, **kw)  # [a0; ak]
        self.p_h = torch.empty(2 * n, n_h, **kw)  # [p(h|v0); p(h|vk)]
        self.recon = torch.empty(n, n_v, **kw)  # p(v|h0)
        self.hidden = torch.empty(n, n_h, **kw)  # the current hidden draw
        self.p_v: torch.Tensor | None = None  # p(v|h) of later Gibbs steps (k > 1 or PCD), made on first use
        # random bits of the draws u < p (genlib.sampling.bernoulli: four 15-bit uniforms per int64 word); fp64 weights (the
        # reference tests) draw exact fp64 uniforms instead
        self.exact = param_dtype == torch.float64
        self.words = words_for(n * max(n_v, n_h), device)
        uniform = torch.empty(n * max(n_v, n_h), device=device, dtype=param_dtype) if self.exact else None
        self.uniforms = {} if uniform is None else {(n, n_v): uniform[:n * n_v].view(n, n_v),
                                                    (n, n_h): uniform[:n * n_h].view(n, n_h)}
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
        """Bernoulli(p) into `out` (same shape), from the default generator of p's device."""
        if self.exact:
            return torch.lt(self.uniforms[tuple(p.shape)].uniform_(), p, out=out)
        return draw_(p, out, self.words)


class RBM(GenerativeModel, LatentModel, EnergyModel):
    """A Bernoulli-Bernoulli RBM; `train_step` takes images in [0, 1], binarises them and takes one CD-k/PCD-k step."""

    name: ClassVar[str] = "rbm"
    config_class: ClassVar[type] = RBMConfig
    metric_names: ClassVar[tuple[str, ...]] = ("loss", "recon_error")
    monitor: ClassVar[str] = "recon_error"
    live_knobs: ClassVar[tuple[str, ...]] = ("lr", "k")
    metric_labels: ClassVar[dict[str, str]] = {
        "loss": "Free-energy gap F(data) − F(model samples): the seed's training loss, whose gradient is the CD "
                "update; it is not a likelihood and can go up or down while the model improves.",
        "recon_error": "Reconstruction error: mean squared difference between the binarised images and p(v|h) after "
                       "one up-down pass v -> h -> v; it falls as the hidden units learn to describe the data.",
    }

    def __init__(self, config: RBMConfig) -> None:
        super().__init__(config)
        self.image_shape = tuple(config.image_shape)
        self.n_visible = math.prod(self.image_shape)
        self.latent_dim = config.n_hidden
        self.k = config.k  # mutable (set_k); the frozen config keeps the start value
        self.updates = 0  # parameter updates so far (for lr_decay_steps); saved by training_state()
        # the seed's parameters; nn.Parameter for state_dict and .to(), but updated in closed form, never by autograd
        self.W = nn.Parameter(torch.randn(config.n_hidden, self.n_visible) * config.init_std)  # (n_h, n_v)
        self.v_bias = nn.Parameter(torch.zeros(self.n_visible))  # b (n_v)
        self.h_bias = nn.Parameter(torch.zeros(config.n_hidden))  # c (n_h)
        # PCD's fantasy particles as hidden states (B, n_h); not in state_dict, saved by training_state()
        self.register_buffer("pcd_chain", None, persistent=False)
        self._grads: dict[str, torch.Tensor] = {}  # scratch gradients, allocated once per parameter
        self._velocity: dict[str, torch.Tensor] = {}  # SGD momentum buffers, created on the first step as SGD does
        self._offsets: dict[str, torch.Tensor] = {}  # centering's mu (n_v) and lam (n_h), set by the first batch
        self._scratch: _Scratch | None = None  # the chain's buffers for the last batch size, device and dtype
        # use the compiled CPU passes (genlib.sampling.kernels.cd) where they apply; False forces the eager PyTorch step (the
        # same maths, with PyTorch's own random stream)
        self.fused_cpu = True

    # ---- training setup ----
    def _make_optimizers(self, lr: float) -> None:
        """No torch optimiser: reset the closed-form SGD's state (momentum buffers, persistent chain)."""
        self._grads, self._velocity, self._offsets = {}, {}, {}
        self._scratch = None
        self.updates = 0
        self.pcd_chain = None

    @classmethod
    def check_knob(cls, name: str, value: Any) -> None:
        super().check_knob(name, value)
        if name == "k":
            bounds(RBMConfig, "k").check("k", value)

    def set_k(self, k: int) -> None:
        """Change the number of Gibbs steps of the negative phase during training."""
        bounds(RBMConfig, "k").check("k", k)
        self.k = k

    # ---- energies and conditionals ----
    def _h_logits(self, v: torch.Tensor) -> torch.Tensor:
        return F.linear(v, self.W, self.h_bias)  # (B, n_v) -> W v + c (B, n_h)

    @staticmethod
    def _free_energy_from(v: torch.Tensor, h_logits: torch.Tensor, v_bias: torch.Tensor) -> torch.Tensor:
        # F(v) = -v.b - sum_j softplus((W v + c)_j); softplus is the seed's exp().add(1).log() without overflow
        dtype = v_bias.dtype
        return -(v.to(dtype) @ v_bias) - F.softplus(h_logits.to(dtype)).sum(-1)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = -log sum_h exp(-E(v, h)) per example (B,) for visibles v (B, n_visible)."""
        return self._free_energy_from(v, self._h_logits(v), self.v_bias)

    def image_energy(self, x: torch.Tensor) -> torch.Tensor:
        """The contract's energy on images (EnergyModel): F(v) of images x (B, C, H, W) flattened to v (B, n_v)."""
        return self.free_energy(x.reshape(x.shape[0], -1).to(self.device, self.dtype))

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(v, h) = -v.b - h.c - h^T W v per example (B,) for v (B, n_visible), h (B, n_hidden)."""
        return -(v @ self.v_bias) - (h @ self.h_bias) - ((h @ self.W) * v).sum(-1)

    def p_h_given_v(self, v: torch.Tensor) -> torch.Tensor:
        """p(h_j = 1 | v) = sigmoid(W v + c) (B, n_hidden)."""
        return torch.sigmoid(self._h_logits(v))

    def p_v_given_h(self, h: torch.Tensor) -> torch.Tensor:
        """p(v_i = 1 | h) = sigmoid(W^T h + b) (B, n_visible)."""
        return torch.sigmoid(F.linear(h, self.W.t(), self.v_bias))

    def _bernoulli(self, p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # Bernoulli(p) as u < p with u ~ U[0, 1) on p's device (3x cheaper than torch.bernoulli on a CPU); the uniforms
        # are fp32 (fp64 for fp64 weights) so P(u < p) = p for bf16 p too; the states come in the parameters' dtype
        udtype = torch.float64 if self.W.dtype == torch.float64 else torch.float32
        u = torch.rand(p.shape, generator=generator, device=p.device, dtype=udtype)
        return u.lt_(p).to(self.W.dtype)

    def sample_h_given_v(self, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """h ~ p(h|v) (B, n_hidden) in {0, 1}; `generator` must live on the model's device."""
        return self._bernoulli(self.p_h_given_v(v), generator)

    def sample_v_given_h(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """v ~ p(v|h) (B, n_visible) in {0, 1}; `generator` must live on the model's device."""
        return self._bernoulli(self.p_v_given_h(h), generator)

    # ---- training ----
    def visibles(self, x: torch.Tensor) -> torch.Tensor:
        """Images x (B, C, H, W) in [0, 1] -> binary visibles (B, n_visible) on the model's device."""
        v = x.to(self.W.device, self.W.dtype).reshape(x.shape[0], -1)
        if v.shape[1] != self.n_visible:
            raise ValueError(f"images of shape {tuple(x.shape[1:])} do not fit this RBM's {self.image_shape}")
        return binarize(v, self.config.binarize)

    def _fused_visibles(self, x: torch.Tensor, kernels: CDKernels) -> torch.Tensor:
        """`visibles(x)` binarised by the fused pass straight into the chain's v0 buffer (B, n_v)."""
        v = x.reshape(x.shape[0], -1)
        if self.config.binarize != "stochastic" or v.shape[1] != self.n_visible or v.dtype != torch.float32 \
                or v.device.type != "cpu":
            return self.visibles(x)  # thresholds, conversions and the shape error stay with the eager code
        v_0 = self._scratch_for(v.shape[0], torch.float32).halves[0]
        return kernels.bernoulli_(v.contiguous(), v_0, new_stream())

    def _scratch_for(self, n: int, dtype: torch.dtype) -> _Scratch:
        key = (n, self.W.device, dtype, self.W.dtype)
        if self._scratch is None or self._scratch.key != key:
            self._scratch = _Scratch(n, self.n_visible, self.latent_dim, self.W.device, dtype, self.W.dtype)
        return self._scratch

    def _compute_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else self.W.dtype

    def _fused(self) -> CDKernels | None:
        """The compiled CD passes (genlib.sampling.kernels.cd) when this step can use them: a float32 chain on a CPU."""
        if not self.fused_cpu or self.W.device.type != "cpu" or self._compute_dtype() != torch.float32:
            return None
        return load_cd_kernels()  # compiled once per machine, loaded once per process

    def _chain_ops(self, s: _Scratch, kernels: CDKernels | None) -> tuple[Callable, Callable]:
        """(sigmoid(a, out), draw(p, out)) of the chain: the fused passes', or PyTorch's with genlib.sampling.bernoulli."""
        if kernels is None:
            return (lambda a, out: torch.sigmoid(a, out=out)), s.draw
        stream = new_stream()
        return kernels.sigmoid_, (lambda p, out: kernels.bernoulli_(p, out, stream))

    @torch.no_grad()
    def contrastive_chain(self, v0: torch.Tensor) -> CDChain:
        """The seed's chain: h0 ~ p(h|v0), then k times v ~ p(v|h), h ~ p(h|v); PCD starts from its stored hiddens.

        Runs in the weights' dtype, or in bf16 with precision "bf16" (W cast once; states in {0, 1} are exact, the
        matmuls accumulate in fp32). The result's tensors are the model's scratch buffers (see CDChain).
        """
        n = v0.shape[0]
        s = self._scratch_for(n, self._compute_dtype())
        sigmoid, draw = self._chain_ops(s, self._fused())
        W, b, c = self.W, self.v_bias, self.h_bias
        if s.visibles.dtype != W.dtype:  # bf16: one cast of W per step, the biases follow (as autocast would)
            if s.weight is None:
                s.weight = torch.empty_like(W, dtype=s.visibles.dtype)
            W = s.weight.copy_(W)
            b, c = b.to(W.dtype), c.to(W.dtype)
        vis, logits, p_h = s.visibles, s.h_logits, s.p_h
        v_0, v_k, a_0, a_k, ph_0, ph_k = s.halves

        def p_v(h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:  # p(v|h) = sigmoid(h W + b) (n, n_v)
            return sigmoid(torch.addmm(b, h, W, out=out), out)

        if v0 is not v_0:  # train_step's fused path binarises straight into the buffer
            v_0.copy_(v0)
        torch.addmm(c, v_0, W.t(), out=a_0)  # W v0 + c (n, n_h)
        sigmoid(a_0, ph_0)
        h = draw(ph_0, s.hidden)  # h0 (n, n_h)
        recon = pv = p_v(h, s.recon)  # p(v|h0) (n, n_v): the reconstruction and CD's first visible probabilities
        if self.config.persistent or self.k > 1:
            if s.p_v is None:
                s.p_v = torch.empty_like(s.recon)
        if self.config.persistent:
            if self.pcd_chain is None or self.pcd_chain.shape != h.shape:
                # first use, or a new batch size: start the particles at the data
                self.pcd_chain = h.to(self.W.dtype, copy=True)
            else:
                h = s.hidden.copy_(self.pcd_chain)
                pv = p_v(h, s.p_v)
        for step in range(self.k):
            if step:
                pv = p_v(h, s.p_v)
            draw(pv, v_k)  # (n, n_v)
            torch.addmm(c, v_k, W.t(), out=a_k)  # W vk + c (n, n_h)
            sigmoid(a_k, ph_k)
            if step < self.k - 1:  # CD never uses the last hidden draw (the gradient takes p(h|vk))
                h = draw(ph_k, s.hidden)
        if self.config.persistent:
            self.pcd_chain.copy_(draw(ph_k, s.hidden))  # the particles' next hidden state
        return CDChain(a_0, ph_0, recon, v_k, a_k, ph_k, vis, logits, p_h)

    def step_lr(self) -> float:
        """The step size of the next update: lr, or lr (1 - updates / lr_decay_steps), at least 0, when decaying."""
        n = self.config.lr_decay_steps
        return self.lr if not n else self.lr * max(0.0, 1.0 - self.updates / n)

    def _sgd(self, name: str, param: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        """torch.optim.SGD's update, in place: d = g + wd p; buf = d (first step) or m buf + d; p -= lr buf."""
        wd, momentum = self.config.weight_decay, self.config.momentum
        if wd:
            grad.add_(param, alpha=wd)
        if momentum:
            buf = self._velocity.get(name)
            if buf is None:
                buf = self._velocity[name] = grad.clone()
            else:
                if buf.device != grad.device:  # the model moved since the buffer was made
                    buf = self._velocity[name] = buf.to(grad.device)
                buf.mul_(momentum).add_(grad)
            grad = buf
        param.add_(grad, alpha=-lr)

    @torch.no_grad()
    def train_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One CD-k (or PCD-k) SGD step on images x (B, C, H, W) in [0, 1]; detached metrics, no host sync."""
        kernels = self._fused()
        v0 = self.visibles(x) if kernels is None else self._fused_visibles(x, kernels)  # (B, n_v) in {0, 1}
        return self._cd_step(v0, kernels)

    @torch.no_grad()
    def train_step_uint8(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """`train_step` on uint8 images (B, C, H, W): the fused path draws v = Bernoulli(x / 255) from the bytes in
        one pass, straight into the chain's buffer (no float copy of the batch)."""
        kernels = self._fused()
        n = x.shape[0]
        if kernels is None or self.config.binarize != "stochastic" or x.dtype != torch.uint8 \
                or x.device.type != "cpu" or math.prod(x.shape[1:]) != self.n_visible:
            return super().train_step_uint8(x)
        v_0 = self._scratch_for(n, torch.float32).halves[0]
        return self._cd_step(kernels.bernoulli_u8_(x.reshape(n, -1).contiguous(), v_0, new_stream()), kernels)

    def _cd_step(self, v0: torch.Tensor, kernels: CDKernels | None) -> dict[str, torch.Tensor]:
        """The CD-k/PCD-k update from binary visibles v0 (B, n_v); `kernels` when the fused passes run it."""
        if self.lr is None:
            raise RuntimeError("call configure_training(lr=...) before train_step")
        chain = self.contrastive_chain(v0)
        n, dtype, cfg = v0.shape[0], self.W.dtype, self.config
        lr = self.step_lr()
        self.updates += 1
        vis, p_h = chain.visibles, chain.p_h  # [v0; vk] (2B, n_v), [p(h|v0); p(h|vk)] (2B, n_h)
        # metrics first: they use the parameters the chain ran with, as the seed's loss does. From the logits the
        # chain already has: mean F(v0) - mean F(vk) = -((sum v0 - sum vk).b + sum softplus(a0) - sum softplus(ak)) / B
        # Then the gradients of the seed's loss F(v0).mean() - F(vk).mean() with vk fixed (dF/dW = -p(h|v) v^T), one
        # matmul: [p(h|v0); -p(h|vk)]^T [v0; vk] = p(h|v0)^T v0 - p(h|vk)^T vk = -B dL/dW (n_h, n_v)
        if kernels is None:
            v_sums = vis.view(2, n, -1).sum(1, dtype=dtype)  # (2, n_v)
            dv = v_sums[0] - v_sums[1]  # sum_b (v0 - vk) (n_v): also -B times the v_bias gradient
            sp = F.softplus(chain.h_logits.to(dtype)).view(2, -1).sum(1)  # (2,)
            loss = (torch.dot(dv, self.v_bias) + (sp[0] - sp[1])).div_(-n)
            metrics = {"loss": loss, "recon_error": F.mse_loss(chain.recon.to(dtype), v0)}
            p_h[n:].neg_()
            dh = p_h.sum(0, dtype=dtype)  # sum_b p(h|v0) - p(h|vk) = -B dL/dc (n_h)
            v0_sum, h0_sum = v_sums[0], (p_h[:n].sum(0, dtype=dtype) if cfg.centering else None)
        else:  # the same sums in two fused passes (p_h negated in the second)
            dv, v0_sum, dh, h0_sum = self._scratch.fused_sums()
            out = torch.empty(3, dtype=torch.float64)  # sum (recon - v0)^2, dv . b, sum softplus(a0) - softplus(ak)
            kernels.visible_stats(chain.recon, v0, chain.vk, self.v_bias, dv, v0_sum, out)
            kernels.hidden_stats(chain.h_logits, p_h, dh, h0_sum, out)
            sq, dvb, sp = out.tolist()
            metrics = {"loss": torch.tensor(-(dvb + sp) / n), "recon_error": torch.tensor(sq / v0.numel())}
        if cfg.centering:  # this batch moves the offsets first: mean v0 (n_v) and mean p(h|v0) (n_h)
            self._move_offsets(v0_sum / n, h0_sum / n)
        bf16 = vis.dtype != dtype
        plain = not (cfg.momentum or cfg.weight_decay or cfg.centering)  # plain SGD needs no fp32 gradient buffers
        g = self._grads
        if (bf16 or not plain) and (not g or g["W"].device != self.W.device or g["W"].dtype != dtype):
            g.update({name: torch.empty_like(getattr(self, name)) for name in PARAMS})
        if bf16:  # bf16 operands, fp32 accumulation inside the GEMM, one bf16 rounding of the result
            s = self._scratch
            if s.stats is None:
                s.stats = torch.empty_like(self.W, dtype=vis.dtype)
            stats = g["W"].copy_(torch.mm(p_h.t(), vis, out=s.stats))  # to fp32 in a buffer (no temporary)
        if plain:  # p -= lr g, fused into one pass per parameter
            step = lr / n
            if bf16:
                self.W.add_(stats, alpha=step)
            else:
                self.W.addmm_(p_h.t(), vis, alpha=step)  # (n_h, 2B) @ (2B, n_v), added in place
            self.v_bias.add_(dv, alpha=step)
            self.h_bias.add_(dh, alpha=step)
            return metrics
        if bf16:
            stats.div_(-n)
        else:
            torch.mm(p_h.t(), vis, out=g["W"]).div_(-n)
        torch.div(dv, -n, out=g["v_bias"])  # mean(vk - v0) (n_v)
        torch.div(dh, -n, out=g["h_bias"])  # mean(p(h|vk) - p(h|v0)) (n_h)
        if cfg.centering:
            self._centered_sgd(g, lr)
            return metrics
        for name in PARAMS:
            self._sgd(name, getattr(self, name), g[name], lr)
        return metrics

    # offsets' running-mean rate: Melchior et al.'s sliding factor 0.01 (an average over ~100 batches)
    OFFSET_RATE: ClassVar[float] = 0.01

    def _move_offsets(self, v_mean: torch.Tensor, h_mean: torch.Tensor) -> None:
        """mu <- mu + 0.01 (mean v0 - mu), lam likewise with mean p(h|v0); the first batch sets them."""
        if not self._offsets or self._offsets["mu"].device != v_mean.device:
            self._offsets = {"mu": v_mean.clone(), "lam": h_mean.clone()}
            return
        self._offsets["mu"].lerp_(v_mean, self.OFFSET_RATE)
        self._offsets["lam"].lerp_(h_mean, self.OFFSET_RATE)

    def _centered_sgd(self, g: dict[str, torch.Tensor], lr: float) -> None:
        """The SGD step in centred coordinates (Melchior et al. 2016, Algorithm 1), written back to (W, b, c).

        With offsets mu (n_v) and lam (n_h), the centred biases are b~ = b + W^T lam and c~ = c + W mu, and the loss
        gradient in W is g_W - lam g_b^T - g_c mu^T (the plain ones g_* in `g`). After the step, b = b~ - W'^T lam and
        c = c~ - W' mu give the same energy function with the new weights W'.
        """
        mu, lam = self._offsets["mu"], self._offsets["lam"]
        W = self.W
        g_W = g["W"].addr_(lam, g["v_bias"], alpha=-1).addr_(g["h_bias"], mu, alpha=-1)  # (n_h, n_v)
        b_c = torch.addmv(self.v_bias, W.t(), lam)  # b~ (n_v)
        c_c = torch.addmv(self.h_bias, W, mu)  # c~ (n_h)
        self._sgd("W", W, g_W, lr)
        self._sgd("v_bias", b_c, g["v_bias"], lr)
        self._sgd("h_bias", c_c, g["h_bias"], lr)
        self.v_bias.copy_(b_c.addmv_(W.t(), lam, alpha=-1))
        self.h_bias.copy_(c_c.addmv_(W, mu, alpha=-1))

    def training_state(self) -> dict[str, Any]:
        """Momentum buffers, the persistent chain, the current k, centring's offsets and (decaying lr) the update
        count, for resuming."""
        state: dict[str, Any] = {"k": self.k, "momentum": {n: b.detach().clone() for n, b in self._velocity.items()}}
        if self.config.lr_decay_steps:
            state["updates"] = self.updates
        if self.pcd_chain is not None:
            state["pcd_chain"] = self.pcd_chain.detach().clone()
        if self._offsets:
            state["offsets"] = {n: t.detach().clone() for n, t in self._offsets.items()}
        return state

    def load_training_state(self, state: dict[str, Any]) -> None:
        device, dtype = self.device, self.W.dtype
        if "k" in state:
            self.set_k(int(state["k"]))
        self.updates = int(state.get("updates", 0))
        self._velocity = {n: b.to(device, dtype).clone() for n, b in state.get("momentum", {}).items() if n in PARAMS}
        self._offsets = {n: t.to(device, dtype).clone() for n, t in state.get("offsets", {}).items()}
        chain = state.get("pcd_chain")
        self.pcd_chain = None if chain is None else chain.to(device, dtype).clone()

    # ---- generation ----
    @torch.no_grad()
    def sample_latent(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n hidden vectors (n, n_hidden) of fair coin flips, Bernoulli(0.5), on the model's device."""
        half = torch.full((n, self.latent_dim), 0.5, device=self.device, dtype=self.W.dtype)
        return torch.bernoulli(half, generator=device_generator(generator, self.device))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (n, C, H, W) in [0, 1]: p(v|h) for hidden vectors z (n, n_hidden), binary or not."""
        return self.p_v_given_h(z.to(self.device, self.W.dtype)).reshape(z.shape[0], *self.image_shape)

    @torch.no_grad()
    def extra_grids(self) -> dict[str, torch.Tensor]:
        """With PCD: p(v|h) of the first PCD_SHOWN persistent chains at their current hidden states (n, C, H, W),
        as PCD_GRID (the training worker saves it beside live.png); nothing without PCD or before the first batch."""
        if not self.config.persistent or self.pcd_chain is None:
            return {}
        return {PCD_GRID: self.decode(self.pcd_chain[:PCD_SHOWN])}

    def export_decoder(self) -> DenseDecoder:
        """p(v|h) = sigmoid(W^T h + b) as one layer from the hidden units (n_h) to the pixels (n_v)."""
        return DenseDecoder((dense_layer(self.W.t(), self.v_bias, "none"),), "sigmoid")

    def filters(self) -> torch.Tensor:
        """Each hidden unit's weights to the pixels, the rows of W (n_hidden, n_visible): a detached copy."""
        return self.W.detach().clone()

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1]: p(v|h) after `sample_steps` Gibbs steps from uniform random binary v."""
        g = device_generator(generator, self.device)
        half = torch.full((n, self.n_visible), 0.5, device=self.device, dtype=self.W.dtype)
        v = torch.bernoulli(half, generator=g)  # (n, n_v) uniform over {0, 1}^n_v
        pv = gibbs_chain(self, v, self.config.sample_steps, generator=g)
        return pv.reshape(n, *self.image_shape)
