"""Dataset registry: MNIST, Fashion-MNIST, an offline fallback (scikit-learn's digits) and generated 2-D Ising configurations
(genlib.ising.dataset), held as uint8 tensors on the device.

Each dataset is loaded once into a (N, 1, 28, 28) uint8 tensor on the training device; batches are drawn by
indexing a shuffled permutation, with no per-item transforms (the seed's `ToTensor` DataLoader is what made it slow).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from genlib.idx import find_split_files, read_splits
from genlib.ising import dataset as ising_dataset
from genlib.sampling.bernoulli import bernoulli
from genlib.settings import DATA_ROOT_ENV, current as current_settings

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
OFFLINE_DATASET = "digits"


class DatasetUnavailable(RuntimeError):
    """The dataset is neither on disk nor downloadable; the message says what to do instead."""


def default_data_root() -> Path:
    """The data root: $GENLIB_DATA_ROOT, else ./data."""
    return current_settings().data_root


@dataclass(frozen=True, kw_only=True)
class ImageData:
    """Train and test images as uint8 (N, 1, 28, 28) tensors with int64 labels, all on one device."""

    name: str
    source: str  # where the images came from, for the page and the logs
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> "ImageData":
        device = torch.device(device)
        return ImageData(name=self.name, source=self.source, classes=self.classes,
                         x_train=self.x_train.to(device), y_train=self.y_train.to(device),
                         x_test=self.x_test.to(device), y_test=self.y_test.to(device))

    def batches(self, batch_size: int, *, generator: torch.Generator, drop_last: bool = True) -> Iterator[torch.Tensor]:
        """Yield one epoch of shuffled training batches as uint8 (B, 1, 28, 28) tensors.

        The permutation is drawn on the CPU generator (reproducible on every device) and moved once.
        """
        n = self.x_train.shape[0]
        if batch_size > n:
            raise ValueError(f"batch size {batch_size} is larger than the {n} training images of {self.name}")
        order = torch.randperm(n, generator=generator).to(self.device)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            # index_select copies whole rows (a memcpy each); x[idx] goes through the generic element-wise index
            # kernel, 10x slower on a CPU for a 64-image batch (4 against 44 us), a tenth of a small RBM step
            yield self.x_train.index_select(0, order[start:start + batch_size])

    def steps_per_epoch(self, batch_size: int, drop_last: bool = True) -> int:
        n = self.x_train.shape[0]
        return n // batch_size if drop_last else -(-n // batch_size)


# ---- scalings: every model sees [0, 1] at its boundary and converts inside ----

def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1] (the VAE's scaling and the public image range)."""
    return x.float().div_(255.0)


def binarize(x01: torch.Tensor, mode: str = "stochastic", generator: torch.Generator | None = None) -> torch.Tensor:
    """[0, 1] intensities -> {0, 1} pixels for the RBM: Bernoulli draws (the seed's `data.bernoulli()`) or a 0.5 threshold.

    A Bernoulli(p) draw is u < p (genlib.sampling.bernoulli: 15-bit uniforms, within 3e-5 of p; exact fp64 uniforms for
    fp64 input) on x01's device (`generator` must live there): 6x cheaper on a CPU than torch.bernoulli. The
    result has x01's dtype.
    """
    if mode == "stochastic":
        return bernoulli(x01, generator=generator)
    if mode == "threshold":
        return (x01 > 0.5).to(x01.dtype)
    raise ValueError(f"binarize mode must be 'stochastic' or 'threshold', not {mode!r}")


def base_rate_biases(x_train: torch.Tensor, *, pseudocount: float = 0.05, binarize_mode: str = "stochastic"
                     ) -> torch.Tensor:
    """Visible biases at the data's log-odds, b = log(p / (1 - p)) (n_visible,) float64, from training images: AIS's
    base-rate model (Salakhutdinov & Murray 2008) and an RBM's starting visible biases (Hinton's practical guide, 8.1).

    x_train: (N, ...) images in [0, 1] or uint8 [0, 255]. p is the mean of the binarised pixels: the grey level
    itself for stochastic binarisation (its expectation), the fraction above 0.5 for thresholding. The paper's
    smoothing p = (count + a N) / ((1 + a) N) keeps every base rate above a / (1 + a), so the base distribution is
    broad enough for the chains to find the model's modes (a = 0.05: their 5 pseudo-counts per 100-image batch).
    """
    if binarize_mode not in ("stochastic", "threshold"):
        raise ValueError(f"binarize_mode must be 'stochastic' or 'threshold', got {binarize_mode!r}")
    x = x_train.reshape(x_train.shape[0], -1)  # (N, n_visible)
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], 10_000):  # in chunks: 60,000 MNIST images in float64 would take 376 MB
        chunk = x[i:i + 10_000].double()
        chunk = chunk / 255.0 if x.dtype == torch.uint8 else chunk
        total += (chunk > 0.5).double().sum(0) if binarize_mode == "threshold" else chunk.sum(0)
    p = (total / x.shape[0] + pseudocount) / (1.0 + pseudocount)  # (n_visible,)
    p = p.clamp(1e-6, 1 - 1e-6)  # a = 0 and a pixel always off (or on) would give an infinite bias
    return torch.log(p) - torch.log1p(-p)


def to_signed(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the range of the GAN's tanh output (the seed's (x - 127.5) / 127.5)."""
    return x01 * 2.0 - 1.0


def from_signed(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped, for images leaving a tanh generator."""
    return ((x + 1.0) * 0.5).clamp_(0.0, 1.0)


# ---- the registry ----

@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    name: str
    title: str
    description: str
    offline: bool  # needs no files and no network
    loader: Callable[..., ImageData]  # (root, download), plus (options, device) when parametric
    parametric: bool = False  # the name carries options after a colon ("ising:L=8,T=2.5"); set by its own panel


MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot")


def _idx_dataset(cls_name: str, name: str, classes: tuple[str, ...]) -> Callable[[Path, bool], ImageData]:
    def load(root: Path, download: bool) -> ImageData:
        files = find_split_files(root / cls_name / "raw")
        if files is not None:  # torchvision's layout on disk: read directly (0.1 s, against 2 s to import torchvision)
            return ImageData(name=name, source=f"{cls_name} IDX files in {root}", classes=classes,
                             **read_splits(files))
        import torchvision  # only to download the files

        cls = getattr(torchvision.datasets, cls_name)
        try:
            train = cls(str(root), train=True, download=download)
            test = cls(str(root), train=False, download=download)
        except Exception as e:  # noqa: BLE001 - torchvision raises RuntimeError, URLError, OSError...
            raise DatasetUnavailable(
                f"{name} is not in {root.resolve()} and could not be downloaded ({type(e).__name__}: {e}). "
                f"Copy torchvision's {cls_name}/raw files there, point --data-root or ${DATA_ROOT_ENV} at a folder "
                f"that has them, or train on the offline dataset '{OFFLINE_DATASET}', which needs no files."
            ) from e
        return ImageData(name=name, source=f"torchvision {cls_name} in {root}", classes=classes,
                         x_train=train.data.unsqueeze(1).contiguous(), y_train=train.targets.long(),
                         x_test=test.data.unsqueeze(1).contiguous(), y_test=test.targets.long())
    return load


def _load_fashion(root: Path, download: bool) -> ImageData:
    files = find_split_files(DEBIAN_FASHION_MNIST)
    if files is not None:  # Debian's dataset-fashion-mnist package
        return ImageData(name="fashion-mnist", source=f"Debian dataset-fashion-mnist in {DEBIAN_FASHION_MNIST}",
                         classes=FASHION_CLASSES, **read_splits(files))
    return _idx_dataset("FashionMNIST", "fashion-mnist", FASHION_CLASSES)(root, download)


def _load_digits(root: Path, download: bool) -> ImageData:
    """scikit-learn's 1,797 handwritten digits (8x8, 0..16), placed like MNIST: scaled to 20x20 in a 28x28 frame."""
    from sklearn.datasets import load_digits  # ships with scikit-learn: no files, no network

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0  # (1797, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)  # (1797, 1, 20, 20)
    x = F.pad(x, (4, 4, 4, 4))  # (1797, 1, 28, 28), MNIST's 4-pixel margin
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    y = torch.from_numpy(digits.target).long()
    n_test = 297  # a fixed split: the first 1,500 train, the rest test
    return ImageData(name=OFFLINE_DATASET, source="scikit-learn load_digits (offline, bundled with the package)",
                     classes=MNIST_CLASSES, x_train=x[:-n_test].contiguous(), y_train=y[:-n_test],
                     x_test=x[-n_test:].contiguous(), y_test=y[-n_test:])


def _load_ising(root: Path, download: bool, options: str = "", device: torch.device | str = "cpu") -> ImageData:
    """Ising configurations (genlib.ising.dataset): sampled on `device` on first use, then read from root/ising."""
    return ImageData(**ising_dataset.load(root, download, options, device)._asdict())


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(name="mnist", title="MNIST", offline=False,
                         description="70,000 handwritten digits, 28x28 grey (LeCun et al.)",
                         loader=_idx_dataset("MNIST", "mnist", MNIST_CLASSES)),
    "fashion-mnist": DatasetSpec(name="fashion-mnist", title="Fashion-MNIST", offline=False,
                                 description="70,000 Zalando clothing images, 28x28 grey (Xiao et al.)",
                                 loader=_load_fashion),
    OFFLINE_DATASET: DatasetSpec(name=OFFLINE_DATASET, title="Digits (offline)", offline=True,
                                 description="1,797 handwritten digits from scikit-learn, 8x8 scaled into 28x28; "
                                             "needs no files or network",
                                 loader=_load_digits),
    "ising": DatasetSpec(name="ising", title="2-D Ising model", offline=True, parametric=True,
                         description="spin configurations of the 2-D Ising model sampled by Monte Carlo (8x8 to "
                                     "64x64, 0/1 spins) at chosen temperatures; generated on first use, then cached",
                         loader=_load_ising),
}


def load_dataset(name: str, *, root: Path | str | None = None, device: torch.device | str = "cpu",
                 download: bool = True) -> ImageData:
    """Load a registered dataset once, as uint8 tensors on `device`.

    Raises DatasetUnavailable (with what to do) when the files are absent and cannot be downloaded,
    and ValueError for an unknown name.
    """
    spec, options = dataset_spec(name)
    root = Path(root) if root is not None else default_data_root()
    if spec.parametric:  # generated data: made on the training device, then moved (a no-op) like the others
        return spec.loader(root, download, options, device).to(device)
    return spec.loader(root, download).to(device)


def dataset_spec(name: str) -> tuple[DatasetSpec, str]:
    """The registry entry of a dataset name and the options after its colon ("ising:L=8,T=2.5" -> ising, "L=8,T=2.5")."""
    base, colon, options = name.partition(":")
    if base not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    if colon and not DATASETS[base].parametric:
        raise ValueError(f"Dataset {base!r} takes no options; write just {base!r}.")
    return DATASETS[base], options


def dataset_available(name: str, root: Path | str | None = None) -> bool:
    """True when `name` can be loaded without the network (its files are on disk, or it needs none)."""
    spec, _ = dataset_spec(name)
    if spec.offline:
        return True
    root = Path(root) if root is not None else default_data_root()
    if name == "fashion-mnist" and find_split_files(DEBIAN_FASHION_MNIST) is not None:
        return True
    folder = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]
    return find_split_files(root / folder / "raw") is not None
