"""How good is an RBM: the test log-likelihood with log Z by annealed importance sampling (Neal 2001; Salakhutdinov &
Murray, "On the quantitative analysis of deep belief networks", ICML 2008), the exact log Z by enumeration for small
layers, and the stochastic pseudo-log-likelihood (Besag 1975; the deeplearning.net RBM tutorial's running figure).

AIS follows Salakhutdinov & Murray's code (RBM_AIS.m): the base-rate model A has visible biases b_A from the training
data's mean, no weights and the same number of hidden units, so log Z_A = sum_i softplus(b_A_i) + n_h log 2; the k-th
intermediate distribution scales the energies, p_k(v) ∝ exp((1 - β_k) b_A.v + β_k b.v) prod_j (1 + exp(β_k (Wv + c)_j)),
the geometric path between the joints of A and the RBM, and one block-Gibbs step at β_k leaves p_k invariant. The
estimate of Z is unbiased, so that of log Z is biased low (Jensen): a short schedule underestimates log Z and so
*overestimates* the log-likelihood; the ±3σ interval shows the spread across chains, not that bias.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from genlib.data import base_rate_biases, binarize, to_unit  # noqa: F401 - base_rate_biases: this module's API too
from genlib.config import check_choice, check_int, check_number
from genlib.devices import device_generator
from genlib.sampling.bernoulli import bernoulli

ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], message)

# Salakhutdinov & Murray's schedule: 500 steps over [0, 0.5], 4,000 over [0.5, 0.9], 10,000 over [0.9, 1]
PAPER_SEGMENTS = ((0.0, 0.5, 500), (0.5, 0.9, 4_000), (0.9, 1.0, 10_000))
PAPER_STEPS = sum(n for _, _, n in PAPER_SEGMENTS)  # 14,500


@dataclass(frozen=True, kw_only=True)
class AISConfig:
    """Settings of one AIS run; the defaults are the paper's (14,500 intermediate distributions, 100 chains)."""

    n_steps: int = PAPER_STEPS  # K: the number of β increments; the schedule has K + 1 values from 0 to 1
    n_chains: int = 100  # M: independent annealing runs, simulated in parallel as rows of one batch
    schedule: str = "paper"  # "paper": the paper's three segments in its proportions; "linear": uniform in β
    base_pseudocount: float = 0.05  # the paper's smoothing of the base rates: p = (count + a N) / ((1 + a) N)
    seed: int = 0  # of the CPU generator that seeds the chains' device generator
    progress_every: int = 500  # steps between progress callbacks

    def __post_init__(self) -> None:
        check_int("n_steps", self.n_steps, 1, 10_000_000)
        check_int("n_chains", self.n_chains, 2, 1_000_000)
        check_choice("schedule", self.schedule, ("paper", "linear"))
        check_number("base_pseudocount", self.base_pseudocount, 0.0, 1.0)
        check_int("seed", self.seed, 0)
        check_int("progress_every", self.progress_every, 1)


@dataclass(frozen=True, kw_only=True, eq=False)  # eq=False: it holds a tensor, which has no truth value to compare
class AISResult:
    """An AIS estimate of log Z with its spread: log_z = log Z_A + log mean_m w_m over the M chains."""

    log_z: float
    log_z_std: float  # delta method: std(w) / (sqrt(M) mean(w)), the standard error of log mean(w)
    log_z_lo: float  # the paper's log(mean w - 3 std(w) / sqrt(M)) + log Z_A; -inf when that is not positive
    log_z_hi: float  # log(mean w + 3 std(w) / sqrt(M)) + log Z_A
    log_z_base: float  # log Z_A of the base-rate model
    log_weights: torch.Tensor  # (M,) float64 on the CPU: log w_m, for diagnostics
    ess: float  # effective sample size (sum w)^2 / sum w^2, between 1 and M
    n_steps: int
    n_chains: int
    seconds: float


def ais_betas(n_steps: int, schedule: str = "paper", *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The inverse temperatures β_0 = 0 < β_1 < ... < β_K = 1, K = n_steps, as a (K + 1,) CPU tensor.

    "paper" splits K over [0, 0.5], [0.5, 0.9] and [0.9, 1] in the ratio 500 : 4,000 : 10,000 (exactly the paper's
    schedule for K = 14,500), so the steps are finest near β = 1 where the distributions change fastest.
    """
    check_int("n_steps", n_steps, 1)
    if schedule == "linear":
        return torch.linspace(0.0, 1.0, n_steps + 1, dtype=dtype)
    if schedule != "paper":
        raise ValueError(f"schedule must be 'paper' or 'linear', got {schedule!r}")
    # the paper's proportions, each segment at least one step; the last takes what rounding leaves
    n1 = max(1, round(n_steps * 500 / PAPER_STEPS))
    n2 = max(1, round(n_steps * 4_000 / PAPER_STEPS))
    n3 = n_steps - n1 - n2
    if n3 < 1:  # fewer than three steps: fall back to uniform spacing
        return torch.linspace(0.0, 1.0, n_steps + 1, dtype=dtype)
    parts = [torch.linspace(lo, hi, n + 1, dtype=dtype)[(1 if i else 0):]
             for i, ((lo, hi, _), n) in enumerate(zip(PAPER_SEGMENTS, (n1, n2, n3)))]
    return torch.cat(parts)


def _params(rbm: Any, dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W (n_h, n_v), b (n_v), c (n_h)) detached, in `dtype` (default: the RBM's own)."""
    dtype = dtype or rbm.W.dtype
    return rbm.W.detach().to(dtype), rbm.v_bias.detach().to(dtype), rbm.h_bias.detach().to(dtype)


@torch.no_grad()
def ais_log_partition(rbm: Any, base_biases: torch.Tensor, config: AISConfig = AISConfig(), *,
                      dtype: torch.dtype | None = None, progress: ProgressFn | None = None) -> AISResult:
    """Estimate log Z of `rbm` by AIS from the base-rate model with visible biases `base_biases` (n_visible,).

    The chains run on the RBM's device; matrix products use `dtype` (default the RBM's, float32 for trained models)
    and every log-weight increment is formed and accumulated in float64, since K ~ 10^4 small increments of
    sums over n_h units would otherwise collect rounding error.
    """
    t0 = time.perf_counter()
    W, b, c = _params(rbm, dtype)  # (n_h, n_v), (n_v,), (n_h,)
    device, cdtype = W.device, W.dtype
    n_h, n_v = W.shape
    b_a64 = base_biases.to(device, torch.float64).reshape(-1)  # (n_v,)
    if b_a64.shape[0] != n_v:
        raise ValueError(f"base_biases has {b_a64.shape[0]} entries, the RBM {n_v} visible units")
    b_a = b_a64.to(cdtype)
    db = (b.double() - b_a64).to(cdtype)  # b - b_A (n_v,): the visible term's slope in β
    betas = ais_betas(config.n_steps, config.schedule).tolist()  # Python floats: no device sync per step
    gen = device_generator(torch.Generator().manual_seed(config.seed), device)
    m = config.n_chains

    # v_0 ~ p_A: independent Bernoulli(sigmoid(b_A)) visibles (M, n_v)
    v = bernoulli(torch.sigmoid(b_a).expand(m, n_v), gen)
    log_w = torch.zeros(m, dtype=torch.float64, device=device)  # (M,)
    k_total = len(betas) - 1
    for k in range(1, k_total + 1):
        beta_prev, beta = betas[k - 1], betas[k]
        a = F.linear(v, W, c)  # W v + c (M, n_h), shared by the weight and the transition
        a64 = a.double()
        # log p*_k(v) - log p*_{k-1}(v) = (β_k - β_{k-1}) (b - b_A).v + sum_j softplus(β_k a_j) - softplus(β_{k-1} a_j)
        log_w += (beta - beta_prev) * (v @ db).double()  # the dot's rounding is relative 1e-7; the sum is float64
        log_w += (F.softplus(beta * a64) - F.softplus(beta_prev * a64)).sum(-1)
        if k < k_total:  # a transition T_k leaving p_k invariant: h ~ p_k(h|v), v ~ p_k(v|h); none needed after β = 1
            h = bernoulli(torch.sigmoid(beta * a), gen)  # (M, n_h)
            v = bernoulli(torch.sigmoid(beta * F.linear(h, W.t(), b) + (1.0 - beta) * b_a), gen)  # (M, n_v)
        if progress is not None and (k % config.progress_every == 0 or k == k_total):
            progress(k / k_total, f"AIS step {k:,}/{k_total:,} ({m} chains)")

    log_z_base = float(F.softplus(b_a64).sum().item() + n_h * math.log(2.0))  # Z_A: visibles and free hiddens
    return _summarise(log_w.cpu(), log_z_base, config.n_steps, time.perf_counter() - t0)


def _summarise(log_w: torch.Tensor, log_z_base: float, n_steps: int, seconds: float) -> AISResult:
    """log Z = log Z_A + log mean w, with the standard error of log mean w and the paper's ±3σ interval."""
    m = log_w.shape[0]
    top = float(log_w.max())
    r = torch.exp(log_w - top)  # (M,) weights scaled so the largest is 1: no overflow
    mean, std = float(r.mean()), float(r.std())  # std with M - 1, as Matlab's std
    se = std / math.sqrt(m)  # standard error of the mean weight
    log_mean = float(torch.logsumexp(log_w, 0)) - math.log(m)  # log (1/M) sum_m w_m
    lo = top + math.log(mean - 3 * se) if mean - 3 * se > 0 else -math.inf
    ess = float(r.sum() ** 2 / r.square().sum())
    return AISResult(log_z=log_z_base + log_mean, log_z_std=se / mean, log_z_lo=log_z_base + lo,
                     log_z_hi=log_z_base + top + math.log(mean + 3 * se), log_z_base=log_z_base,
                     log_weights=log_w, ess=ess, n_steps=n_steps, n_chains=m, seconds=seconds)


@torch.no_grad()
def log_partition_exact(rbm: Any, *, max_units: int = 24, chunk: int = 4096) -> float:
    """log Z exactly, in float64, by enumerating the 2^n states of the smaller layer (n <= max_units).

    Over hiddens: log Z = logsumexp_h [c.h + sum_i softplus((W^T h + b)_i)], the visibles summed analytically;
    over visibles: log Z = logsumexp_v -F(v). States are made chunk by chunk and reduced with a running logsumexp,
    so memory stays at (chunk, n_larger).
    """
    W, b, c = _params(rbm, torch.float64)  # (n_h, n_v), (n_v,), (n_h,)
    n_h, n_v = W.shape
    n = min(n_h, n_v)
    if n > max_units:
        raise ValueError(f"the smaller layer has {n} units; enumerating 2^{n} states is too much "
                         f"(max_units={max_units})")
    device = W.device
    shifts = torch.arange(n, device=device)  # bit i of a state's index is unit i
    total = torch.tensor(-math.inf, dtype=torch.float64, device=device)
    for start in range(0, 2 ** n, chunk):
        idx = torch.arange(start, min(start + chunk, 2 ** n), device=device)
        s = ((idx[:, None] >> shifts) & 1).to(torch.float64)  # (chunk, n) all binary states of the smaller layer
        if n == n_h:
            log_p = s @ c + F.softplus(s @ W + b).sum(-1)  # (chunk,) log sum_v exp(-E(v, h))
        else:
            log_p = s @ b + F.softplus(s @ W.t() + c).sum(-1)  # (chunk,) -F(v)
        total = torch.logaddexp(total, torch.logsumexp(log_p, 0))
    return float(total.item())


@torch.no_grad()
def unnormalized_log_prob(rbm: Any, v: torch.Tensor) -> torch.Tensor:
    """-F(v) = b.v + sum_j softplus((W v + c)_j) per example (B,), in float64, for binary visibles v (B, n_visible)."""
    W, b, c = _params(rbm, None)
    v = v.to(W.device, W.dtype).reshape(v.shape[0], -1)
    return v.double() @ b.double() + F.softplus(F.linear(v, W, c).double()).sum(-1)


@torch.no_grad()
def log_likelihood(rbm: Any, v: torch.Tensor, log_z: float, *, batch_size: int = 10_000) -> torch.Tensor:
    """log p(v) = -F(v) - log Z per example (B,) float64, for binary visibles v (B, n_visible)."""
    parts = [unnormalized_log_prob(rbm, v[i:i + batch_size]) for i in range(0, v.shape[0], batch_size)]
    return torch.cat(parts) - log_z


@torch.no_grad()
def pseudo_log_likelihood(rbm: Any, v: torch.Tensor, *, generator: torch.Generator | None = None,
                          exact: bool = False, batch_size: int = 1_000) -> torch.Tensor:
    """The pseudo-log-likelihood sum_i log p(v_i | v_-i) per example (B,) float64, for binary v (B, n_visible).

    log p(v_i | v_-i) = log sigmoid(F(v with bit i flipped) - F(v)). Stochastic (default): one uniformly chosen bit
    per example, times n_visible, an unbiased estimate of the sum; `exact` sums over every bit (n_visible times the
    cost). The free-energy difference is formed directly in float64 from W v + c and W's column i, not as the
    difference of two free energies of several hundred nats each.
    """
    W, b, c = _params(rbm, None)
    device = W.device
    n_v = W.shape[1]
    W64, b64 = W.double(), b.double()
    out = []
    for start in range(0, v.shape[0], batch_size):
        vb = v[start:start + batch_size].to(device, W.dtype).reshape(-1, n_v)  # (B, n_v)
        a = F.linear(vb, W, c).double()  # (B, n_h)
        if exact:
            d = 1.0 - 2.0 * vb.double()  # (B, n_v): +1 where the flip turns a bit on, -1 where off
            # flipping bit i adds d_i W[:, i] to a: (B, n_v, n_h), the free-energy change of every flip
            a_flip = a[:, None, :] + d[:, :, None] * W64.t()[None, :, :]
            dF = -d * b64 - (F.softplus(a_flip) - F.softplus(a)[:, None, :]).sum(-1)  # F(flip_i v) - F(v) (B, n_v)
            out.append(F.logsigmoid(dF).sum(-1))
        else:
            if generator is not None and generator.device != device:
                idx = torch.randint(n_v, (vb.shape[0],), generator=generator).to(device)
            else:
                idx = torch.randint(n_v, (vb.shape[0],), generator=generator, device=device)
            rows = torch.arange(vb.shape[0], device=device)
            d = 1.0 - 2.0 * vb[rows, idx].double()  # (B,)
            a_flip = a + d[:, None] * W64[:, idx].t()  # (B, n_h)
            dF = -d * b64[idx] - (F.softplus(a_flip) - F.softplus(a)).sum(-1)  # (B,)
            out.append(n_v * F.logsigmoid(dF))
    return torch.cat(out)


# ---- the whole evaluation ----

@dataclass(frozen=True, kw_only=True)
class RBMEvalConfig:
    """What `evaluate_rbm` measures and how hard it tries; `AISConfig()` is the paper's full setting."""

    ais: AISConfig = AISConfig()
    binarize: str = "stochastic"  # test images -> {0, 1}: Bernoulli draws with `binarize_seed`, or a 0.5 threshold
    binarize_seed: int = 0  # the stochastic binarisation's fixed CPU generator: every evaluation sees the same bits
    pll_seed: int = 1  # which bit each example flips in the stochastic pseudo-log-likelihood
    n_test: int | None = None  # the first n test images (None: all)
    exact_max_units: int = 20  # also enumerate log Z exactly when the smaller layer is this small

    def __post_init__(self) -> None:
        check_choice("binarize", self.binarize, ("stochastic", "threshold"))
        check_int("binarize_seed", self.binarize_seed, 0)
        check_int("pll_seed", self.pll_seed, 0)
        if self.n_test is not None:
            check_int("n_test", self.n_test, 1)
        check_int("exact_max_units", self.exact_max_units, 0, 24)


def binarized_test_set(images: torch.Tensor, mode: str, seed: int) -> torch.Tensor:
    """Images (N, C, H, W), uint8 or in [0, 1] -> fixed binary visibles (N, C*H*W), drawn on the CPU so every device
    agrees."""
    x = images.detach().to("cpu")
    x = (to_unit(x) if x.dtype == torch.uint8 else x.float()).reshape(images.shape[0], -1)
    return binarize(x, mode, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def evaluate_rbm(rbm: Any, x_train: torch.Tensor, x_test: torch.Tensor, config: RBMEvalConfig = RBMEvalConfig(),
                 *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Test-set log-likelihood (AIS), its ±3σ range, and pseudo-log-likelihood, in nats per image, as a JSON-able dict.

    x_train (N, C, H, W) sets the base rates; x_test (N', C, H, W) is binarised as configured; both uint8 or [0, 1].
    """
    device = rbm.W.device
    x_test = x_test if config.n_test is None else x_test[:config.n_test]
    v_test = binarized_test_set(x_test, config.binarize, config.binarize_seed).to(device)  # (N', n_v)
    b_a = base_rate_biases(x_train, pseudocount=config.ais.base_pseudocount, binarize_mode=config.binarize)
    ais = ais_log_partition(rbm, b_a, config.ais, progress=progress)
    mean_unnorm = float(unnormalized_log_prob(rbm, v_test).mean())  # mean -F(v) over the test set
    pll = pseudo_log_likelihood(rbm, v_test, generator=torch.Generator().manual_seed(config.pll_seed))
    out: dict[str, Any] = {
        "test_log_likelihood": mean_unnorm - ais.log_z,
        # a larger log Z means a smaller likelihood: the interval's ends swap
        "test_log_likelihood_lo": mean_unnorm - ais.log_z_hi,
        "test_log_likelihood_hi": None if ais.log_z_lo == -math.inf else mean_unnorm - ais.log_z_lo,
        "log_z": ais.log_z,
        "log_z_std": ais.log_z_std,
        "log_z_lo": None if ais.log_z_lo == -math.inf else ais.log_z_lo,
        "log_z_hi": ais.log_z_hi,
        "log_z_base": ais.log_z_base,
        "ais_steps": ais.n_steps,
        "ais_chains": ais.n_chains,
        "ais_ess": ais.ess,
        "ais_seconds": round(ais.seconds, 3),
        "pseudo_log_likelihood": float(pll.mean()),
        "n_test": int(v_test.shape[0]),
        "binarization": (f"stochastic: one Bernoulli draw per pixel, torch.Generator seed {config.binarize_seed}"
                         if config.binarize == "stochastic" else "threshold at 0.5"),
        "units": "nats per image",
    }
    if min(rbm.W.shape) <= config.exact_max_units:
        log_z = log_partition_exact(rbm, max_units=config.exact_max_units)
        out["log_z_exact"] = log_z
        out["test_log_likelihood_exact"] = mean_unnorm - log_z
    return out

