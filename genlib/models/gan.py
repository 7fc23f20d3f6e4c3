"""The seed's DCGAN (Radford et al. 2016) trained as in Goodfellow et al. (2014), its Keras model layer for layer.

Generator: noise (B, 100) -> Dense -> BN -> LeakyReLU -> (256, 7, 7) -> three 5x5 transposed convolutions -> tanh
image in [-1, 1]; discriminator: two strided 5x5 convolutions with LeakyReLU and dropout -> one logit. Both
players take their Adam step from one shared forward pass, as the seed's `train_step` with two GradientTapes.
Keras's defaults are kept where the seed relies on them: Glorot-uniform weights, zero biases, LeakyReLU slope 0.3,
BatchNormalization eps 1e-3 and momentum 0.99 (PyTorch's 0.01), Adam betas (0.9, 0.999) and eps 1e-7.

Speed on a CPU: dropout draws its keep mask as 15-bit uniforms compared with the rate (torch.bernoulli_, which
nn.Dropout uses, is 4-5x slower on a CPU, and CPU random numbers are drawn by one thread), the LeakyReLUs work in
place, and Adam runs as one fused kernel per parameter (also after loading a checkpoint's optimiser state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from genlib.data import from_signed, to_signed
from genlib.sampling.bernoulli import SCALE, uniform15_, words_for
from genlib.config import check_declared, choice, flag, number, whole
from genlib.models.base import GenerativeModel, LatentModel, keep_fused

# preset -> (generator widths: dense channels, conv-T 1, conv-T 2; discriminator widths: conv 1, conv 2).
# "seed" is the course's model (2.5M parameters, 62M multiply-adds per image); "fast" divides every width by 4
# (0.4M parameters, 4M multiply-adds: the convolutions shrink 16-fold, the noise-to-7x7 dense layer 4-fold) for CPUs.
PRESETS: dict[str, tuple[tuple[int, int, int], tuple[int, int]]] = {
    "seed": ((256, 128, 64), (64, 128)),
    "fast": ((64, 32, 16), (16, 32)),
}
BN_EPS = 1e-3  # Keras BatchNormalization epsilon
BN_MOMENTUM = 0.01  # Keras momentum 0.99 keeps 99% of the running stats; PyTorch's momentum is the share replaced
ADAM_EPS = 1e-7  # Keras Adam epsilon


@dataclass(frozen=True, kw_only=True)
class GANConfig:
    """Constructor arguments of a GAN; the defaults are the seed's Keras model (lr 1e-4 is set by the trainer)."""

    # "seed" (2.3M + 0.2M parameters) or "fast" (widths / 4, for CPUs)
    preset: str = choice("seed", PRESETS, cli="widths", help="network size, the seed's or every width / 4")
    # dimension of the generator's input noise z
    noise_dim: int = whole(100, 1, 1024, help="dimension of the noise z")
    # Keras LeakyReLU's default alpha, which the seed uses
    leaky_slope: float = number(0.3, 0.0, 1.0, hi_open=True, help="LeakyReLU slope")
    dropout: float = number(0.3, 0.0, 1.0, hi_open=True, help="the discriminator's dropout rate")
    # Keras's default; DCGAN's paper recommends 0.5
    adam_beta1: float = number(0.9, 0.0, 1.0, hi_open=True, help="Adam's beta1 (DCGAN's paper: 0.5)")
    # NHWC memory format for the convolutions: on by default, the fastest layout measured on a 2-core Xeon (bf16:
    # 2.67x the seed port against 2.28x in NCHW; fp32 1.19x against 1.10x) and on recent GPUs
    channels_last: bool = flag(True, help="NHWC layout (default on; --no-channels-last for NCHW)")

    def __post_init__(self) -> None:
        check_declared(self)


class Generator(nn.Module):
    """The seed's generator_model(): z (B, noise_dim) -> image (B, 1, 28, 28) in [-1, 1]."""

    def __init__(self, noise_dim: int, widths: tuple[int, int, int], slope: float) -> None:
        super().__init__()
        c0, c1, c2 = widths
        self.c0 = c0
        self.fc = nn.Linear(noise_dim, 7 * 7 * c0, bias=False)
        self.bn0 = nn.BatchNorm1d(7 * 7 * c0, eps=BN_EPS, momentum=BN_MOMENTUM)
        # 'same' padding: stride 1 keeps 7x7; stride 2 with output_padding 1 doubles the side, as Keras's
        self.deconv1 = nn.ConvTranspose2d(c0, c1, 5, stride=1, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(c1, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.deconv2 = nn.ConvTranspose2d(c1, c2, 5, stride=2, padding=2, output_padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.deconv3 = nn.ConvTranspose2d(c2, 1, 5, stride=2, padding=2, output_padding=1, bias=False)
        self.act = nn.LeakyReLU(slope, inplace=True)  # after BN, whose backward needs its input, not its output
        self.memory_format = torch.contiguous_format

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.act(self.bn0(self.fc(z)))  # (B, 7*7*c0); Keras's BN normalises each of the 12,544 units
        # Keras reshapes (B, 12544) to NHWC (7, 7, 256); we reshape to NCHW (256, 7, 7): the same layer, permuted units
        h = h.view(-1, self.c0, 7, 7).contiguous(memory_format=self.memory_format)  # (B, 256, 7, 7)
        h = self.act(self.bn1(self.deconv1(h)))  # (B, 128, 7, 7)
        h = self.act(self.bn2(self.deconv2(h)))  # (B, 64, 14, 14)
        return torch.tanh(self.deconv3(h))  # (B, 1, 28, 28) in [-1, 1]


class Discriminator(nn.Module):
    """The seed's discriminator_model(): image (B, 1, 28, 28) in [-1, 1] -> one logit (B, 1) for 'real'."""

    def __init__(self, widths: tuple[int, int], slope: float, dropout: float) -> None:
        super().__init__()
        c1, c2 = widths
        # padding 2 gives Keras's 'same' output sizes (28 -> 14 -> 7); Keras pads 1 before and 2 after here,
        # PyTorch 2 on both sides, a one-pixel shift of the sampling grid that changes no shape or count
        self.conv1 = nn.Conv2d(1, c1, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, stride=2, padding=2)
        self.act = nn.LeakyReLU(slope, inplace=True)  # after a convolution, whose backward needs no output
        self.drop = nn.Dropout(dropout)  # holds the rate; `_dropout` applies it
        self.fc = nn.Linear(c2 * 7 * 7, 1)

    def _dropout(self, h: torch.Tensor) -> torch.Tensor:
        """nn.Dropout's inverted dropout: zero each unit with probability p in training, scale the rest by 1/(1-p).

        The keep mask is u >= 32768 p for 15-bit uniforms u (genlib.sampling.bernoulli: four per 64-bit random word, half the
        cost of fp32 uniforms; P(keep) is within 3e-5 of 1 - p), made in h's dtype and memory format; it replaces
        nn.Dropout's bernoulli_, the step's slowest op on a CPU.
        """
        p = self.drop.p
        if not self.training or p == 0.0:
            return h
        keep = torch.empty_like(h)  # h's dtype and memory format, so that h * keep runs at full speed
        dense = _memory_order(keep)  # the same storage as a contiguous view: the comparison's fast path
        u = uniform15_(words_for(dense.numel(), h.device), dense.shape)  # int16 on [0, 32767]
        torch.ge(u, p * SCALE, out=dense)  # an int16 against a Python float compares in fp32: exact
        return h * keep.mul_(1.0 / (1.0 - p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._dropout(self.act(self.conv1(x)))  # (B, 64, 14, 14)
        h = self._dropout(self.act(self.conv2(h)))  # (B, 128, 7, 7)
        if h.dim() == 4 and not h.is_contiguous() and h.is_contiguous(memory_format=torch.channels_last):
            # NHWC: flatten in memory order (c fastest, a free view) and permute the Dense kernel's 6,272 inputs
            # to match: the same sum, and the gradient reaches the convolutions as NHWC (no slow mixed layouts)
            n, c, hh, ww = h.shape
            weight = self.fc.weight.view(-1, c, hh, ww).permute(0, 2, 3, 1).reshape(-1, c * hh * ww)
            return F.linear(h.permute(0, 2, 3, 1).reshape(n, -1), weight, self.fc.bias)
        return self.fc(torch.flatten(h, 1))  # (B, 6272) -> (B, 1) logit


def _keras_init(module: nn.Module) -> None:
    """Keras's initialisers: Glorot-uniform kernels, zero biases (BN keeps gamma 1, beta 0 in both libraries)."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.xavier_uniform_(module.weight)  # fan_in + fan_out is the same for Keras's and PyTorch's layouts
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class GAN(GenerativeModel, LatentModel):
    """The seed's DCGAN: `netG` maps noise to images, `netD` scores images; `train_step` plays one round."""

    name: ClassVar[str] = "gan"
    title: ClassVar[str] = "GAN"
    one_pass_sampling: ClassVar[bool] = True
    averaged_modules: ClassVar[tuple[str, ...]] = ("netG",)  # a weight average covers the generator (and its BN stats)
    config_class: ClassVar[type] = GANConfig
    metric_names: ClassVar[tuple[str, ...]] = ("loss", "d_loss", "g_loss", "d_real", "d_fake")
    monitor: ClassVar[str] = "d_loss"
    min_batch_size: ClassVar[int] = 2  # BatchNorm needs two examples per batch to normalise in training
    metric_labels: ClassVar[dict[str, str]] = {
        "loss": "Total loss: the sum of both players' cross-entropies (d_loss + g_loss); "
                "it need not fall, because the players pull against each other.",
        "d_loss": "Discriminator loss: its cross-entropy at calling real images real and generated ones fake; "
                  "2 log 2 = 1.39 when it can only guess.",
        "g_loss": "Generator loss: -log D(G(z)), low when the generator fools the discriminator; "
                  "log 2 = 0.69 at the balance point.",
        "d_real": "D(real): the discriminator's mean probability that real images are real; "
                  "it drifts toward 1/2 as the generator improves.",
        "d_fake": "D(fake): the discriminator's mean probability that generated images are real; "
                  "the seed stops training when it reaches 1/2.",
    }

    def __init__(self, config: GANConfig) -> None:
        super().__init__(config)
        g_widths, d_widths = PRESETS[config.preset]
        self.latent_dim = config.noise_dim
        self.netG = Generator(config.noise_dim, g_widths, config.leaky_slope)
        self.netD = Discriminator(d_widths, config.leaky_slope, config.dropout)
        self.apply(_keras_init)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        if config.channels_last:
            self.netG.memory_format = self.memory_format
            self.to(memory_format=torch.channels_last)  # 4-D conv weights become NHWC; vectors are unaffected
        self.optG: torch.optim.Optimizer | None = None
        self.optD: torch.optim.Optimizer | None = None

    def _make_optimizers(self, lr: float) -> None:
        # the seed's tf.keras.optimizers.Adam(1e-4) for each player, with Keras's betas and epsilon
        betas = (self.config.adam_beta1, 0.999)  # fused: one kernel per parameter (CPU, CUDA, MPS), same update
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=lr, betas=betas, eps=ADAM_EPS, fused=True)
        self.optD = torch.optim.Adam(self.netD.parameters(), lr=lr, betas=betas, eps=ADAM_EPS, fused=True)

    def load_training_state(self, state: dict) -> None:
        super().load_training_state(state)
        for opt in self.optimizers().values():
            keep_fused(opt)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self.optG is None or self.optD is None:
            return {}
        return {"netG": self.optG, "netD": self.optD}

    def compute_gradients(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The seed's two GradientTapes: one forward pass, then grad of g_loss into netG and of d_loss into netD.

        Fills `.grad` of every parameter (set to None first) and returns the detached metrics; steps nothing.
        """
        for p in self.parameters():
            p.grad = None
        x, z = x.to(self.device, torch.float32), z.to(self.device, torch.float32)
        real = to_signed(x).contiguous(memory_format=self.memory_format)  # (B, 1, 28, 28) in [-1, 1]
        with self.autocast():
            fake = self.netG(z)  # (B, 1, 28, 28)
            real_out = self.netD(real).float()  # (B, 1) logits
            fake_out = self.netD(fake).float()  # (B, 1)
        ones, zeros = torch.ones_like(real_out), torch.zeros_like(fake_out)
        # non-saturating generator loss (Goodfellow et al. 2014, sec. 3): -log D(G(z))
        g_loss = F.binary_cross_entropy_with_logits(fake_out, ones)
        # discriminator: -log D(x) - log(1 - D(G(z)))
        d_loss = (F.binary_cross_entropy_with_logits(real_out, ones)
                  + F.binary_cross_entropy_with_logits(fake_out, zeros))
        # ---- gradients of G from g_loss only (gen_tape.gradient), keeping the graph for D's ----
        g_loss.backward(inputs=list(self.netG.parameters()), retain_graph=True)
        # ---- gradients of D from d_loss only (disc_tape.gradient); no gradient flows into G's parameters ----
        d_loss.backward(inputs=list(self.netD.parameters()))
        return {"loss": (d_loss + g_loss).detach(), "d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
                "d_real": torch.sigmoid(real_out).mean().detach(), "d_fake": torch.sigmoid(fake_out).mean().detach()}

    def train_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One round on real images x (B, 1, 28, 28) in [0, 1]: both players step on gradients from one forward pass."""
        if self.optG is None or self.optD is None:
            raise RuntimeError("call configure_training(lr=...) before train_step")
        self.train()  # the seed calls both nets with training=True: batch statistics in BN, dropout on
        z = torch.randn(x.shape[0], self.latent_dim, device=self.device)  # (B, noise_dim), the seed's normal noise
        metrics = self.compute_gradients(x, z)
        # ---- update G, then D: both gradients were taken before either update, as in the seed ----
        self.optG.step()
        self.optD.step()
        return metrics

    # ---- generation ----
    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (n, 1, 28, 28) in [0, 1] for noise z (n, noise_dim): eval mode (BN running stats, no dropout)."""
        was_training = self.netG.training
        self.netG.eval()  # the seed's generator(..., training=False)
        try:
            x = self.netG(z.to(self.device, torch.float32)).float()
        finally:
            self.netG.train(was_training)
        return from_signed(x).contiguous()

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n new images (n, 1, 28, 28) in [0, 1] from noise z ~ N(0, I)."""
        return self.decode(self.sample_latent(n, generator=generator))

    @torch.no_grad()
    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        """D's probability (n,) that images x (n, 1, 28, 28) in [0, 1] are real, in eval mode (no dropout)."""
        was_training = self.netD.training
        self.netD.eval()
        try:
            logits = self.netD(to_signed(x.to(self.device, torch.float32)).contiguous(memory_format=self.memory_format))
        finally:
            self.netD.train(was_training)
        return torch.sigmoid(logits.float()).squeeze(1)


def _memory_order(t: torch.Tensor) -> torch.Tensor:
    """A dense tensor as a contiguous view in its memory order (NHWC tensors permuted to (N, H, W, C))."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1)
    return t
