"""A small MNIST classifier that genlib trains itself, as the feature extractor of the Fréchet distance (Heusel et al.
2017's FID, with this network in place of Inception) and the judge of generated samples' classes; a LeNet-style CNN
(LeCun et al. 1998) of two 5x5 convolutions and two dense layers, in the manner of pytorch/examples' MNIST network.

The weights are cached as a genlib safetensors file (never a pickle) under $GENLIB_CACHE or ~/.cache/genlib, one per
dataset, with the test accuracy, the training settings and the architecture in the file's metadata.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from genlib.data import ImageData, load_dataset, to_unit
from genlib.runs.io import atomic_write_bytes
from genlib.config import check, check_int, check_ints, check_number
from genlib.settings import current as current_settings

FORMAT = "genlib-classifier"
FORMAT_VERSION = 1
ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], message)


class ClassifierError(ValueError):
    """A file that is not a loadable genlib classifier; the message says why."""


def default_cache_dir() -> Path:
    """Where classifiers are cached: $GENLIB_CACHE, else ~/.cache/genlib."""
    return current_settings().cache_dir


@dataclass(frozen=True, kw_only=True)
class ClassifierConfig:
    """The network's shape: 28x28 grey images, two conv layers, a `features`-wide penultimate layer."""

    image_shape: tuple[int, int, int] = (1, 28, 28)
    channels: tuple[int, int] = (16, 32)
    features: int = 128  # the penultimate layer: the Fréchet distance's feature space
    n_classes: int = 10
    dropout: float = 0.25

    def __post_init__(self) -> None:
        check_ints("image_shape", self.image_shape, 3, 1)
        check(tuple(self.image_shape[1:]) == (28, 28), f"the classifier takes 28x28 images, got {self.image_shape}")
        check_ints("channels", self.channels, 2, 1, 4096)
        check_int("features", self.features, 2)
        check_int("n_classes", self.n_classes, 2)
        check_number("dropout", self.dropout, 0.0, 1.0, hi_open=True)


@dataclass(frozen=True, kw_only=True)
class ClassifierTrainConfig:
    """How to train it: Adam with a cosine-decayed rate and small random shifts of the images."""

    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    max_shift: int = 2  # random translation by up to this many pixels (0: none): cheap augmentation for 99%
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 1, 1000)
        check_int("batch_size", self.batch_size, 1, 65_536)
        check_number("lr", self.lr, 0.0, 1.0, lo_open=True, hi_open=True)
        check_number("weight_decay", self.weight_decay, 0.0, 1.0)
        check_int("max_shift", self.max_shift, 0, 8)
        check_int("seed", self.seed, 0)


def default_train_config(dataset: str) -> ClassifierTrainConfig:
    """MNIST-sized datasets: 4 epochs; the 1,500-image offline `digits`: 12 epochs of small batches (seconds, ~95%)."""
    if dataset == "digits":
        return ClassifierTrainConfig(epochs=12, batch_size=16, max_shift=1)
    return ClassifierTrainConfig()


class Classifier(nn.Module):
    """conv5x5, ReLU, maxpool, conv5x5, ReLU, maxpool, dense, ReLU (the features), dropout, dense (the logits)."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()) -> None:
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        self.conv1 = nn.Conv2d(config.image_shape[0], c1, 5, padding=2)  # (B, c1, 28, 28), pooled to 14x14
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)  # (B, c2, 14, 14), pooled to 7x7
        self.fc1 = nn.Linear(c2 * 7 * 7, config.features)
        self.drop = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(config.features, config.n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations (B, features) for images x (B, 1, 28, 28) in [0, 1]."""
        h = F.max_pool2d(F.relu(self.conv1(x - 0.5)), 2)  # centred input; (B, c1, 14, 14)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, c2, 7, 7)
        return F.relu(self.fc1(torch.flatten(h, 1)))  # (B, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, n_classes) for images x (B, 1, 28, 28) in [0, 1]."""
        return self.fc2(self.drop(self.features(x)))

    @property
    def device(self) -> torch.device:
        return self.fc2.weight.device


def _shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image (B, 1, H, W) by a random whole number of pixels in [-max_shift, max_shift], zero-filled."""
    if max_shift == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)  # (B, 1, H + 2s, W + 2s)
    # one random offset per image, as gather indices into the padded frame: (B, 1, H, W) rows and columns
    off = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator).to(x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + off[:, :1])  # (B, H)
    cols = (torch.arange(w, device=x.device)[None, :] + off[:, 1:])  # (B, W)
    out = padded.gather(2, rows[:, None, :, None].expand(b, 1, h, padded.shape[3]))  # (B, 1, H, W + 2s)
    return out.gather(3, cols[:, None, None, :].expand(b, 1, h, w))  # (B, 1, H, W)


@torch.no_grad()
def accuracy(model: Classifier, x_uint8: torch.Tensor, y: torch.Tensor, *, batch_size: int = 2_000) -> float:
    """The fraction of images (N, 1, 28, 28) uint8 whose predicted class is the label y (N,)."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, x_uint8.shape[0], batch_size):
        xb = to_unit(x_uint8[i:i + batch_size].to(model.device))
        correct += int((model(xb).argmax(1) == y[i:i + batch_size].to(model.device)).sum())
    model.train(was_training)
    return correct / max(1, x_uint8.shape[0])


def train_classifier(data: ImageData, config: ClassifierTrainConfig = ClassifierTrainConfig(), *,
                     model_config: ClassifierConfig = ClassifierConfig(), device: torch.device | str = "cpu",
                     progress: ProgressFn | None = None) -> tuple[Classifier, dict[str, Any]]:
    """Train a classifier on `data`'s training set; returns it (eval mode) and a report with its test accuracy."""
    t0 = time.perf_counter()
    device = torch.device(device)
    torch.manual_seed(config.seed)  # the initial weights and dropout masks; batch order and shifts use `gen`
    model = Classifier(model_config).to(device)
    gen = torch.Generator().manual_seed(config.seed)
    data = data.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = data.steps_per_epoch(min(config.batch_size, data.x_train.shape[0]))
    total = config.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    model.train()
    step = 0
    for epoch in range(config.epochs):
        order = torch.randperm(data.x_train.shape[0], generator=gen).to(device)
        for i in range(steps_per_epoch):
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            xb = _shift(to_unit(data.x_train[idx]), config.max_shift, gen)  # (B, 1, 28, 28) in [0, 1]
            loss = F.cross_entropy(model(xb), data.y_train[idx])  # mean over the batch
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        if progress is not None:
            progress(step / total, f"classifier epoch {epoch + 1}/{config.epochs}, loss {loss.detach().item():.3f}")
    model.eval()
    report = {
        "dataset": data.name,
        "test_accuracy": accuracy(model, data.x_test, data.y_test),
        "n_train": int(data.x_train.shape[0]),
        "n_test": int(data.x_test.shape[0]),
        "seconds": round(time.perf_counter() - t0, 1),
        "device": str(device),
        "train_config": asdict(config),
    }
    return model, report


# ---- the cache file ----

def save_classifier(path: Path | str, model: Classifier, report: dict[str, Any]) -> None:
    """Write the weights and the report as a safetensors file, atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
            "model_config": json.dumps(asdict(model.config)), "report": json.dumps(report),
            "test_accuracy": f"{report['test_accuracy']:.4f}", "torch": torch.__version__}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def load_classifier(path: Path | str, *, device: torch.device | str = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """Read a classifier written by `save_classifier` (safetensors only: nothing is unpickled); eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
        tensors = load(data)
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
    except (OSError, SafetensorError, ValueError, RuntimeError) as e:
        raise ClassifierError(f"{path} is not a readable safetensors file ({e})") from e
    if meta.get("format") != FORMAT or meta.get("format_version") != str(FORMAT_VERSION):
        raise ClassifierError(f"{path} is not a genlib classifier (format {meta.get('format')!r} "
                              f"version {meta.get('format_version')!r})")
    try:
        cfg = json.loads(meta["model_config"])
        cfg["image_shape"], cfg["channels"] = tuple(cfg["image_shape"]), tuple(cfg["channels"])
        model = Classifier(ClassifierConfig(**cfg))
        model.load_state_dict(tensors, strict=True)
        report = json.loads(meta.get("report", "{}"))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ClassifierError(f"{path} holds a damaged classifier ({e})") from e
    return model.to(device).eval(), report


def classifier_path(dataset: str, cache_dir: Path | str | None = None) -> Path:
    """The cache file of `dataset`'s classifier."""
    return Path(cache_dir or default_cache_dir()) / f"classifier-{dataset}-v{FORMAT_VERSION}.safetensors"


def cached_classifier(dataset: str, cache_dir: Path | str | None = None, *, device: torch.device | str = "cpu"
                      ) -> tuple[Classifier, dict[str, Any]] | None:
    """The cached classifier of `dataset` and its report, or None when none is cached (or the file is damaged)."""
    path = classifier_path(dataset, cache_dir)
    if not path.exists():
        return None
    try:
        return load_classifier(path, device=device)
    except ClassifierError:
        return None


def ensure_classifier(dataset: str | ImageData, root: Path | str | None = None, cache_dir: Path | str | None = None,
                      *, device: torch.device | str = "cpu", progress: ProgressFn | None = None,
                      config: ClassifierTrainConfig | None = None) -> tuple[Classifier, dict[str, Any]]:
    """The classifier of `dataset` (a name, or loaded ImageData): from the cache, else trained now and cached.

    Training on MNIST takes a few CPU minutes (4 epochs) and happens once per cache folder; a damaged cache file
    is replaced. `root` is the data root for a dataset given by name.
    """
    name = dataset if isinstance(dataset, str) else dataset.name
    found = cached_classifier(name, cache_dir, device=device)
    if found is not None:
        return found
    data = load_dataset(dataset, root=root) if isinstance(dataset, str) else dataset
    if progress is not None:
        progress(0.0, f"training the {name} classifier (once; cached in {classifier_path(name, cache_dir).parent})")
    model, report = train_classifier(data, config or default_train_config(name), device=device, progress=progress)
    save_classifier(classifier_path(name, cache_dir), model, report)
    return model, report
