"""How good are a model's samples: the Fréchet distance between Gaussians fitted to classifier features of generated and
real images (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a local Nash equilibrium":
FID, here in the penultimate layer of genlib's own MNIST classifier rather than Inception's), and the histogram of
the classes the classifier sees in the samples (a collapsed generator covers few classes).

The distance depends on the number of images (its estimate is biased upwards for small sets), so it is only compared
at equal n; the train-versus-test distance at the same n is the floor a perfect model would reach.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from genlib.data import to_unit

ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], message)


def gaussian_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and covariance (d, d) of features (N, d), float64, with N - 1 as pytorch-fid's np.cov."""
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need features (N >= 2, d), got shape {tuple(feats.shape)}")
    x = feats.detach().double()
    mu = x.mean(0)
    xc = x - mu
    return mu, (xc.t() @ xc) / (x.shape[0] - 1)


def _sym_sqrt(a: torch.Tensor) -> torch.Tensor:
    """The PSD square root of a symmetric matrix (d, d) by eigendecomposition; rounding's negative eigenvalues -> 0."""
    evals, evecs = torch.linalg.eigh((a + a.t()) / 2)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.t()


def frechet_distance_from_stats(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^½ S2 S1^½)^½), the Fréchet (2-Wasserstein²) distance of Gaussians.

    tr((S1^½ S2 S1^½)^½) equals pytorch-fid's tr((S1 S2)^½) (the two matrices are similar), but stays in symmetric
    eigendecompositions, float64, so no complex parts or sqrtm failures arise for singular covariances.
    """
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    s1 = _sym_sqrt(cov1)
    middle = s1 @ cov2 @ s1  # (d, d) symmetric PSD
    tr_cross = torch.linalg.eigvalsh((middle + middle.t()) / 2).clamp(min=0).sqrt().sum()
    d = float((mu1 - mu2).square().sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_cross)
    return max(d, 0.0)  # rounding can leave -1e-12 for identical sets


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (N_a, d) and (N_b, d)."""
    return frechet_distance_from_stats(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


@torch.no_grad()
def classifier_outputs(classifier: Any, images: torch.Tensor, *, batch_size: int = 1_000
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, d) float64, predicted classes (N,) int64), both on the CPU, for images (N, 1, 28, 28).

    Images are float in [0, 1] or uint8 in [0, 255], on any device; they are moved to the classifier's in batches.
    """
    classifier.eval()
    device = classifier.device
    feats, preds = [], []
    for i in range(0, images.shape[0], batch_size):
        xb = images[i:i + batch_size].to(device)
        xb = to_unit(xb) if xb.dtype == torch.uint8 else xb.float()
        f = classifier.features(xb)  # (B, d)
        feats.append(f.double().cpu())
        preds.append(classifier.fc2(f).argmax(1).cpu())  # the logits from the same features: one pass
    return torch.cat(feats), torch.cat(preds)


def class_histogram(images: torch.Tensor, classifier: Any, *, n_classes: int | None = None) -> list[int]:
    """How many of `images` (N, 1, 28, 28) the classifier puts in each class: n_classes counts summing to N."""
    _, preds = classifier_outputs(classifier, images)
    k = n_classes or classifier.config.n_classes
    return torch.bincount(preds, minlength=k).tolist()


def histogram_summary(counts: list[int]) -> dict[str, Any]:
    """Entropy of the class shares (nats; log 10 = 2.303 when uniform), the smallest and largest share, classes seen."""
    n = sum(counts)
    p = torch.tensor(counts, dtype=torch.float64) / max(n, 1)
    nz = p[p > 0]
    return {"entropy": float(-(nz * nz.log()).sum()) + 0.0,  # + 0.0: no "-0.0" for a single class
            "max_entropy": math.log(len(counts)),
            "min_share": float(p.min()), "max_share": float(p.max()), "classes_seen": int((p > 0).sum())}


@torch.no_grad()
def generate(model: Any, n: int, *, seed: int = 0, batch_size: int = 500, progress: ProgressFn | None = None
             ) -> torch.Tensor:
    """n samples (n, C, H, W) in [0, 1] on the CPU, drawn in batches from one CPU generator (reproducible)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        out.append(model.sample(b, generator=gen).float().cpu())
        if progress is not None:
            progress((i + b) / n, f"sampling {i + b:,}/{n:,} images")
    return torch.cat(out)


@torch.no_grad()
def sample_quality(model: Any, classifier: Any, x_train: torch.Tensor, x_test: torch.Tensor, *, n: int,
                   seed: int = 0, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Fréchet distance of n samples to the test set, the train-vs-test floor at the same n, and the class histogram.

    x_train, x_test: real images (N, 1, 28, 28), uint8 or [0, 1]. The reference is the whole test set; the floor
    draws n training images (a fixed random subset), so both distances compare n images with the same reference.
    """
    samples = generate(model, n, seed=seed, progress=progress)
    f_gen, preds = classifier_outputs(classifier, samples)
    f_test, _ = classifier_outputs(classifier, x_test)
    pick = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    f_train, _ = classifier_outputs(classifier, x_train[pick.to(x_train.device)])
    ref = gaussian_stats(f_test)
    counts = torch.bincount(preds, minlength=classifier.config.n_classes).tolist()
    return {
        "frechet_distance": frechet_distance_from_stats(*gaussian_stats(f_gen), *ref),
        "frechet_floor": frechet_distance_from_stats(*gaussian_stats(f_train), *ref),
        "n_samples": int(n),
        "n_floor": int(pick.shape[0]),  # fewer than n only when the training set is smaller
        "n_reference": int(x_test.shape[0]),
        "class_histogram": counts,
        **{f"class_{k}": v for k, v in histogram_summary(counts).items()},
    }
