"""A convolutional energy-based model E(x) on 28x28 images, trained by contrastive divergence with Langevin negatives
drawn mostly from a replay buffer (Du & Mordatch 2019, arXiv 1903.08689; Foster, Generative Deep Learning, ch. 7).

p(x) ~ exp(-E(x)): low energy means likely. One training step draws B chains, most from the replay buffer of
earlier negatives and a few (`reinit`) from uniform noise, runs `langevin_steps` of Langevin dynamics downhill on
E (genlib.sampling.langevin), writes them back into the buffer, then lowers the energy of the data and raises that of the
negatives:

    loss = mean E(x_data) - mean E(x_neg) + reg_weight * (mean E(x_data)^2 + mean E(x_neg)^2)

The contrastive term alone fixes only differences of energy, so the energies could drift without bound; the
regulariser keeps them near 0. The network is Foster's (and Lippe's UvA tutorial's) small CNN with Swish units; with
`spectral_norm` every layer's weight W is used as W / sigma_max(W) (Miyato et al. 2018, arXiv 1802.05957), as Du &
Mordatch do, which bounds how fast E can change with x. The buffer is not in the state_dict (weights stay small) but in
`training_state`, so a resumed run keeps its chains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from genlib.sampling.langevin import LangevinChain, langevin_chain
from genlib.config import check_declared, flag, number, whole, whole_tuple
from genlib.models.base import EnergyModel, GenerativeModel, device_generator
from genlib.models.spectral_norm import is_estimate, power_iteration_, spectral_norm_

IMAGE_SHAPE = (1, 28, 28)
REPLAY_GRID = "replay"  # the worker writes the buffer's grid to <run folder>/replay.png


@dataclass(frozen=True, kw_only=True)
class EBMConfig:
    """Constructor arguments of an EBM. Defaults: Foster's network and sampler, with the training chain shortened
    and the buffer shrunk so that a CPU learns recognisable digits: 2 MNIST epochs at batch 128 (936 steps), about
    100-140 images/s on one thread of a 2-core CPU (15-20 minutes); samples from noise take 500 Langevin steps.
    Pixels live in [0, 1] here, [-1, 1] in Foster: step 10 with clip 0.03 moves a pixel twice as far as his."""

    channels: tuple[int, int, int, int] = whole_tuple(  # widths of the four strided convolutions
        (16, 32, 64, 64), 1, 512, help="the four convolutions' widths, e.g. 16,32,64,64")
    hidden: int = whole(64, 1, 4096, help="hidden layer width")  # units of the dense layer before the energy
    # Foster: 60
    langevin_steps: int = whole(20, 1, 1000, help="Langevin steps per training batch")
    # multiplies the clipped dE/dx (pixels in [0, 1])
    step_size: float = number(10.0, 0.0, 1000.0, lo_open=True,
                              help="Langevin step size (multiplies the clipped dE/dx)")
    # per step
    noise: float = number(0.005, 0.0, 1.0, cli="langevin_noise", help="standard deviation of the Langevin noise")
    # each component of dE/dx is clipped to [-grad_clip, grad_clip]: a pixel moves <= 0.3 a step
    grad_clip: float = number(0.03, 0.0, 10.0, lo_open=True, help="clip of each Langevin step's dE/dx per pixel")
    buffer_size: int = whole(2048, 1, 100_000, help="replay buffer of negatives")  # Foster: 8192
    # share of chains restarted from uniform noise each step
    reinit: float = number(0.05, 0.0, 1.0, help="share of each batch's chains started from noise")
    # alpha of the energy-magnitude regulariser
    reg_weight: float = number(0.1, 0.0, 100.0, help="weight of the energy-magnitude regulariser")
    # noise on the data, so its energy is smooth around each image
    data_noise: float = number(0.005, 0.0, 1.0, help="noise added to the training images")
    # gradient norm clip (Lippe's gradient_clip_val)
    param_clip: float = number(0.1, 0.0, 1e6, lo_open=True, help="clip of the parameters' gradient norm")
    # 0 (no momentum) as Du & Mordatch and Lippe: stable
    adam_beta1: float = number(0.0, 0.0, 1.0, hi_open=True, help="Adam's beta1")
    # Langevin steps of `sample`, from uniform noise (digits at 200-500)
    sample_steps: int = whole(500, 1, 100_000, help="Langevin steps when sampling from noise")
    # Du & Mordatch's Lipschitz bound on E: every layer's weight divided by its largest singular value
    spectral_norm: bool = flag(False, help="spectral normalisation of every layer (Miyato et al. 2018)")

    def __post_init__(self) -> None:
        check_declared(self)


class EnergyNet(nn.Module):
    """x (B, 1, 28, 28) in [0, 1] -> E(x) (B,): four strided 3x3/5x5 convolutions with Swish, two dense layers."""

    def __init__(self, channels: tuple[int, int, int, int], hidden: int, spectral_norm: bool = False) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        # padding 4 makes the 28x28 input act as Foster's 32x32 one: 28 -> 16 -> 8 -> 4 -> 2
        self.conv1 = nn.Conv2d(1, c1, 5, stride=2, padding=4)
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.conv4 = nn.Conv2d(c3, c4, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(c4 * 2 * 2, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        if spectral_norm:  # W -> W / sigma_max(W), sigma from one power iteration per training step
            for layer in (self.conv1, self.conv2, self.conv3, self.conv4, self.fc1, self.fc2):
                spectral_norm_(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv1(x * 2.0 - 1.0))  # pixels to [-1, 1], as Foster's; (B, c1, 16, 16)
        h = F.silu(self.conv2(h))  # (B, c2, 8, 8)
        h = F.silu(self.conv3(h))  # (B, c3, 4, 4)
        h = F.silu(self.conv4(h))  # (B, c4, 2, 2)
        h = F.silu(self.fc1(h.flatten(1)))  # (B, hidden)
        return self.fc2(h).squeeze(1)  # (B,) energies


class EBM(GenerativeModel, EnergyModel):
    """An energy network `net`, its Adam optimiser and the replay buffer of Langevin negatives."""

    name: ClassVar[str] = "ebm"
    title: ClassVar[str] = "EBM"
    config_class: ClassVar[type] = EBMConfig
    metric_names: ClassVar[tuple[str, ...]] = ("loss", "energy_real", "energy_sample", "energy_gap", "grad_norm")
    monitor: ClassVar[str] = "loss"  # no metric falls steadily: the sampler chases the model (see metric_labels)
    metric_labels: ClassVar[dict[str, str]] = {
        "loss": "Loss: contrastive divergence plus the regulariser, mean E(data) − mean E(samples) + "
                "α(E(data)² + E(samples)²). It drops below 0 while the model separates data from its samples, "
                "then hovers near 0 as the Langevin samples catch up; it is not a likelihood.",
        "energy_real": "E(data): mean energy of the training images (with a little noise). Low energy means "
                       "likely, so training pushes it down.",
        "energy_sample": "E(samples): mean energy of the Langevin samples (the negatives). Training pushes it up, "
                         "while the sampler pulls its samples downhill.",
        "energy_gap": "Gap E(samples) − E(data): how much more likely the model finds the data than its own "
                      "samples. Large while the samples are poor; it shrinks toward 0 as they look like data.",
        "grad_norm": "Langevin gradient norm: mean norm of dE/dx along the Langevin chains, before clipping; how "
                     "steep the energy landscape is where the samples walk.",
    }

    def __init__(self, config: EBMConfig) -> None:
        super().__init__(config)
        self.net = EnergyNet(config.channels, config.hidden, config.spectral_norm)
        # the replay buffer (buffer_size, 1, 28, 28) in [0, 1]; moved by .to(), not in state_dict, saved by
        # training_state(); made on the first training step
        self.register_buffer("replay", None, persistent=False)
        self.opt: torch.optim.Optimizer | None = None

    # ---- energy and sampling ----
    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) (B,) for images x (B, 1, 28, 28) in [0, 1]; differentiable (gradients are the caller's choice)."""
        if tuple(x.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(f"the EBM takes images of shape {IMAGE_SHAPE}, got {tuple(x.shape[1:])}")
        with self.autocast():
            return self.net(x.to(self.device)).float()

    def image_energy(self, x: torch.Tensor) -> torch.Tensor:
        """The contract's energy on images (EnergyModel): E(x) itself."""
        return self.energy(x)

    def langevin(self, x0: torch.Tensor, steps: int, *, step_size: float | None = None, noise: float | None = None,
                 clip: float | None = None, generator: torch.Generator | None = None, every: int = 1,
                 return_trajectory: bool = False) -> LangevinChain:
        """A Langevin chain on this model's energy from x0 (B, 1, 28, 28); unset knobs take the config's values."""
        cfg = self.config
        # the weights stay fixed along a chain: with spectral normalisation, normalise them once, not every step
        with parametrize.cached():
            return langevin_chain(self.energy, x0.to(self.device), steps,
                                  step_size=cfg.step_size if step_size is None else step_size,
                                  noise=cfg.noise if noise is None else noise,
                                  clip=cfg.grad_clip if clip is None else clip, bounds=(0.0, 1.0),
                                  generator=generator, every=every, return_trajectory=return_trajectory)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images (n, 1, 28, 28) in [0, 1]: `sample_steps` Langevin steps from uniform noise."""
        g = device_generator(generator, self.device)
        x0 = torch.rand(n, *IMAGE_SHAPE, generator=g, device=self.device)  # (n, 1, 28, 28)
        return self.langevin(x0, self.config.sample_steps, generator=g).x

    def averaged_entries(self) -> dict[str, torch.Tensor]:
        """The weight average's tensors, less spectral normalisation's power-iteration vectors (u, v): they are
        estimates of the live weights' singular vectors, not weights, and an average of unit vectors is not one."""
        return {k: v for k, v in super().averaged_entries().items() if not is_estimate(k)}

    # ---- training ----
    def _make_optimizers(self, lr: float) -> None:
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr, betas=(self.config.adam_beta1, 0.999))
        self.replay = None

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {} if self.opt is None else {"net": self.opt}

    def _draw_negatives(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Start points (n, 1, 28, 28) for the negative chains and their buffer slots (n,)."""
        device = self.device
        if self.replay is None:  # the buffer starts as uniform noise
            self.replay = torch.rand(self.config.buffer_size, *IMAGE_SHAPE, device=device)
        slots = torch.randint(0, self.replay.shape[0], (n,), device=device)  # (n,)
        x0 = self.replay[slots]  # (n, 1, 28, 28), a copy
        fresh = torch.rand(n, device=device) < self.config.reinit  # (n,) chains restarted from noise
        return torch.where(fresh.view(n, 1, 1, 1), torch.rand_like(x0), x0), slots

    def train_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One contrastive-divergence step on images x (B, 1, 28, 28) in [0, 1]; detached 0-dim metrics."""
        if self.opt is None:
            raise RuntimeError("call configure_training(lr=...) before train_step")
        cfg = self.config
        self.train()
        n = x.shape[0]
        if cfg.spectral_norm:  # the step's singular-vector estimates, before any of its forward passes
            power_iteration_(self.net)
        # ---- negatives: Langevin from the buffer (and a little noise), then back into the buffer ----
        x0, slots = self._draw_negatives(n)
        chain = self.langevin(x0, cfg.langevin_steps)
        x_neg = chain.x  # (B, 1, 28, 28), detached
        self.replay[slots] = x_neg
        # ---- positives: the data, slightly noised ----
        x_real = x.to(self.device, torch.float32)
        if cfg.data_noise > 0:
            x_real = (x_real + cfg.data_noise * torch.randn_like(x_real)).clamp_(0.0, 1.0)
        # ---- update E: down on the data, up on the negatives (one forward pass for both) ----
        energies = self.energy(torch.cat([x_real, x_neg]))  # (2B,)
        e_real, e_neg = energies[:n], energies[n:]
        contrastive = e_real.mean() - e_neg.mean()
        regulariser = cfg.reg_weight * (e_real.pow(2).mean() + e_neg.pow(2).mean())
        loss = contrastive + regulariser
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), cfg.param_clip)
        self.opt.step()
        return {"loss": loss.detach(), "energy_real": e_real.mean().detach(), "energy_sample": e_neg.mean().detach(),
                "energy_gap": -contrastive.detach(), "grad_norm": chain.grad_norm}

    def training_state(self) -> dict[str, Any]:
        """Adam's moments and the replay buffer, for resuming."""
        state = super().training_state()
        if self.replay is not None:
            state["replay"] = self.replay.detach().clone()
        return state

    def load_training_state(self, state: dict[str, Any]) -> None:
        super().load_training_state(state)
        replay = state.get("replay")
        if replay is not None:
            if tuple(replay.shape[1:]) != IMAGE_SHAPE:
                raise ValueError(f"the saved replay buffer holds images of shape {tuple(replay.shape[1:])}, "
                                 f"not {IMAGE_SHAPE}; start a new run")
            self.replay = replay.to(self.device, torch.float32).clone()

    def replay_samples(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """n images (n, 1, 28, 28) picked at random from the replay buffer (None before the first step)."""
        if self.replay is None:
            return None
        n = min(n, self.replay.shape[0])
        idx = torch.randperm(self.replay.shape[0], generator=generator)[:n].to(self.replay.device)
        return self.replay[idx].detach().clone()

    def extra_grids(self) -> dict[str, torch.Tensor]:
        """Grids the training worker saves beside live.png: 64 replay-buffer images, the same slots every time (so
        the page shows the same chains evolving), as 'replay' (-> replay.png)."""
        images = self.replay_samples(64, generator=torch.Generator().manual_seed(0))
        return {} if images is None else {REPLAY_GRID: images}
