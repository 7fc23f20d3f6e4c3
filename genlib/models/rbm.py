"""The Bernoulli-Bernoulli restricted Boltzmann machine of the course notes, trained with CD-k (Hinton 2002) or PCD-k
(Tieleman 2008), optionally with centred gradient steps (Melchior, Fischer & Wiskott 2016)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from genlib.data import base_rate_biases, binarize
from genlib.models import rbm_fast
from genlib.sampling.bernoulli import bernoulli, random_binary
from genlib.config import bounds, check_declared, check_ints, choice, flag, number, whole
from genlib.models.base import DenseDecoder, EnergyModel, GenerativeModel, LatentModel, dense_layer, device_generator
from genlib.sampling.gibbs import gibbs_chain

BINARIZE_MODES = ("stochastic", "threshold")
VISIBLE_BIAS_INITS = ("zero", "base_rate")
PARAMS = ("W", "v_bias", "h_bias")
PCD_GRID = "pcd_chains"  # extra_grids' name: the worker saves the persistent chains as pcd_chains.png
PCD_SHOWN = 64  # persistent chains in that grid

# The lecture's RBM (the seed's `RBM` class) with binary visibles v (n_visible) and hiddens h (n_hidden):
#   energy        E(v, h) = -v.b - h.c - h^T W v, W (n_hidden, n_visible), b = v_bias (n_v), c = h_bias (n_h)
#   free energy   F(v) = -log sum_h exp(-E(v, h)) = -v.b - sum_j softplus((W v + c)_j)     (the seed's free_energy)
#   conditionals  p(h_j = 1 | v) = sigmoid(W v + c)_j                                       (the seed's v_to_h)
#                 p(v_i = 1 | h) = sigmoid(W^T h + b)_i                                     (the seed's h_to_v)
#   draws         h ~ p(h|v) as [u < p], u ~ U[0, 1)                                  (the seed's sample_from_p)
#   CD-k chain    v0 -> h0 -> v1 -> h1 -> ... -> vk, k Gibbs steps from the data            (the seed's forward)
#   loss          L = mean_b F(v0) - mean_b F(vk), vk held fixed    (the seed's free_energy(v) - free_energy(v1))
#   its gradient  -dL/dW = <h v^T>_data - <h v^T>_model = mean_b p(h|v0) v0^T - mean_b p(h|vk) vk^T
#                 -dL/db = <v>_data - <v>_model,  -dL/dc = <h>_data - <h>_model  (h averaged as p(h|v))
#   update        p <- p - lr dL/dp                                           (the seed's optim.SGD(..., 0.1))
# PCD-k (Tieleman 2008) starts each chain where the previous batch's ended instead of at the data. `cd_step` is this,
# line for line, and runs float64, CUDA and wherever genlib.models.rbm_fast does not apply; rbm_fast computes the same
# update faster (fused CPU passes, bf16, reused buffers), and tests/test_rbm_fast.py checks that the two agree.


@dataclass(frozen=True, kw_only=True)
class RBMConfig:
    """Constructor arguments of an RBM; the defaults are the seed's (784 visible, 500 hidden, CD-1, plain SGD)."""

    image_shape: tuple[int, int, int] = (1, 28, 28)  # n_visible = C * H * W
    n_hidden: int = whole(500, 1, 10_000, cli="hidden", help="hidden units")
    # Gibbs steps of the negative phase (CD-k / PCD-k); RBM.set_k changes it in training
    k: int = whole(1, 1, 1000, help="Gibbs steps per update (CD-k)")
    # PCD: the negative chain continues across batches instead of restarting at the data
    persistent: bool = flag(False, cli="pcd", help="persistent contrastive divergence")
    momentum: float = number(0.0, 0.0, 1.0, hi_open=True, help="SGD momentum")  # torch.optim.SGD's convention
    # L2 penalty added to the gradient, as torch.optim.SGD
    weight_decay: float = number(0.0, 0.0, 1.0, hi_open=True, help="L2 weight decay")
    # [0, 1] -> {0, 1}: Bernoulli draws (the seed's) or > 0.5
    binarize: str = choice("stochastic", BINARIZE_MODES, help="pixels to bits: Bernoulli draws or > 0.5")
    # W ~ N(0, init_std^2), the seed's randn * 1e-2
    init_std: float = number(0.01, 0.0, 1.0, lo_open=True, help="standard deviation of the initial weights")
    # b at the start: zero (the seed's) or the data's log-odds log(p_i / (1 - p_i)) (Hinton's practical guide, 8.1),
    # where p(v|h) starts as the mean image, so the early chains need not first learn which pixels are ever on
    visible_bias: str = choice("zero", VISIBLE_BIAS_INITS, help="initial visible biases: zero or the data's log-odds")
    # Gibbs steps of `sample`, from uniform random visibles
    sample_steps: int = whole(500, 1, 100_000, help="Gibbs steps when sampling from noise")
    # 0: constant step size. N: the step size falls linearly from lr to 0 over the first N updates (set N to the run's
    # total steps): the SGD noise of a constant lr leaves the model's statistics off the data's (Robbins-Monro)
    lr_decay_steps: int = whole(0, 0, 10**9, help="lr falls linearly to 0 over this many updates (0: off)")
    # Centering (Montavon & Mueller 2012; Melchior, Fischer & Wiskott, JMLR 17, 2016): the SGD step is taken in the
    # coordinates E = -(v-mu).b~ - (h-lam).c~ - (h-lam)^T W (v-mu), with mu and lam running means of the data's
    # visibles and p(h|v). The model (W, b, c) is the same RBM; only the gradient's conditioning changes, which
    # matters where 0/1 units code a symmetric variable (Ising spins)
    centering: bool = flag(False, help="centred gradient steps (Melchior et al. 2016): offsets at the data's and "
                                       "hiddens' means")

    def __post_init__(self) -> None:
        check_ints("image_shape", self.image_shape, 3, 1)
        check_declared(self)


class CDChain(NamedTuple):
    """One negative phase, all (B, n) rows: its samples, and the hidden logits a = W v + c, p(h|v) = sigmoid(a)."""

    h0: torch.Tensor  # h0 ~ p(h|v0) (B, n_hidden)
    recon: torch.Tensor  # p(v|h0) of v0's first R rows (R, n_visible) for recon_error: R = B, or <= RECON_ROWS (PCD)
    vk: torch.Tensor  # the negative particles after k Gibbs steps (B, n_visible), in {0, 1}
    a0: torch.Tensor  # W v0 + c (B, n_hidden): the positive phase's hidden logits
    ak: torch.Tensor  # W vk + c (B, n_hidden): the negative phase's hidden logits


class RBM(GenerativeModel, LatentModel, EnergyModel):
    """A Bernoulli-Bernoulli RBM; `train_step` takes images in [0, 1], binarises them and takes one CD-k/PCD-k step."""

    name: ClassVar[str] = "rbm"
    title: ClassVar[str] = "RBM"
    likelihood: ClassVar[str | None] = "ais"
    config_class: ClassVar[type] = RBMConfig
    metric_names: ClassVar[tuple[str, ...]] = ("loss", "recon_error")
    monitor: ClassVar[str] = "recon_error"
    live_knobs: ClassVar[tuple[str, ...]] = ("lr", "k")
    metric_labels: ClassVar[dict[str, str]] = {
        "loss": "Free-energy gap F(data) − F(model samples): the seed's training loss, whose gradient is the CD "
                "update; it is not a likelihood and can go up or down while the model improves.",
        "recon_error": "Reconstruction error: mean squared difference between the binarised images and p(v|h) after "
                       "one up-down pass v -> h -> v (with PCD, over 32 images of each batch); it falls as the hidden "
                       "units learn to describe the data.",
    }

    # PCD's chain does not pass through the reconstruction p(v|h0), so recon_error reconstructs only a batch's first
    # RECON_ROWS images (a 20-step log window still averages 640): the whole batch would cost a sixth of a PCD-1 step
    RECON_ROWS: ClassVar[int] = 32

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
        self._velocity: dict[str, torch.Tensor] = {}  # SGD momentum buffers, created on the first step as SGD does
        self._offsets: dict[str, torch.Tensor] = {}  # centering's mu (n_v) and lam (n_h), set by the first batch
        self._fast = rbm_fast.FastCD()  # the fast step's buffers (genlib.models.rbm_fast)
        # use the compiled CPU passes (genlib.sampling.kernels.cd) where they apply; False runs fp32 training with the
        # reference `cd_step` (the same maths, with PyTorch's own random stream)
        self.fused_cpu = True

    # ---- training setup ----
    def _make_optimizers(self, lr: float) -> None:
        """No torch optimiser: reset the closed-form SGD's state (momentum buffers, persistent chain)."""
        self._velocity, self._offsets = {}, {}
        self._fast = rbm_fast.FastCD()
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

    @torch.no_grad()
    def init_from_data(self, x_train: torch.Tensor) -> None:
        """visible_bias "base_rate": b = log(p / (1 - p)) of the training images' binarised pixels (N, C, H, W)."""
        if self.config.visible_bias == "base_rate":
            # smoothed: a pixel never on in 60,000 images starts at b = log(0.05) = -3.0, not at minus infinity
            b = base_rate_biases(x_train, binarize_mode=self.config.binarize)  # (n_v,) float64
            if b.shape != self.v_bias.shape:
                raise ValueError(f"images of {b.numel()} pixels do not fit this RBM's {self.n_visible} visibles")
            self.v_bias.copy_(b.to(self.v_bias.device, self.v_bias.dtype))

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

    @torch.no_grad()  # a draw has no gradient
    def sample_h_given_v(self, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """h ~ p(h|v) (B, n_hidden) in {0, 1}; `generator` must live on the model's device."""
        return bernoulli(self.p_h_given_v(v), generator)  # u < p (genlib.sampling.bernoulli), the seed's sample_from_p

    @torch.no_grad()
    def sample_v_given_h(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """v ~ p(v|h) (B, n_visible) in {0, 1}; `generator` must live on the model's device."""
        return bernoulli(self.p_v_given_h(h), generator)

    # ---- training ----
    def visibles(self, x: torch.Tensor) -> torch.Tensor:
        """Images x (B, C, H, W) in [0, 1] -> binary visibles (B, n_visible) on the model's device."""
        v = x.to(self.W.device, self.W.dtype).reshape(x.shape[0], -1)
        if v.shape[1] != self.n_visible:
            raise ValueError(f"images of shape {tuple(x.shape[1:])} do not fit this RBM's {self.image_shape}")
        return binarize(v, self.config.binarize)

    def _fast_path(self) -> rbm_fast.FastCD | None:
        """genlib.models.rbm_fast's step where it applies (precision bf16, or fp32 on a CPU with the fused passes)."""
        return self._fast if rbm_fast.applies(self) else None

    @torch.no_grad()
    def contrastive_chain(self, v0: torch.Tensor) -> CDChain:
        """The seed's `forward`: h0 ~ p(h|v0), then k times v ~ p(v|h), h ~ p(h|v), from binary visibles v0 (B, n_v).

        PCD starts from its stored hiddens instead of h0 and stores the chain's next hiddens. Runs in the weights'
        dtype; where rbm_fast applies, its tensors are that module's reused buffers (clone what must outlive a step).
        """
        fast = self._fast_path()
        if fast is not None:
            return CDChain(*fast.chain(self, v0))
        a0 = self._h_logits(v0)  # W v0 + c (B, n_h)
        h = h0 = bernoulli(torch.sigmoid(a0))  # h0 ~ p(h|v0) (B, n_h) in {0, 1}
        if self.config.persistent:
            if self.pcd_chain is None or self.pcd_chain.shape != h0.shape:
                self.pcd_chain = h0.clone()  # first use, or a new batch size: start the particles at the data
            else:
                h = self.pcd_chain
        pv = self.p_v_given_h(h)  # the chain's first p(v|h) (B, n_v)
        # the reconstruction p(v|h0): CD's chain starts with it; PCD's does not, so it is made for RECON_ROWS rows only
        recon = pv if h is h0 else self.p_v_given_h(h0[:self.RECON_ROWS])  # (R, n_v)
        for step in range(self.k):
            if step:
                pv = self.p_v_given_h(h)
            vk = bernoulli(pv)  # (B, n_v)
            ak = self._h_logits(vk)  # W vk + c (B, n_h)
            if step < self.k - 1:  # the last hidden draw is not needed: the update averages p(h|vk)
                h = bernoulli(torch.sigmoid(ak))
        if self.config.persistent:
            self.pcd_chain = bernoulli(torch.sigmoid(ak))  # the particles' next hidden state
        return CDChain(h0, recon, vk, a0, ak)

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

    def _descend(self, grads: dict[str, torch.Tensor], lr: float) -> None:
        """One SGD step on (W, b, c) from the loss's gradients `grads` (overwritten), centred under `centering`."""
        if self.config.centering:
            self._centered_sgd(grads, lr)
            return
        for name in PARAMS:
            self._sgd(name, getattr(self, name), grads[name], lr)

    def _require_lr(self) -> None:
        if self.lr is None:
            raise RuntimeError("call configure_training(lr=...) before train_step")

    @torch.no_grad()
    def train_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One CD-k (or PCD-k) SGD step on images x (B, C, H, W) in [0, 1]; detached metrics, no host sync."""
        self._require_lr()
        fast = self._fast_path()
        return self.cd_step(self.visibles(x)) if fast is None else fast.train_step(self, x)

    @torch.no_grad()
    def train_step_uint8(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """`train_step` on uint8 images (B, C, H, W); the fused path binarises the bytes itself (rbm_fast)."""
        self._require_lr()
        fast = self._fast_path()
        if fast is not None and fast.takes_bytes(self, x):
            return fast.train_step_uint8(self, x)
        return super().train_step_uint8(x)

    @torch.no_grad()
    def cd_step(self, v0: torch.Tensor) -> dict[str, torch.Tensor]:
        """The reference CD-k (or PCD-k) SGD step from binary visibles v0 (B, n_v): the chain, then `cd_update`."""
        self._require_lr()
        return self.cd_update(v0, self.contrastive_chain(v0))

    @torch.no_grad()
    def cd_update(self, v0: torch.Tensor, chain: CDChain) -> dict[str, torch.Tensor]:
        """The SGD step of the seed's loss from data v0 (B, n_v) and a negative phase: positive minus negative phase."""
        n, b = v0.shape[0], self.v_bias
        # in the weights' dtype (a no-op but for rbm_fast's bf16 chain): vk (B, n_v), the logits a0, ak (B, n_h)
        vk, recon, a0, ak = (t.to(b.dtype) for t in (chain.vk, chain.recon, chain.a0, chain.ak))
        ph0, phk = torch.sigmoid(a0), torch.sigmoid(ak)  # p(h|v0), p(h|vk) (B, n_h)
        # the metrics, at the parameters the chain ran with: the seed's loss F(v0).mean() - F(vk).mean() (from the
        # chain's logits) and the one-step reconstruction error
        loss = self._free_energy_from(v0, a0, b).mean() - self._free_energy_from(vk, ak, b).mean()
        metrics = {"loss": loss, "recon_error": F.mse_loss(recon, v0[:recon.shape[0]])}
        positive, negative = ph0.t() @ v0, phk.t() @ vk  # sum_b p(h|v0) v0^T, sum_b p(h|vk) vk^T (n_h, n_v)
        dW = positive.sub_(negative).div_(n)  # <h v^T>_data - <h v^T>_model (n_h, n_v), in place
        db = v0.mean(0) - vk.mean(0)  # <v>_data - <v>_model (n_v)
        dc = ph0.mean(0) - phk.mean(0)  # <h>_data - <h>_model (n_h)
        lr = self.step_lr()
        self.updates += 1
        if self.config.centering:  # this batch moves the offsets first: mean v0 (n_v) and mean p(h|v0) (n_h)
            self._move_offsets(v0.mean(0), ph0.mean(0))
        # the loss's gradients are minus the phases' gaps (negated in place): SGD descends the loss
        self._descend({"W": dW.neg_(), "v_bias": db.neg_(), "h_bias": dc.neg_()}, lr)
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
        state: dict[str, Any] = {**super().training_state(), "k": self.k,
                                 "momentum": {n: b.detach().clone() for n, b in self._velocity.items()}}
        if self.config.lr_decay_steps:
            state["updates"] = self.updates
        if self.pcd_chain is not None:
            state["pcd_chain"] = self.pcd_chain.detach().clone()
        if self._offsets:
            state["offsets"] = {n: t.detach().clone() for n, t in self._offsets.items()}
        return state

    def load_training_state(self, state: dict[str, Any]) -> None:
        super().load_training_state(state)  # the live weights, when the checkpoint's are an average
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
        return random_binary(n, self.latent_dim, generator=device_generator(generator, self.device),
                             device=self.device, dtype=self.W.dtype)

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
        v = random_binary(n, self.n_visible, generator=g, device=self.device, dtype=self.W.dtype)  # (n, n_v)
        pv = gibbs_chain(self, v, self.config.sample_steps, generator=g)
        return pv.reshape(n, *self.image_shape)
