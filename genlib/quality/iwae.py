"""How good is a VAE: the test-set negative ELBO (Kingma & Welling 2014) and the importance-weighted estimate of the
negative log-likelihood with k samples from q(z|x) (Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders",
ICLR 2016, whose figures use k = 5,000), in nats per image.

For each test image x, log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x) with z_s ~ q(z|x), s = 1..k; then
ELBO = E_q[log p(x|z)] - KL(q || p) (the expectation estimated by the mean over the k draws, the KL analytic), and
L_k = log (1/k) sum_s w_s, a lower bound on log p(x) that tightens as k grows (Burda et al., theorem 1). The sums over
the k draws run in chunks with a running logsumexp in float64, so k is limited by time, not memory.

The Bernoulli decoder is scored on stochastically binarised test images (one draw per pixel from a fixed CPU generator,
the usual binarised-MNIST protocol): a log-probability of discrete data. The Gaussian decoder's figure is a density of
the continuous grey images (in [-0.5, 0.5], unit variance per pixel): it is in different units and not comparable.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from genlib.data import binarize, to_unit
from genlib.config import check_int
from genlib.devices import device_generator

ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], message)
LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True, kw_only=True)
class VAEEvalConfig:
    """Settings of `evaluate_vae`; the defaults are Burda et al.'s k = 5,000 on the whole test set."""

    k: int = 5_000  # importance samples per test image
    max_rows: int = 32_768  # decoder rows per forward pass (images x samples): bounds memory, not the result
    binarize_seed: int = 0  # the fixed CPU generator of the test set's stochastic binarisation
    sample_seed: int = 1  # the generator of the draws z ~ q(z|x)
    n_test: int | None = None  # the first n test images (None: all)

    def __post_init__(self) -> None:
        check_int("k", self.k, 1, 10_000_000)
        check_int("max_rows", self.max_rows, 1)
        check_int("binarize_seed", self.binarize_seed, 0)
        check_int("sample_seed", self.sample_seed, 0)
        if self.n_test is not None:
            check_int("n_test", self.n_test, 1)


@torch.no_grad()
def log_weights(vae: Any, x: torch.Tensor, z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log w, log p(x|z)), each (B, S) float64, for images x (B, C, H, W), latents z (B, S, L), q's mu and log_sigma.

    log w = log p(x|z) + log N(z; 0, I) - log N(z; mu, sigma^2). The decoder runs once on all B*S latents.
    """
    b, s, latent = z.shape
    raw = vae.decode_logits(z.reshape(b * s, latent))  # (B*S, C, H, W)
    x_rep = x.reshape(b, 1, -1).expand(b, s, -1).reshape(b * s, -1)  # (B*S, D), a view of x repeated S times
    log_px = -vae.recon_term(raw, x_rep).reshape(b, s).double()  # (B, S): the model's own -log p(x|z), fp32 sums
    z64, mu64, ls64 = z.double(), mu.double()[:, None, :], log_sigma.double()[:, None, :]
    log_pz = -0.5 * (z64.square() + LOG_2PI).sum(-1)  # (B, S) standard normal prior
    eps = (z64 - mu64) * torch.exp(-ls64)  # (B, S, L)
    log_qz = -0.5 * (eps.square() + LOG_2PI).sum(-1) - ls64.sum(-1)  # (B, S) diagonal Gaussian q(z|x)
    return log_px + log_pz - log_qz, log_px


@torch.no_grad()
def vae_bounds(vae: Any, x: torch.Tensor, k: int, *, generator: torch.Generator | None = None,
               max_rows: int = 32_768) -> tuple[torch.Tensor, torch.Tensor]:
    """(ELBO, L_k) per image, each (B,) float64 nats, for images x (B, C, H, W) on the VAE's device.

    ELBO = mean over the k draws of log p(x|z) minus the analytic KL; L_k = logsumexp_s log w_s - log k. The k draws
    are taken in chunks of at most max_rows // B per image (B at most max_rows), reduced by a running logsumexp.
    `generator` may be a CPU generator: it then seeds one on the VAE's device.
    """
    device = vae.device
    x = x.to(device, torch.float32)
    if generator is not None and generator.device != device:
        generator = device_generator(generator, device)
    mu, log_sigma = vae.encode(x)  # (B, L) each: q(z|x), computed once for all k draws
    mu, log_sigma = mu.float(), log_sigma.float()
    b, latent = mu.shape
    chunk = max(1, min(k, max_rows // max(b, 1)))  # draws per image per decoder pass
    lse = torch.full((b,), -math.inf, dtype=torch.float64, device=device)  # running logsumexp of log w (B,)
    sum_log_px = torch.zeros(b, dtype=torch.float64, device=device)  # running sum of log p(x|z) (B,)
    done = 0
    while done < k:
        s = min(chunk, k - done)
        # (B, S, L) draws from q(z|x) by the model's own z = mu + sigma eps, S per image
        z = vae.reparameterize(mu[:, None, :].expand(b, s, latent), log_sigma[:, None, :].expand(b, s, latent),
                               generator=generator)
        lw, log_px = log_weights(vae, x, z, mu, log_sigma)
        lse = torch.logaddexp(lse, torch.logsumexp(lw, dim=1))
        sum_log_px += log_px.sum(1)
        done += s
    elbo = sum_log_px / k - vae.kl_term(mu, log_sigma).double()  # (B,)
    return elbo, lse - math.log(k)


def scored_images(vae: Any, images: torch.Tensor, seed: int) -> tuple[torch.Tensor, str]:
    """The images the VAE is scored on (N, C, H, W) float on the CPU, and how they were made, from uint8 or [0, 1].

    Bernoulli decoder: one Bernoulli draw per pixel from a CPU generator seeded `seed`, the same bits on every device.
    Gaussian decoder: the grey images unchanged, since its likelihood is a density over continuous pixels.
    """
    x = images.detach().to("cpu")
    x = to_unit(x) if x.dtype == torch.uint8 else x.float()
    if vae.config.decoder == "bernoulli":
        return (binarize(x, "stochastic", generator=torch.Generator().manual_seed(seed)),
                f"stochastic binarisation: one Bernoulli draw per pixel, torch.Generator seed {seed}")
    return x, "grey images in [0, 1] (continuous): a density, not comparable to the binarised figures"


@torch.no_grad()
def evaluate_vae(vae: Any, x_test: torch.Tensor, config: VAEEvalConfig = VAEEvalConfig(), *,
                 progress: ProgressFn | None = None) -> dict[str, Any]:
    """Test-set negative ELBO and IWAE negative log-likelihood (nats per image) with their standard errors, JSON-able.

    x_test: (N, C, H, W) images, uint8 or in [0, 1], on any device. The standard errors are over test images (the
    spread of the per-image figures / sqrt(N)): the uncertainty of the test-set mean from its finite sample.
    """
    t0 = time.perf_counter()
    was_training = vae.training
    vae.eval()
    try:
        x_all = x_test if config.n_test is None else x_test[:config.n_test]
        x_all, how = scored_images(vae, x_all, config.binarize_seed)
        n = x_all.shape[0]
        batch = max(1, min(n, config.max_rows // config.k, 1024))  # images per encoder pass: one chunk of k each
        gen = torch.Generator().manual_seed(config.sample_seed)
        elbos, iwaes = [], []
        for start in range(0, n, batch):
            elbo, iwae = vae_bounds(vae, x_all[start:start + batch], config.k, generator=gen,
                                    max_rows=config.max_rows)
            elbos.append(elbo.cpu())
            iwaes.append(iwae.cpu())
            if progress is not None:
                done = min(start + batch, n)
                progress(done / n, f"IWAE k={config.k:,}: {done:,}/{n:,} test images")
    finally:
        vae.train(was_training)
    elbo, iwae = torch.cat(elbos), torch.cat(iwaes)  # (N,) float64 each
    se = (lambda t: float(t.std() / math.sqrt(n)) if n > 1 else None)
    bernoulli = vae.config.decoder == "bernoulli"
    return {
        "neg_elbo": float(-elbo.mean()),
        "neg_elbo_se": se(elbo),
        "iwae_nll": float(-iwae.mean()),
        "iwae_nll_se": se(iwae),
        "iwae_k": config.k,
        "n_test": n,
        "data": how,
        "comparable": bernoulli,  # a log-probability of binary images; the Gaussian decoder's is a density
        "units": "nats per image" if bernoulli else "nats per image (a density: not comparable)",
        "seconds": round(time.perf_counter() - t0, 3),
    }
