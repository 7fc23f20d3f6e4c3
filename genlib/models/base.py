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
from typing import Any, ClassVar

import torch
from torch import nn

from genlib.data import to_unit

PRECISIONS = ("fp32", "bf16")


def check(condition: bool, message: str) -> None:
    """Raise ValueError(message) unless `condition`: configs refuse bad values instead of fixing them silently."""
    if not condition:
        raise ValueError(message)


def check_int_in(name: str, value: Any, lo: int, hi: int) -> None:
    """An int (not a bool: JSON's true would pass isinstance(True, int)) in [lo, hi], else ValueError."""
    check(isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
          f"{name} must be an int in [{lo}, {hi}], got {value!r}")


def check_unit_interval(name: str, value: Any) -> None:
    """A real number (not a bool) in [0, 1), else ValueError: slopes, dropout rates, momenta, Adam's beta1."""
    check(isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0,
          f"{name} must be a number in [0, 1), got {value!r}")


def device_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """A generator on `device` seeded from a CPU `generator`, so draws are reproducible and stay on the device."""
    if generator is None:
        return None
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return torch.Generator(device=device).manual_seed(seed)


class GenerativeModel(nn.Module, ABC):
    """Base of all models: config in, one training step, samples out."""

    name: ClassVar[str]  # registry key, e.g. "vae"
    config_class: ClassVar[type]  # the frozen dataclass of the constructor's arguments
    metric_names: ClassVar[tuple[str, ...]]  # keys of train_step's result, "loss" first
    monitor: ClassVar[str] = "loss"  # the metric that falls as the model learns (tests and the UI use it)
    # settings a running training may change (each through set_<name>); kept in checkpoints, logged as knob events
    live_knobs: ClassVar[tuple[str, ...]] = ("lr",)

    def __init__(self, config: Any) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.lr: float | None = None
        self.precision = "fp32"

    # ---- training ----
    def configure_training(self, *, lr: float, precision: str = "fp32") -> None:
        """Create the optimisers (or the closed-form update's state) for learning rate `lr`."""
        check(lr > 0 and lr < 10, f"learning rate must be in (0, 10), got {lr}")
        check(precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.lr = float(lr)
        self.precision = precision
        self._make_optimizers(self.lr)

    @abstractmethod
    def _make_optimizers(self, lr: float) -> None:
        ...

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

    def set_lr(self, lr: float) -> None:
        """Change the learning rate of a running training without restarting it."""
        check(lr > 0 and lr < 10, f"learning rate must be in (0, 10), got {lr}")
        self.lr = float(lr)
        for opt in self.optimizers().values():
            for group in opt.param_groups:
                group["lr"] = self.lr

    @classmethod
    def check_knob(cls, name: str, value: Any) -> None:
        """ValueError unless `value` is a valid setting for the live knob `name` (checked before it is sent)."""
        check(name in cls.live_knobs, f"{cls.__name__} has no live setting {name!r}; it has {', '.join(cls.live_knobs)}")
        if name == "lr":
            check(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 10,
                  f"learning rate must be in (0, 10), got {value!r}")

    def knobs(self) -> dict[str, Any]:
        """The live knobs' current values, e.g. {"lr": 1e-3, "beta": 1.0}."""
        return {name: getattr(self, name) for name in self.live_knobs}

    def set_knob(self, name: str, value: Any) -> None:
        """Change one live knob (set_lr, set_beta, set_k...); ValueError for an unknown knob or a bad value."""
        self.check_knob(name, value)
        getattr(self, f"set_{name}")(value)

    def training_state(self) -> dict[str, Any]:
        """Everything besides the parameters that resuming needs (optimiser moments, persistent chains)."""
        return {name: opt.state_dict() for name, opt in self.optimizers().items()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        for name, opt in self.optimizers().items():
            if name in state:
                opt.load_state_dict(state[name])

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

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)


class LatentModel(ABC):
    """Models with a latent variable z that a slider can move: the VAE's z, the GAN's noise, the RBM's hidden units."""

    latent_dim: int

    @abstractmethod
    def sample_latent(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (n, latent_dim) from the prior p(z), on the model's device."""

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (n, C, H, W) in [0, 1] for latents z (n, latent_dim); no gradients, eval mode."""


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
