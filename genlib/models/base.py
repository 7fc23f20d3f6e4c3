"""The contract every genlib model implements (after pytorch-generative's base model and diffusers' shared contract).

A model owns its optimisers: `configure_training` makes them, `train_step` takes one batch of images in [0, 1]
and updates the parameters, returning named metrics as detached 0-dim tensors ("loss" always among them) so
that the loop can read them every N steps without a host synchronisation per step. `sample` returns images
(N, C, H, W) in [0, 1]. Models with a latent space also implement `LatentModel`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from genlib.config import check, check_choice, check_number
from genlib.data import to_unit
from genlib.devices import device_generator  # noqa: F401 - the models and evaluators take it from their contract
from genlib.models.averaging import WeightAverage, restore_live_weights

PRECISIONS = ("fp32", "bf16")
AVERAGE_KEY = "weight_average"  # training_state()'s entry of a run with a weight average


class GenerativeModel(nn.Module, ABC):
    """Base of all models: config in, one training step, samples out."""

    name: ClassVar[str]  # registry key, e.g. "vae"
    title: ClassVar[str]  # how pages, tables and messages name it, e.g. "VAE"
    config_class: ClassVar[type]  # the frozen dataclass of the constructor's arguments
    metric_names: ClassVar[tuple[str, ...]]  # keys of train_step's result, "loss" first
    monitor: ClassVar[str] = "loss"  # the metric that falls as the model learns (tests and the UI use it)
    # settings a running training may change (each through set_<name>); kept in checkpoints, logged as knob events
    live_knobs: ClassVar[tuple[str, ...]] = ("lr",)
    # how genlib.quality estimates its test log-likelihood: "ais" (annealed importance sampling of log Z, the RBM's),
    # "iwae" (importance-weighted bound through an encoder, the VAE's), or None (no likelihood: samples only)
    likelihood: ClassVar[str | None] = None
    # the train_step metric that is itself a bound on -log p(x) per image (the VAE's negative ELBO, "loss"), so that
    # runs of the model compare by it when they have no quality figures; None when no training metric is one
    likelihood_bound_metric: ClassVar[str | None] = None
    # whether `sample` is one network pass (the VAE's decoder, the GAN's generator), cheap enough for a page to
    # sample on the spot, rather than a chain of hundreds of steps (the RBM's Gibbs, the EBM's Langevin)
    one_pass_sampling: ClassVar[bool] = False
    # the submodules a weight average (TrainConfig.ema) covers, () for the whole model: only what samples are drawn
    # from (the GAN's generator, not its discriminator)
    averaged_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.lr: float | None = None
        self.precision = "fp32"
        self.weight_average: WeightAverage | None = None

    # ---- training ----
    def configure_training(self, *, lr: float, precision: str = "fp32", ema: float = 0.0) -> None:
        """Create the optimisers (or the closed-form update's state) for learning rate `lr`, and with `ema` in
        (0, 1) an exponential moving average of the weights with that decay (genlib.models.averaging)."""
        check_number("learning rate", lr, 0.0, 10.0, lo_open=True, hi_open=True)
        check_choice("precision", precision, PRECISIONS)
        check_number("ema", ema, 0.0, 1.0, hi_open=True)
        self.lr = float(lr)
        self.precision = precision
        self.weight_average = WeightAverage(ema) if ema > 0 else None
        self._make_optimizers(self.lr)

    @abstractmethod
    def _make_optimizers(self, lr: float) -> None:
        ...

    def init_from_data(self, x_train: torch.Tensor) -> None:
        """Set starting values that depend on the training images x_train (N, C, H, W), uint8 or in [0, 1]; called
        once before a fresh run's first step (never on resume or a fork). Nothing by default."""

    @abstractmethod
    def train_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Update on one batch x (B, C, H, W) in [0, 1]; return detached 0-dim metric tensors."""

    def train_step_uint8(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update on uint8 images x (B, C, H, W) in [0, 255], as the training loop holds them: `train_step` of
        x / 255, unless a model uses the bytes directly (the RBM binarises them in one fused pass)."""
        return self.train_step(to_unit(x))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The model's torch optimisers by name (empty for closed-form updates)."""
        return {}

    # ---- the weight average ----
    def averaged_entries(self) -> dict[str, torch.Tensor]:
        """The floating tensors of state_dict() that a weight average covers (views of the live ones: writing into
        them writes the model), under `averaged_modules`."""
        prefixes = tuple(f"{m}." for m in self.averaged_modules)
        return {k: v for k, v in self.state_dict().items()
                if v.is_floating_point() and (not prefixes or k.startswith(prefixes))}

    def update_average(self) -> None:
        """After each training step (the loop calls it): fold the weights into the average, when there is one."""
        if self.weight_average is not None:
            self.weight_average.update(self.averaged_entries())

    def averaged_weights(self) -> contextlib.AbstractContextManager:
        """A block in which the model holds its averaged weights (for drawing, saving, evaluating); a no-op without
        an average. Checkpoints save inside it, so every reader of a checkpoint sees the averaged model."""
        if self.weight_average is None:
            return contextlib.nullcontext()
        return self.weight_average.shown(self.averaged_entries())

    def set_lr(self, lr: float) -> None:
        """Change the learning rate of a running training without restarting it."""
        check_number("learning rate", lr, 0.0, 10.0, lo_open=True, hi_open=True)
        self.lr = float(lr)
        for opt in self.optimizers().values():
            for group in opt.param_groups:
                group["lr"] = self.lr

    @classmethod
    def check_knob(cls, name: str, value: Any) -> None:
        """ValueError unless `value` is a valid setting for the live knob `name` (checked before it is sent)."""
        check(name in cls.live_knobs, f"{cls.__name__} has no live setting {name!r}; it has {', '.join(cls.live_knobs)}")
        if name == "lr":
            check_number("learning rate", value, 0.0, 10.0, lo_open=True, hi_open=True)

    def knobs(self) -> dict[str, Any]:
        """The live knobs' current values, e.g. {"lr": 1e-3, "beta": 1.0}."""
        return {name: getattr(self, name) for name in self.live_knobs}

    def set_knob(self, name: str, value: Any) -> None:
        """Change one live knob (set_lr, set_beta, set_k...); ValueError for an unknown knob or a bad value."""
        self.check_knob(name, value)
        getattr(self, f"set_{name}")(value)

    def training_state(self) -> dict[str, Any]:
        """Everything besides the parameters that resuming needs (optimiser moments, persistent chains; with a weight
        average, the live weights, since a checkpoint's parameters are the average). Subclasses extend super()'s."""
        state: dict[str, Any] = {name: opt.state_dict() for name, opt in self.optimizers().items()}
        if self.weight_average is not None and self.weight_average.average is not None:
            state[AVERAGE_KEY] = self.weight_average.state(self.averaged_entries())
        return state

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Resume from training_state(), after load_state_dict of the checkpoint's parameters."""
        for name, opt in self.optimizers().items():
            if name in state:
                opt.load_state_dict(state[name])
        saved = state.get(AVERAGE_KEY)
        if saved is not None:  # the loaded parameters are an average: the live ones go back into the model
            if self.weight_average is not None:
                self.weight_average.restore(saved, self.averaged_entries())
            else:
                restore_live_weights(saved, self.averaged_entries())

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the model's device when precision is bf16; a no-op for fp32."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    # ---- generation ----
    @abstractmethod
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n new images (n, C, H, W) in [0, 1]; `generator` (CPU) makes them reproducible."""

    # ---- helpers ----
    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype (float32, or float64 for the reference path): what inputs are cast to."""
        for t in self.parameters():
            return t.dtype
        return torch.float32

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)


@dataclass(frozen=True)
class DenseLayer:
    """One fully connected layer of an exported decoder: y = act(weight @ x + bias)."""

    weight: torch.Tensor  # (n_out, n_in) float32 on the CPU, detached
    bias: torch.Tensor  # (n_out,)
    act: str  # "relu" or "none"


@dataclass(frozen=True)
class DenseDecoder:
    """A decoder as plain tensors, for code that must run it elsewhere (the dashboard's in-browser sliders):
    inputs (n_in,) -> each layer in turn -> `out` ("sigmoid", or "tanh_half": clamp(tanh + 0.5, 0, 1)) = the image's
    pixel means, exactly what the model's `decode` returns (flattened)."""

    layers: tuple[DenseLayer, ...]
    out: str

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """The reference computation, in float64: inputs (B, n_in) -> pixel means (B, n_out)."""
        x = inputs.double()
        for layer in self.layers:
            x = x @ layer.weight.double().t() + layer.bias.double()
            if layer.act == "relu":
                x = x.clamp_min(0.0)
        return torch.sigmoid(x) if self.out == "sigmoid" else (torch.tanh(x) + 0.5).clamp(0.0, 1.0)


def dense_layer(weight: torch.Tensor, bias: torch.Tensor, act: str) -> DenseLayer:
    """A DenseLayer of copies of `weight` (n_out, n_in) and `bias` (n_out,) in float32 on the CPU."""
    return DenseLayer(weight.detach().to("cpu", torch.float32).clone(), bias.detach().to("cpu", torch.float32).clone(),
                      act)


class LatentModel(ABC):
    """Models with a latent variable z that a slider can move: the VAE's z, the GAN's noise, the RBM's hidden units.
    Mixed into a GenerativeModel, whose `device` the draws land on."""

    latent_dim: int

    def export_decoder(self) -> DenseDecoder | None:
        """The decoder z -> pixel means as plain tensors when it is a small dense network (the VAE's, the RBM's
        p(v|h)); None when it is not (the GAN's convolutions), and then nothing outside the model runs it."""
        return None

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (n, latent_dim) from the prior p(z) on the model's device: N(0, I), the VAE's prior and the GAN's
        noise; a model with another prior (the RBM's fair coin flips) overrides it. A generator on another device
        than the model's (a CPU one for a CUDA model) draws there, then the draws move: the same z on every device."""
        device = self.device
        if generator is not None and generator.device != device:
            return torch.randn(n, self.latent_dim, generator=generator).to(device)
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (n, C, H, W) in [0, 1] for latents z (n, latent_dim); no gradients, eval mode."""


class EnergyModel(ABC):
    """Models that define an energy on images, p(x) ~ exp(-E(x)): the EBM's network E(x), the RBM's free energy F(v).

    `image_energy` takes images (B, C, H, W) with pixels in [0, 1] (grey values too) and returns energies (B,), lower
    for more likely images; it is differentiable in x, so a Langevin chain (genlib.sampling.langevin) runs on it."""

    @abstractmethod
    def image_energy(self, x: torch.Tensor) -> torch.Tensor:
        """Energies (B,) of images x (B, C, H, W) in [0, 1]."""


def keep_fused(optimizer: torch.optim.Optimizer) -> None:
    """Optimizer.load_state_dict replaces the param groups by the saved ones: a checkpoint written by an unfused Adam
    would switch the fused kernel off. Switch it back on, with the step counts where the fused kernel wants them (on
    the parameters' device, in fp32), as Adam's own constructor would have placed them."""
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, None
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state and torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device=p.device, dtype=torch.float32)
