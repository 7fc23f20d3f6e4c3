"""The model registry: name -> class, and building a model from a plain config dict (as stored in checkpoints).

Model modules are imported on first use (PEP 562 `__getattr__`), so importing one model never imports the others.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from genlib.models.base import DenseDecoder, EnergyModel, GenerativeModel, LatentModel

# name -> (module, class, config class)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "rbm": ("genlib.models.rbm", "RBM", "RBMConfig"),
    "vae": ("genlib.models.vae", "VAE", "VAEConfig"),
    "gan": ("genlib.models.gan", "GAN", "GANConfig"),
    "ebm": ("genlib.models.ebm", "EBM", "EBMConfig"),
}
MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)

__all__ = ["MODEL_NAMES", "MODELS", "GenerativeModel", "LatentModel", "EnergyModel", "DenseDecoder", "model_class",
           "model_names", "model_title", "make_config", "build_model", "RBM", "RBMConfig", "VAE", "VAEConfig",
           "GAN", "GANConfig", "EBM", "EBMConfig"]


def model_names() -> tuple[str, ...]:
    """The registered models' names, in the registry's order (read at call time, so a test may register a model)."""
    return tuple(_REGISTRY)


def model_title(name: str) -> str:
    """How pages and messages name model `name` (its class's `title`): "VAE" for "vae"."""
    return model_class(name).title


def model_class(name: str) -> type[GenerativeModel]:
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model {name!r}; choose one of {', '.join(_REGISTRY)}.")
    module, cls, _ = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def __getattr__(attr: str) -> Any:
    if attr == "MODELS":
        return {name: model_class(name) for name in _REGISTRY}
    for module, cls, config in _REGISTRY.values():
        if attr in (cls, config):
            return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'genlib.models' has no attribute {attr!r}")


def make_config(name: str, values: dict[str, Any] | None = None) -> Any:
    """The model's config dataclass from a dict, refusing unknown keys (a typo must not be ignored)."""
    cls = model_class(name).config_class
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{name} has no setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    for f in dataclasses.fields(cls):  # JSON turns tuples into lists; give them back their type
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def build_model(name: str, config: Any = None) -> GenerativeModel:
    """A fresh model from its name and a config (dataclass or dict; None for the seed's defaults)."""
    cls = model_class(name)
    if config is None or isinstance(config, dict):
        config = make_config(name, config)
    return cls(config)
