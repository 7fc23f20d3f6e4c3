"""Memory budget: estimate what a model and a batch need (parameters, gradients, optimiser state, activations, the
dataset) and refuse sizes that cannot fit on the device before anything is allocated.

The parameter count is exact for every registered model: the model is built on PyTorch's "meta" device, which
records shapes without allocating memory. Activations are estimated from the shapes of the weights (one feature map
per layer output, kept for the backward pass), which errs on the generous side, never by orders of magnitude. State a
model allocates only on its first training step is added from its config: the EBM's replay buffer of `buffer_size`
images (Du & Mordatch 2019), which at its largest outweighs the network's weights and Adam moments 500 times.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch

PARAM_BYTES = 4  # parameters are fp32 on every device (bf16 runs only the matrix products in 16 bits)
ACTIVATION_BYTES = {"fp32": 4, "bf16": 2}
GRAD_COPIES = 1  # one gradient (or closed-form update) per parameter
OPTIMIZER_COPIES = 2  # Adam's two moments; SGD with momentum needs one, so two is the upper bound
ACTIVATION_COPIES = 3  # the forward value kept for backward, its gradient, and temporaries
CONV_SPATIAL_SHARE = 0.25  # a convolution's feature map as a share of the image's pixels (stride-2 nets halve H, W)
SAFETY = 0.8  # refuse what needs more than this share of the free memory: the rest is for PyTorch and the server
MAX_PARAMETERS = 2**31  # beyond this no classroom device can hold the model, whatever it reports
DATASET_IMAGES = {"mnist": 70_000, "fashion-mnist": 70_000, "digits": 1_797}  # uint8 images held on the device
DEFAULT_IMAGE_SHAPE = (1, 28, 28)
ISING_CONVERSION_BYTES = 12  # per spin of the temperature being loaded: int8 + int16 + 2 float32 + uint8 (dataset.load)
STATE_BYTES = 4  # a replay buffer holds fp32 images
STATE_COPIES = 2  # the buffer, and the clone training_state() makes of it for every checkpoint


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """Bytes a training run needs on its device, by kind."""

    parameters: int
    parameter_bytes: int  # weights, gradients and optimiser state
    activation_bytes: int
    data_bytes: int
    state_bytes: int = 0  # tensors kept between steps besides the weights: the EBM's replay buffer (and its copy)

    @property
    def total(self) -> int:
        return self.parameter_bytes + self.activation_bytes + self.data_bytes + self.state_bytes

    def describe(self) -> str:
        state = f", replay buffer {_size(self.state_bytes)}" if self.state_bytes else ""
        return (f"about {_size(self.total)} ({self.parameters:,} parameters with gradients and optimiser state "
                f"{_size(self.parameter_bytes)}, activations {_size(self.activation_bytes)}{state}, "
                f"dataset {_size(self.data_bytes)})")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit in ("B", "KB") else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def meta_model(model_name: str, model_config: Any) -> Any:
    """The model built on the meta device: every shape, no memory. Raises ValueError/TypeError for a bad config."""
    from genlib.models import build_model, make_config

    config = model_config if not isinstance(model_config, dict) and model_config is not None \
        else make_config(model_name, model_config)
    shape = getattr(config, "image_shape", DEFAULT_IMAGE_SHAPE)
    pixels = math.prod(shape) if isinstance(shape, tuple) else 0
    if pixels > MAX_PARAMETERS:
        raise ValueError(f"image_shape {shape} has {pixels:,} pixels: far beyond any device's memory.")
    with torch.device("meta"):
        return build_model(model_name, config)


def estimate(model_name: str, model_config: Any, *, batch_size: int, precision: str = "fp32",
             dataset: str | None = None) -> Estimate:
    """Estimate the device memory of training `model_name` with `model_config` at `batch_size`."""
    model = meta_model(model_name, model_config)
    n_params = sum(p.numel() for p in model.parameters())
    shape = tuple(getattr(model.config, "image_shape", DEFAULT_IMAGE_SHAPE))
    pixels = math.prod(shape)
    spatial = max(1, int(math.prod(shape[1:]) * CONV_SPATIAL_SHARE))
    # per example: the image, then one output per layer: Linear (out, in) -> out values; a convolution's weight
    # (out, in, kh, kw) (or (in, out, kh, kw) transposed) -> the wider channel count times a feature map
    per_example = pixels
    for p in model.parameters():
        if p.dim() == 2:
            per_example += p.shape[0]
        elif p.dim() == 4:
            per_example += max(p.shape[0], p.shape[1]) * spatial
    buffers = sum(b.numel() for b in model.buffers())
    activation_bytes = per_example * batch_size * ACTIVATION_BYTES.get(precision, 4) * ACTIVATION_COPIES
    parameter_bytes = (n_params * (1 + GRAD_COPIES + OPTIMIZER_COPIES) + buffers) * PARAM_BYTES
    data_bytes = dataset_bytes(dataset, pixels)
    return Estimate(parameters=n_params, parameter_bytes=parameter_bytes, activation_bytes=activation_bytes,
                    data_bytes=data_bytes, state_bytes=state_elements(model.config, shape) * STATE_BYTES * STATE_COPIES)


def dataset_bytes(dataset: str | None, pixels: int) -> int:
    """Bytes a dataset takes while a job loads and trains on it: MNIST-like sets as uint8 images of `pixels`; an Ising
    set ("ising:L=..,T=..,n=..") from its options, as genlib.ising.dataset.load builds it: every temperature's
    configurations as uint8 images twice (the per-temperature parts and their concatenation), plus one temperature
    in flight (its int8 spins, int16 and float32 conversions: ISING_CONVERSION_BYTES a spin). Raises ValueError for
    an Ising name that does not parse."""
    name, _, options = (dataset or "").partition(":")
    if name != "ising":
        return DATASET_IMAGES.get(dataset or "", 0) * pixels
    from genlib.ising.dataset import TEST_FRACTION, parse

    opts = parse(options)
    per_temperature = (opts.n + max(1, opts.n // TEST_FRACTION)) * opts.L * opts.L  # spins of one temperature
    return 2 * per_temperature * len(opts.temperatures) + ISING_CONVERSION_BYTES * per_temperature


def state_elements(config: Any, image_shape: tuple[int, ...]) -> int:
    """Elements of the state a model makes on its first training step, which the meta model cannot show: a replay
    buffer of `buffer_size` images (genlib/models/ebm.py: (buffer_size, *image_shape)); 0 for models without one."""
    size = getattr(config, "buffer_size", 0)
    return int(size) * math.prod(image_shape) if isinstance(size, int) and not isinstance(size, bool) else 0


def free_bytes(device: torch.device | str = "cpu") -> int:
    """Memory free for a new job on `device`: the GPU's free memory, else the host's available memory."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def check_fits(model_name: str, model_config: Any, *, batch_size: int, precision: str = "fp32",
               dataset: str | None = None, device: torch.device | str = "cpu",
               available: int | None = None) -> Estimate:
    """Refuse (ValueError, with what to change) a model and batch that would not fit in `device`'s free memory."""
    from genlib.models import model_class

    smallest = int(getattr(model_class(model_name), "min_batch_size", 1))
    if not isinstance(batch_size, int) or batch_size < smallest:
        raise ValueError(f"A {model_name.upper()} trains on batches of at least {smallest} images (batch norm "
                         f"needs two to normalise); got batch size {batch_size!r}.")
    est = estimate(model_name, model_config, batch_size=batch_size, precision=precision, dataset=dataset)
    if est.parameters > MAX_PARAMETERS:
        raise ValueError(f"This {model_name.upper()} would have {est.parameters:,} parameters, more than any device "
                         "here can train: choose fewer hidden units or a smaller latent or image size.")
    free = free_bytes(device) if available is None else available
    if est.total > SAFETY * free:
        buffer_hint = ", a smaller replay buffer (buffer_size)" if est.state_bytes else ""
        if (dataset or "").startswith("ising") and est.data_bytes > est.total / 2:
            buffer_hint += ", fewer Ising configurations (n), temperatures or a smaller lattice (L)"
        raise ValueError(f"This {model_name.upper()} at batch size {batch_size:,} needs {est.describe()}, but only "
                         f"{_size(free)} is free on {torch.device(device).type.upper()}: use a smaller batch size, "
                         f"fewer hidden units or a smaller model{buffer_hint}, or wait for other jobs to finish.")
    return est
