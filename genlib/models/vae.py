"""The variational autoencoder of Kingma & Welling (2014, "Auto-Encoding Variational Bayes"), as in the course's seed.

Encoder Linear(D, H)-ReLU-Linear(H, H)-ReLU with heads `enc_mu` and `enc_log_sigma` give q(z|x) = N(mu, sigma^2);
decoder Linear(latent, H)-ReLU-Linear(H, D) gives p(x|z): Bernoulli logits (pytorch/examples' vae) or the seed's
Normal(tanh(.), 1) on data shifted to [-0.5, 0.5]. The loss is the negative ELBO in nats per image, with the KL
term weighted by beta (Higgins et al. 2017's beta-VAE when beta != 1).

The training loss is the batch mean of the two per-image terms a student finds in the lecture, `recon_term`
(-log p(x|z)) and `kl_term` (KL(q(z|x) || p(z))); the IWAE evaluation (genlib.quality.iwae) uses the same two.
Speed on a CPU: Adam runs as one fused kernel per parameter (`fused=True`, also kept after loading a checkpoint's
optimiser state) and the ReLUs work in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from genlib.config import bounds, check_declared, check_ints, choice, number, whole
from genlib.models.base import DenseDecoder, GenerativeModel, LatentModel, dense_layer, keep_fused

DECODERS = ("bernoulli", "gaussian")
GAUSSIAN_SHIFT = 0.5  # the seed's transforms.Normalize(0.5, 1): x in [0, 1] -> x - 0.5 in [-0.5, 0.5]


def _check_beta(beta: float) -> None:
    bounds(VAEConfig, "beta").check("beta", beta)  # the config's declaration: one range for config, knob and form


@dataclass(frozen=True, kw_only=True)
class VAEConfig:
    """Constructor arguments of a VAE; the defaults are the seed's (784-512-8, lr 1e-3 set by the trainer)."""

    image_shape: tuple[int, int, int] = (1, 28, 28)
    # H, width of both hidden layers of the encoder and of the decoder's one
    hidden: int = whole(512, 8, 4096, help="hidden layer width")
    latent: int = whole(8, 2, 64, help="latent dimensions (2 to 64)")  # dimension of z
    # "bernoulli" (logits, BCE) or the seed's Normal(tanh(.), 1)
    decoder: str = choice("bernoulli", DECODERS, help="p(x|z), the pixels' likelihood")
    # weight of the KL term at the start of training; VAE.set_beta changes it
    beta: float = number(1.0, 0.0, 10.0, help="weight of the KL term")

    def __post_init__(self) -> None:
        check_ints("image_shape", self.image_shape, 3, 1)
        check_declared(self)


class VAE(GenerativeModel, LatentModel):
    """A fully connected VAE; `train_step` takes images in [0, 1] and minimises recon + beta * kl."""

    name: ClassVar[str] = "vae"
    title: ClassVar[str] = "VAE"
    likelihood: ClassVar[str | None] = "iwae"
    likelihood_bound_metric: ClassVar[str | None] = "loss"  # the negative ELBO per image (with beta = 1)
    one_pass_sampling: ClassVar[bool] = True
    config_class: ClassVar[type] = VAEConfig
    metric_names: ClassVar[tuple[str, ...]] = ("loss", "recon", "kl")
    live_knobs: ClassVar[tuple[str, ...]] = ("lr", "beta")
    metric_labels: ClassVar[dict[str, str]] = {
        "loss": "Loss (negative ELBO, nats per image): reconstruction error plus beta times the KL term; "
                "with beta = 1 it is an upper bound on -log p(x).",
        "recon": "Reconstruction (nats per image): how badly the decoder rebuilds an image from its own code z, "
                 "-E_q log p(x|z) summed over the pixels.",
        "kl": "KL divergence (nats per image): how far the encoder's q(z|x) is from the N(0, I) prior, "
              "the price paid for information stored in z.",
    }

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        self.image_shape = tuple(config.image_shape)
        self.latent_dim = config.latent
        self.beta = float(config.beta)  # mutable on the model (set_beta), the frozen config keeps the start value
        d, h, k = math.prod(self.image_shape), config.hidden, config.latent
        # the seed's Encoder: (B, D) -> (B, H) -> (B, H), then two heads (B, H) -> (B, latent)
        self.encoder = nn.Sequential(nn.Linear(d, h), nn.ReLU(inplace=True), nn.Linear(h, h), nn.ReLU(inplace=True))
        self.enc_mu = nn.Linear(h, k)
        self.enc_log_sigma = nn.Linear(h, k)
        # the seed's Decoder: (B, latent) -> (B, H) -> (B, D) raw outputs (logits, or pre-tanh means)
        self.decoder = nn.Sequential(nn.Linear(k, h), nn.ReLU(inplace=True), nn.Linear(h, d))
        self.optimizer: torch.optim.Optimizer | None = None

    # ---- training setup ----
    def _make_optimizers(self, lr: float) -> None:
        # the seed's optim.Adam(vae.parameters(), 1e-3); fused: one kernel per parameter (CPU, CUDA, MPS), same update
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr, fused=True)

    @classmethod
    def check_knob(cls, name: str, value: object) -> None:
        super().check_knob(name, value)
        if name == "beta":
            _check_beta(value)

    def training_state(self) -> dict:
        """Adam's moments and the current beta (set live, it must survive a resume)."""
        return {**super().training_state(), "beta": self.beta}

    def load_training_state(self, state: dict) -> None:
        super().load_training_state(state)
        if self.optimizer is not None:
            keep_fused(self.optimizer)
        if state.get("beta") is not None:
            self.set_beta(float(state["beta"]))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {} if self.optimizer is None else {"adam": self.optimizer}

    def set_beta(self, beta: float) -> None:
        """Change the KL weight of a running training (KL annealing, beta-VAE experiments)."""
        _check_beta(beta)
        self.beta = float(beta)

    # ---- the model ----
    def _encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, D): the Gaussian variant sees the seed's shifted data, Bernoulli raw [0, 1]."""
        x = x.reshape(x.shape[0], -1)
        return x - GAUSSIAN_SHIFT if self.config.decoder == "gaussian" else x

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) for images x (B, C, H, W) in [0, 1]: its mean and log standard deviation, each (B, latent)."""
        hidden = self.encoder(self._encoder_input(x))  # (B, H)
        # both heads as one (H -> 2 latent) product, in fp32 even under bf16 autocast: matmuls this narrow are
        # overhead-bound, one fp32 call costs a quarter of two bf16 ones (forward and backward), and mu, log sigma
        # feed fp32 sums anyway
        weight = torch.cat((self.enc_mu.weight, self.enc_log_sigma.weight))  # (2 latent, H)
        bias = torch.cat((self.enc_mu.bias, self.enc_log_sigma.bias))
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            mu, log_sigma = F.linear(hidden.float(), weight, bias).chunk(2, dim=1)  # (B, latent) each
        return mu, log_sigma

    def reparameterize(self, mu: torch.Tensor, log_sigma: torch.Tensor, *,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): a draw from q(z|x) that gradients flow through (the seed's rsample)."""
        if generator is not None and generator.device != mu.device:
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)  # CPU draw, then move
        else:
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return torch.addcmul(mu, torch.exp(log_sigma), eps)  # mu + sigma * eps in one op

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's raw output (B, C, H, W) for z (B, latent): Bernoulli logits, or the Gaussian mean pre-tanh."""
        return self.decoder(z).reshape(z.shape[0], *self.image_shape)

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(raw decoder output (B, C, H, W), mu (B, latent), log_sigma (B, latent)) for one draw z ~ q(z|x)."""
        mu, log_sigma = self.encode(x)
        z = self.reparameterize(mu, log_sigma, generator=generator)
        return self.decode_logits(z), mu, log_sigma

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1]: the decoder's mean (sigmoid of the logits, or tanh mean + 0.5 clamped)."""
        raw = self.decode_logits(z.to(self.device, torch.float32)).float()
        if self.config.decoder == "bernoulli":
            return torch.sigmoid(raw)
        return (torch.tanh(raw) + GAUSSIAN_SHIFT).clamp_(0.0, 1.0)

    def export_decoder(self) -> DenseDecoder:
        """The decoder Linear-ReLU-Linear and its output (sigmoid, or tanh + 0.5) as plain tensors."""
        first, last = self.decoder[0], self.decoder[2]  # Sequential(Linear(k, h), ReLU, Linear(h, d))
        out = "sigmoid" if self.config.decoder == "bernoulli" else "tanh_half"
        layers = (dense_layer(first.weight, first.bias, "relu"), dense_layer(last.weight, last.bias, "none"))
        return DenseDecoder(layers, out)

    # ---- the loss ----
    def recon_term(self, raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per image (B,), summed over pixels, for raw decoder outputs and images x in [0, 1]."""
        raw = raw.float().reshape(raw.shape[0], -1)  # (B, D); fp32 even under autocast: sums over 784 pixels
        x = x.float().reshape(x.shape[0], -1)
        if self.config.decoder == "bernoulli":
            # -[x log p + (1 - x) log(1 - p)] with p = sigmoid(raw); grey intensities as soft targets (pytorch/examples)
            return F.binary_cross_entropy_with_logits(raw, x, reduction="none").sum(-1)
        # the seed's -Normal(tanh(raw), 1).log_prob(x - 0.5) = (x - 0.5 - mean)^2 / 2 + log(2 pi) / 2 per pixel
        diff = (x - GAUSSIAN_SHIFT) - torch.tanh(raw)
        return (0.5 * diff.square() + 0.5 * math.log(2 * math.pi)).sum(-1)

    @staticmethod
    def kl_term(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, sigma^2) || N(0, I)) per image (B,) = 0.5 sum_j (mu^2 + sigma^2 - 1 - 2 log sigma) (K&W, app. B)."""
        mu, log_sigma = mu.float(), log_sigma.float()
        return 0.5 * (mu.square() + torch.exp(2.0 * log_sigma) - 1.0 - 2.0 * log_sigma).sum(-1)

    def loss(self, x: torch.Tensor, *, z: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Batch means of recon, kl and loss = recon + beta * kl (nats per image) for images x (B, C, H, W) in [0, 1].

        One reparameterised draw z ~ q(z|x) per image estimates the reconstruction term, as in the seed;
        pass `z` (B, latent) to evaluate it at fixed latents instead (the KL term is analytic either way).
        """
        mu, log_sigma = self.encode(x)  # q(z|x): (B, latent) each
        if z is None:
            z = self.reparameterize(mu, log_sigma, generator=generator)
        recon = self.recon_term(self.decode_logits(z), x).mean()  # E_q[-log p(x|z)], one draw per image
        kl = self.kl_term(mu, log_sigma).mean()  # KL(q(z|x) || p(z)), analytic
        return {"loss": recon + self.beta * kl, "recon": recon, "kl": kl}

    def train_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One Adam step on the negative ELBO of a batch x (B, C, H, W) in [0, 1]; detached metrics, no host sync."""
        if self.optimizer is None:
            raise RuntimeError("call configure_training(lr=...) before train_step")
        x = x.to(self.device, torch.float32)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            terms = self.loss(x)
        terms["loss"].backward()
        self.optimizer.step()
        return {k: v.detach() for k, v in terms.items()}

    # ---- generation ----
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n new images (n, C, H, W) in [0, 1]: decoder means at prior draws z ~ N(0, I)."""
        return self.decode(self.sample_latent(n, generator=generator))
