"""The training loop as a plain function: batches by indexing a device tensor, metrics read every N steps, callbacks for
logging, epochs and stopping (the loop of nanoGPT's train.py, without its globals).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from genlib.data import DATASETS, ImageData
from genlib.devices import flush_denormals
from genlib.config import check, check_choice, check_int, check_number
from genlib.models.base import PRECISIONS, GenerativeModel

# The seed's own settings per model: lr, batch size and epochs of its reference code.
SEED_DEFAULTS: dict[str, dict[str, Any]] = {
    "rbm": {"lr": 0.1, "batch_size": 64, "epochs": 10},
    "vae": {"lr": 1e-3, "batch_size": 128, "epochs": 100},
    "gan": {"lr": 1e-4, "batch_size": 256, "epochs": 30},
    # the seed has no EBM code: Foster's ch. 7 lr and batch size, and the 2 epochs after which a CPU-trained EBM
    # draws recognisable digits from noise (Foster trains 60 on a GPU)
    "ebm": {"lr": 1e-4, "batch_size": 128, "epochs": 2},
}


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train: data, length, optimiser rate, device and how often to report."""

    dataset: str = "mnist"
    data_root: str | None = None
    epochs: int = 1
    max_steps: int | None = None  # stop earlier than `epochs` when set; counted from the run's start
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    log_every: int = 20  # steps between metric reads: one host synchronisation each
    checkpoint_every_s: float = 60.0
    snapshot_every_s: float = 5.0
    live_every_s: float = 2.0
    n_samples: int = 64  # images in the fixed-noise grid
    sample_seed: int = 1234  # the fixed noise of the per-epoch grids (the seed's `seed_images`)
    threads: int | None = None  # torch CPU threads in a worker; None leaves PyTorch's default
    # decay of the exponential moving average of the weights that samples, checkpoints and evaluations show
    # (genlib.models.averaging); 0: off, the live weights are shown
    ema: float = 0.0

    def __post_init__(self) -> None:
        # types first: a string or a bool where a number belongs is refused with a message, never a TypeError
        # a registered name, with options after a colon for generated datasets ("ising:L=8,T=2.5")
        check(isinstance(self.dataset, str) and self.dataset.partition(":")[0] in DATASETS
              and len(self.dataset) <= 200, f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        check(self.data_root is None or (isinstance(self.data_root, str) and 0 < len(self.data_root) <= 4096
                                         and "\x00" not in self.data_root),
              f"data_root must be a folder path or None, got {self.data_root!r}")
        check_int("epochs", self.epochs, 1, 100_000)
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, 1, 10**9)
        check_int("batch_size", self.batch_size, 1, 65_536)
        check_number("lr", self.lr, 0.0, 10.0, lo_open=True, hi_open=True)
        check_int("seed", self.seed, 0, 2**63 - 1)
        check(isinstance(self.device, str) and DEVICE_RE.match(self.device.strip().lower()) is not None,
              f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        check_choice("precision", self.precision, PRECISIONS)
        check_int("log_every", self.log_every, 1, 100_000)
        for name in ("checkpoint_every_s", "snapshot_every_s", "live_every_s"):
            check_number(name, getattr(self, name), 0.0, 86_400.0, lo_open=True)
        check_int("n_samples", self.n_samples, 1, 400)
        check_int("sample_seed", self.sample_seed, 0, 2**63 - 1)
        if self.threads is not None:
            check_int("threads", self.threads, 1, 256)
        check_number("ema", self.ema, 0.0, 0.99999)


DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]{1,3})?)$")


def default_train_config(model_name: str, **overrides: Any) -> TrainConfig:
    """The seed's lr, batch size and epochs for `model_name`, with `overrides` on top (None values ignored)."""
    values = dict(SEED_DEFAULTS.get(model_name, {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


@dataclass
class Progress:
    """Where a run stands; counts are from the run's start, so a resumed run continues them."""

    step: int = 0
    images: int = 0
    seconds: float = 0.0

    def epoch(self, steps_per_epoch: int) -> int:
        return self.step // steps_per_epoch

    def as_dict(self, steps_per_epoch: int) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch(steps_per_epoch), "images": self.images,
                "seconds": round(self.seconds, 3)}


class Diverged(RuntimeError):
    """A metric became NaN or infinite; training stops and the last good checkpoint is kept."""

    def __init__(self, step: int, metrics: dict[str, float]) -> None:
        bad = ", ".join(k for k, v in metrics.items() if not math.isfinite(v))
        super().__init__(f"training diverged at step {step}: {bad} became NaN or infinite. "
                         "Lower the learning rate and resume from the last checkpoint, or start again.")
        self.step = step


@dataclass
class Callbacks:
    """Hooks the loop calls; all optional. `control` may block (pause) and returns False to stop."""

    on_log: Callable[[dict[str, Any]], None] | None = None
    on_epoch_end: Callable[[int, Progress], None] | None = None
    control: Callable[[Progress], bool] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    steps = cfg.epochs * steps_per_epoch
    return min(steps, cfg.max_steps) if cfg.max_steps is not None else steps


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The shuffling generator of one epoch: a resumed run draws the same batch order as an uninterrupted one."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def train(model: GenerativeModel, data: ImageData, cfg: TrainConfig, *, progress: Progress | None = None,
          callbacks: Callbacks | None = None) -> Progress:
    """Train `model` on `data` until the run's total steps; returns the final progress.

    The model must already be configured (`configure_training`) and on the data's device. Metrics are averaged
    over each `log_every` window on the device and read once per window. On a CPU, denormals flush to zero
    meanwhile (devices.flush_denormals: without it Adam's decaying moments slow the VAE by a third).
    """
    with flush_denormals(data.x_train.device):
        return _train(model, data, cfg, progress=progress, callbacks=callbacks)


def _train(model: GenerativeModel, data: ImageData, cfg: TrainConfig, *, progress: Progress | None,
           callbacks: Callbacks | None) -> Progress:
    cb = callbacks or Callbacks()
    progress = progress or Progress()
    spe = data.steps_per_epoch(cfg.batch_size)
    if spe < 1:
        raise ValueError(f"batch size {cfg.batch_size} exceeds the {data.x_train.shape[0]} training images")
    end = total_steps(cfg, spe)
    if progress.step == 0 and progress.images == 0:
        model.init_from_data(data.x_train)  # a fresh run: data-dependent starting values (the RBM's visible biases)
    model.train()
    window: list[dict[str, torch.Tensor]] = []
    t_window = time.perf_counter()
    steps_in_window = 0
    outside = 0.0  # seconds spent in callbacks (pauses, checkpoints, grids) this window: not training time

    def timed(fn: Callable[..., Any], *args: Any) -> Any:
        nonlocal outside
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            outside += time.perf_counter() - t0

    def flush() -> None:
        nonlocal window, t_window, steps_in_window, outside
        if not window:
            return
        # (W,) stacks per metric -> one mean each, moved to the host together: one sync per window
        keys = list(window[0])
        means = torch.stack([torch.stack([m[k].float() for m in window]).mean() for k in keys]).cpu().tolist()
        metrics = dict(zip(keys, means))
        now = time.perf_counter()
        dt = max(now - t_window - outside, 1e-9)
        progress.seconds += dt
        rate = steps_in_window * cfg.batch_size / dt
        window, steps_in_window = [], 0
        if not all(math.isfinite(v) for v in metrics.values()):
            raise Diverged(progress.step, metrics)
        if cb.on_log:
            cb.on_log({**progress.as_dict(spe), "images_per_second": round(rate, 1), "lr": model.lr, **metrics})
        t_window, outside = time.perf_counter(), 0.0

    while progress.step < end:
        epoch = progress.epoch(spe)
        skip = progress.step - epoch * spe  # resuming mid-epoch: the same order, minus the batches already seen
        for i, xb in enumerate(data.batches(cfg.batch_size, generator=epoch_generator(cfg.seed, epoch))):
            if i < skip:
                continue
            window.append(model.train_step_uint8(xb))  # xb: (B, 1, 28, 28) uint8, x / 255 inside
            model.update_average()
            progress.step += 1
            progress.images += cfg.batch_size
            steps_in_window += 1
            if len(window) >= cfg.log_every or progress.step >= end:
                flush()
            if cb.control is not None and not timed(cb.control, progress):
                flush()
                return progress
            if progress.step >= end:
                break
        flush()
        if progress.step % spe == 0 and cb.on_epoch_end:
            timed(cb.on_epoch_end, progress.epoch(spe), progress)
    return progress


def with_overrides(cfg: TrainConfig, **values: Any) -> TrainConfig:
    return replace(cfg, **{k: v for k, v in values.items() if v is not None})
