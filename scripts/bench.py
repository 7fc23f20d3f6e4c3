#!/usr/bin/env python3
"""Side-by-side training speed: genlib against the course seed's code (and scikit-learn's BernoulliRBM), one table.

    .venv/bin/python scripts/bench.py                    # ~20 s per benchmark, MNIST from --data-root
    .venv/bin/python scripts/bench.py --quick            # smoke run, ~3 s per benchmark
    .venv/bin/python scripts/bench.py --only vae,gan/seed --seconds 10 --markdown

Every benchmark runs in its own fresh subprocess of this script (`--worker ID`), so its peak resident memory
(ru_maxrss) is its own and no benchmark warms caches or allocators for the next; the parent only collects one JSON
line from each and prints the table. Within a worker: load the data, build the model, run `--warmup` steps (not
timed), then train until `--seconds` of wall clock have passed and divide the images trained on by the time taken.
Seed loops and genlib see the same images (MNIST's 60,000 training images, or the offline digits with a note), the
same batch sizes and the same torch thread count (PyTorch's default unless --threads).

The work per image is counted from the layer sizes (multiply-adds count 2 FLOPs; elementwise work is ignored) and
compared with this machine's measured matrix-multiply peak (the best of several torch.mm of --peak-size squared
matrices, fp32 and bf16), so the table also says how close each implementation gets to the hardware:

* RBM CD-1 (the closed form): five (B x 784) x (784 x 500) matmuls per batch: v->h, h->v, v'->h' and the two outer
  products v^T p(h|v), v'^T p(h|v'): 5 * 2 * 784 * 500 FLOPs per image. The seed's autograd loop runs 11 such
  matmuls (two more forward for the free energies, and its backward also walks the sampled chain with zero
  gradients: torch.utils.flop_counter counts 11), scikit-learn's PCD-1 also 5; every row is credited the useful 5.
* VAE 784-512-512-(8+8) / 8-512-784: forward multiply-adds summed over the Linear layers, times 2 FLOPs, times 3
  for forward + backward.
* GAN (the seed's DCGAN): generator forward + two discriminator forwards (real and fake batches), times 2 FLOPs,
  times 3 for forward + backward; a transposed convolution counts in_h * in_w * c_in * c_out * k * k multiply-adds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
for p in (str(REPO), str(SCRIPTS)):
    if p not in sys.path:
        sys.path.insert(0, p)

RESULT_TAG = "BENCH_RESULT "
DEFAULT_SECONDS = 20.0
QUICK_SECONDS = 3.0
NOISE_FACTOR = 1.3  # a median step this much faster than the budget's average flags a busy machine

# ---------------------------------------------------------------------------------------------------------------------
# FLOPs per training image, from the layer sizes
# ---------------------------------------------------------------------------------------------------------------------

N_VIS, N_HID = 784, 500
VAE_D, VAE_H, VAE_K = 784, 512, 8
GAN_NOISE, GAN_G, GAN_D = 100, (256, 128, 64), (64, 128)


def rbm_flops_per_image(n_vis: int = N_VIS, n_hid: int = N_HID) -> float:
    """CD-1 closed form: 5 matmuls of n_vis x n_hid multiply-adds per image."""
    return 5 * 2.0 * n_vis * n_hid


def vae_flops_per_image(d: int = VAE_D, h: int = VAE_H, k: int = VAE_K) -> float:
    """Encoder d->h->h, heads h->k (mu) and h->k (log sigma); decoder k->h->d; x2 FLOPs, x3 forward+backward."""
    macs = d * h + h * h + 2 * h * k + k * h + h * d
    return 3 * 2.0 * macs


def gan_flops_per_image(noise: int = GAN_NOISE, g: tuple[int, int, int] = GAN_G,
                        dw: tuple[int, int] = GAN_D, ksz: int = 5) -> float:
    """Generator forward + 2 discriminator forwards (real, fake); x2 FLOPs; x3 forward+backward."""
    c0, c1, c2 = g
    gen = (noise * 7 * 7 * c0  # Dense to 7x7xc0
           + 7 * 7 * c0 * c1 * ksz * ksz  # conv-T 5x5 stride 1 on 7x7
           + 7 * 7 * c1 * c2 * ksz * ksz  # conv-T 5x5 stride 2 from 7x7
           + 14 * 14 * c2 * 1 * ksz * ksz)  # conv-T 5x5 stride 2 from 14x14 to 1 channel
    d1, d2 = dw
    disc = (14 * 14 * 1 * d1 * ksz * ksz  # conv 5x5 stride 2 to 14x14
            + 7 * 7 * d1 * d2 * ksz * ksz  # conv 5x5 stride 2 to 7x7
            + 7 * 7 * d2)  # Dense to one logit
    return 3 * 2.0 * (gen + 2 * disc)


FLOPS = {"rbm": rbm_flops_per_image(), "vae": vae_flops_per_image(), "gan": gan_flops_per_image()}
FLOP_NOTES = {
    "rbm": "5 matmuls x 2 x 784 x 500 (CD-1: v->h, h->v, v'->h', v^T h, v'^T h')",
    "vae": "3 x 2 x (784*512 + 512*512 + 2*512*8 + 8*512 + 512*784) (fwd+bwd of every Linear)",
    "gan": "3 x 2 x (G: 100*12544 + conv-T 40.1M + 10.0M + 0.3M MACs; D twice: 0.3M + 10.0M + 6272 MACs)",
}

# ---------------------------------------------------------------------------------------------------------------------
# The benchmarks
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    id: str  # "model/variant", what --only and --worker take
    model: str  # rbm | vae | gan
    label: str  # what the table calls it
    kind: str  # seed | peer | genlib
    batch: int
    precision: str = "fp32"  # which matmul peak the row is compared with
    config: dict[str, Any] = field(default_factory=dict)  # genlib model config
    lr: float = 0.0
    warmup: int = 5  # default warm-up steps (not timed)
    env: tuple[tuple[str, str], ...] = ()  # environment of the worker process (e.g. the RBM's eager step)


BENCHES: list[Bench] = [
    Bench("rbm/seed", "rbm", "seed loop (DataLoader+ToTensor, autograd of free energy)", "seed", 64, warmup=20),
    Bench("rbm/sklearn", "rbm", "scikit-learn BernoulliRBM.fit (PCD-1, float32)", "peer", 64, warmup=20),
    Bench("rbm/genlib-fp32", "rbm", "genlib RBM CD-1, fp32 (fused CPU passes where compiled)", "genlib", 64, "fp32",
          {"n_hidden": 500, "k": 1}, 0.1, warmup=20),
    Bench("rbm/genlib-eager-fp32", "rbm", "genlib RBM CD-1, fp32, eager PyTorch only", "genlib", 64, "fp32",
          {"n_hidden": 500, "k": 1}, 0.1, warmup=20, env=(("GENLIB_FUSED_CD", "0"),)),
    Bench("rbm/genlib-bf16", "rbm", "genlib RBM CD-1, bf16 autocast", "genlib", 64, "bf16",
          {"n_hidden": 500, "k": 1}, 0.1, warmup=20),
    Bench("vae/seed", "vae", "seed loop (DataLoader+ToTensor+Normalize, torch.distributions)", "seed", 128, warmup=10),
    Bench("vae/genlib-bernoulli-fp32", "vae", "genlib VAE bernoulli, fp32", "genlib", 128, "fp32",
          {"decoder": "bernoulli"}, 1e-3, warmup=10),
    Bench("vae/genlib-bernoulli-bf16", "vae", "genlib VAE bernoulli, bf16 autocast", "genlib", 128, "bf16",
          {"decoder": "bernoulli"}, 1e-3, warmup=10),
    Bench("vae/genlib-gaussian-fp32", "vae", "genlib VAE gaussian (seed's decoder), fp32", "genlib", 128, "fp32",
          {"decoder": "gaussian"}, 1e-3, warmup=10),
    Bench("vae/genlib-gaussian-bf16", "vae", "genlib VAE gaussian (seed's decoder), bf16 autocast", "genlib", 128,
          "bf16", {"decoder": "gaussian"}, 1e-3, warmup=10),
    Bench("gan/seed", "gan", "seed DCGAN, PyTorch port (one forward, two tapes)", "seed", 256, warmup=2),
    Bench("gan/genlib-fp32", "gan", "genlib GAN, NCHW, fp32", "genlib", 256, "fp32",
          {"preset": "seed", "channels_last": False}, 1e-4, warmup=2),
    Bench("gan/genlib-bf16", "gan", "genlib GAN, NCHW, bf16 autocast", "genlib", 256, "bf16",
          {"preset": "seed", "channels_last": False}, 1e-4, warmup=2),
    Bench("gan/genlib-cl-fp32", "gan", "genlib GAN, channels_last (default), fp32", "genlib", 256, "fp32",
          {"preset": "seed", "channels_last": True}, 1e-4, warmup=2),
    Bench("gan/genlib-cl-bf16", "gan", "genlib GAN, channels_last (default), bf16 autocast", "genlib", 256, "bf16",
          {"preset": "seed", "channels_last": True}, 1e-4, warmup=2),
]
BY_ID = {b.id: b for b in BENCHES}
MODELS = ("rbm", "vae", "gan")

# (genlib row's model, baseline id, minimum ratio): the targets on a 2-core CPU
TARGETS: list[tuple[str, str, float]] = [("rbm", "rbm/seed", 6.0), ("rbm", "rbm/sklearn", 2.5),
                                         ("vae", "vae/seed", 4.0), ("gan", "gan/seed", 2.5)]


def select(only: str | None) -> list[Bench]:
    """Benchmarks named by --only: model names (rbm, vae, gan) and/or ids (vae/seed), comma-separated."""
    if not only:
        return list(BENCHES)
    chosen: list[Bench] = []
    for token in (t.strip() for t in only.split(",") if t.strip()):
        if token in MODELS:
            picked = [b for b in BENCHES if b.model == token]
        elif token in BY_ID:
            picked = [BY_ID[token]]
        else:
            picked = [b for b in BENCHES if b.id.startswith(token)]
            if not picked:
                raise SystemExit(f"--only: unknown benchmark {token!r}; choose from {', '.join(MODELS)} or "
                                 f"{', '.join(BY_ID)}")
        chosen += [b for b in picked if b not in chosen]
    return chosen


# ---------------------------------------------------------------------------------------------------------------------
# Worker side: one benchmark in this (fresh) process
# ---------------------------------------------------------------------------------------------------------------------

class Clock:
    """Counts steps: the first `warmup` are not timed; then images are counted until `seconds` have passed.

    `tick(n)` is called after every training step with its batch's image count and returns False to stop.
    """

    def __init__(self, warmup: int, seconds: float, max_steps: int | None = None) -> None:
        self.warmup, self.seconds, self.max_steps = warmup, seconds, max_steps
        self.steps = 0  # all steps, warm-up included
        self.timed_steps = 0
        self.images = 0
        self.t0: float | None = None
        self.t1: float | None = None
        self.step_seconds: list[float] = []  # duration of every timed step (for the noise check)
        if warmup == 0:
            self.t0 = time.perf_counter()

    def tick(self, n: int) -> bool:
        now = time.perf_counter()
        self.steps += 1
        if self.steps <= self.warmup:
            if self.steps == self.warmup:
                self.t0 = time.perf_counter()
            return True
        self.timed_steps += 1
        self.images += n
        self.step_seconds.append(now - (self.t1 if self.t1 is not None else self.t0))
        self.t1 = now
        if now - self.t0 >= self.seconds:
            return False
        return self.max_steps is None or self.timed_steps < self.max_steps

    def result(self) -> dict[str, Any]:
        elapsed = (self.t1 - self.t0) if (self.t0 is not None and self.t1 is not None) else 0.0
        out = {"images": self.images, "steps": self.timed_steps, "seconds": elapsed,
               "images_per_second": self.images / elapsed if elapsed > 0 else float("nan")}
        if self.step_seconds and self.timed_steps:
            # the rate at the median step: robust to a busy machine; far above the budget's rate means noise
            median = sorted(self.step_seconds)[len(self.step_seconds) // 2]
            out["median_step_images_per_second"] = (self.images / self.timed_steps) / median if median > 0 else None
        return out


@dataclass
class DataChoice:
    name: str  # mnist | digits
    root: str
    note: str  # empty, or why MNIST was not used


def choose_data(dataset: str, root: str) -> DataChoice:
    from genlib.data import dataset_available

    if dataset == "mnist" and not dataset_available("mnist", root):
        return DataChoice("digits", root, f"MNIST not found under {root}: fell back to the offline digits dataset "
                                          "(1,500 training images, 8x8 scaled to 28x28); numbers are not MNIST's")
    return DataChoice(dataset, root, "")


def _genlib_data(choice: DataChoice):
    from genlib.data import load_dataset

    return load_dataset(choice.name, root=choice.root, download=False)


def _standin(choice: DataChoice):
    """None for MNIST (the seed code reads it with torchvision), else (uint8 (N, 28, 28), labels) of the fallback."""
    if choice.name == "mnist":
        return None
    data = _genlib_data(choice)
    return data.x_train[:, 0].contiguous(), data.y_train


def _raw_uint8_images(choice: DataChoice):
    """The training images as a numpy uint8 (N, 28, 28) array (what tf.keras.datasets.mnist.load_data() returns)."""
    if choice.name == "mnist":
        from torchvision import datasets

        return datasets.MNIST(choice.root, train=True, download=False).data.numpy()
    return _genlib_data(choice).x_train[:, 0].numpy()


def run_seed(bench: Bench, choice: DataChoice, clock: Clock) -> None:
    import seed_reference as seed

    if bench.model == "rbm":
        seed.train_rbm(seed.rbm_train_loader(choice.root, _standin(choice)), clock.tick, epochs=10**6)
    elif bench.model == "vae":
        seed.train_vae(seed.vae_dataset(choice.root, _standin(choice)), clock.tick, num_epochs=10**6)
    elif bench.model == "gan":
        seed.train_gan(seed.gan_dataset(_raw_uint8_images(choice)), clock.tick, epochs=10**6)
    else:
        raise ValueError(bench.model)


def run_sklearn(bench: Bench, choice: DataChoice, clock: Clock, threads: int | None) -> None:
    """BernoulliRBM.fit over a subset sized from a warm-up fit to fill the time budget (its own loop over batches of
    64; float32 input, which it keeps, is its fastest path)."""
    import numpy as np
    from sklearn.neural_network import BernoulliRBM
    from threadpoolctl import threadpool_limits

    x = _raw_uint8_images(choice).reshape(-1, 784).astype(np.float32)  # (N, 784) in [0, 1], one float32 copy
    x /= np.float32(255.0)
    limits = threadpool_limits(limits=threads, user_api="blas") if threads else None

    def fit(n: int, n_iter: int = 1) -> float:
        rbm = BernoulliRBM(n_components=500, batch_size=64, learning_rate=0.1, n_iter=n_iter, random_state=0)
        t = time.perf_counter()
        rbm.fit(x[:n])
        return time.perf_counter() - t

    warm = min(len(x), bench.batch * max(clock.warmup, 1))
    dt = fit(warm)  # warm-up: not timed in the result; sizes the timed run
    rate = warm / max(dt, 1e-9)
    want = max(bench.batch, int(rate * clock.seconds))
    n_iter = max(1, math.ceil(want / len(x)))
    n = min(len(x), -(-math.ceil(want / n_iter) // bench.batch) * bench.batch)
    elapsed = fit(n, n_iter)
    clock.images, clock.timed_steps = n * n_iter, n_iter * -(-n // bench.batch)
    clock.t0, clock.t1 = 0.0, elapsed
    if limits is not None:
        limits.unregister()


def run_genlib(bench: Bench, choice: DataChoice, clock: Clock) -> None:
    from genlib.models import build_model
    from genlib.training import Callbacks, TrainConfig, train

    from genlib.devices import flush_denormals_in_process

    flush_denormals_in_process()  # what genlib's CLI and job workers do first in every training process
    data = _genlib_data(choice)
    model = build_model(bench.model, dict(bench.config))
    model.configure_training(lr=bench.lr, precision=bench.precision)
    cfg = TrainConfig(dataset=data.name, epochs=100_000, batch_size=bench.batch, lr=bench.lr,
                      precision=bench.precision, device="cpu")
    train(model, data, cfg, callbacks=Callbacks(control=lambda progress: clock.tick(bench.batch)))


def _rss_mib() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:  # noqa: BLE001 - psutil is optional for this figure
        return float("nan")


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.worker == "peak":
        return measure_peak(args.peak_size, args.peak_reps)
    bench = BY_ID[args.worker]
    choice = choose_data(args.dataset, args.data_root)
    # at least one untimed step: the first one pays for lazy initialisation (oneDNN primitives, allocator, RNG)
    warmup = max(1, args.warmup if args.warmup is not None else (bench.warmup // 4 if args.quick else bench.warmup))
    clock = Clock(warmup, args.seconds, args.max_steps)
    rss_start = _rss_mib()
    if bench.kind == "seed":
        run_seed(bench, choice, clock)
    elif bench.kind == "peer":
        run_sklearn(bench, choice, clock, args.threads)
    else:
        run_genlib(bench, choice, clock)
    out = clock.result()
    out.update(warmup=warmup, threads=torch.get_num_threads(), rss_start_mib=rss_start, dataset=choice.name)
    return out


PEAK_REP_BUDGET_S = 1.0  # a peak repetition longer than this shrinks the matrix (bf16 without bf16 units: ~0.3 GFLOP/s)


def measure_peak(size: int, reps: int, precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict[str, Any]:
    """Best-of-`reps` GFLOP/s of a square torch.mm in each of `precisions` (fp32, bf16; 2 n^3 FLOPs each), on the
    caller's torch threads; a precision this CPU runs slowly (bf16 without bf16 matrix units) is measured at a smaller
    size, halved until one product takes at most PEAK_REP_BUDGET_S by a 256-square probe, and the size is reported."""
    import torch

    out: dict[str, Any] = {}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for name, dtype in ((p, dtypes[p]) for p in precisions):
        probe = torch.randn(256, 256, dtype=dtype)
        torch.mm(probe, probe)
        t = time.perf_counter()
        torch.mm(probe, probe)
        probe_s = max(time.perf_counter() - t, 1e-9)
        n = size
        while n > 256 and probe_s * (n / 256) ** 3 > PEAK_REP_BUDGET_S:
            n //= 2
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        c = torch.empty(n, n, dtype=dtype)
        for _ in range(2):
            torch.mm(a, b, out=c)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            torch.mm(a, b, out=c)
            times.append(time.perf_counter() - t)
        flops = 2.0 * n ** 3
        out[name] = flops / min(times) / 1e9
        out[name + "_median"] = flops / sorted(times)[len(times) // 2] / 1e9
        out[name + "_size"] = n
    out["threads"] = torch.get_num_threads()
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Parent side: spawn the workers, print the table
# ---------------------------------------------------------------------------------------------------------------------

def spawn(worker_id: str, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", worker_id, "--seconds", str(args.seconds),
           "--data-root", str(args.data_root), "--dataset", args.dataset,
           "--peak-size", str(args.peak_size), "--peak-reps", str(args.peak_reps)]
    for flag, value in (("--warmup", args.warmup), ("--threads", args.threads), ("--max-steps", args.max_steps)):
        if value is not None:
            cmd += [flag, str(value)]
    if args.quick:
        cmd.append("--quick")
    env = dict(os.environ)
    env.update(BY_ID[worker_id].env if worker_id in BY_ID else {})
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
            result["wall_s"] = time.perf_counter() - t
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median speed (the lower middle one of an even count), with every round's speed attached as
    "round_ips"; the first error when no round succeeded."""
    good = sorted((r for r in runs if "error" not in r), key=lambda r: r["images_per_second"])
    if not good:
        return runs[0]
    return {**good[(len(good) - 1) // 2], "round_ips": [r["images_per_second"] for r in good]}


def fmt(x: float | None, spec: str = ",.0f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def cpu_name() -> str:
    try:
        from genlib.devices import _cpu_name

        return _cpu_name()
    except Exception:  # noqa: BLE001
        return platform.processor() or "CPU"


def build_rows(benches: list[Bench], results: dict[str, dict[str, Any]], peak: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for b in benches:
        r = results[b.id]
        ips = r.get("images_per_second")
        base = results.get(f"{b.model}/seed", {}).get("images_per_second")
        gflops = ips * FLOPS[b.model] / 1e9 if ips else None
        peak_g = peak.get(b.precision)
        rows.append({
            "id": b.id, "model": b.model.upper(), "label": b.label, "kind": b.kind, "batch": b.batch,
            "precision": b.precision, "ips": ips, "steps": r.get("steps"),
            "ratio": (ips / base) if (ips and base and b.kind != "seed") else (1.0 if b.kind == "seed" and ips else None),
            "gflops": gflops, "pct_peak": 100.0 * gflops / peak_g if (gflops and peak_g) else None,
            "rss": r.get("maxrss_mib"), "error": r.get("error"), "round_ips": r.get("round_ips"),
            "rss_growth": (r["maxrss_mib"] - r["rss_start_mib"]) if ("maxrss_mib" in r and "rss_start_mib" in r) else None,
            "noisy": bool(ips and r.get("median_step_images_per_second")
                          and r["median_step_images_per_second"] > NOISE_FACTOR * ips),
        })
    return rows


def target_lines(results: dict[str, dict[str, Any]], benches: list[Bench]) -> list[tuple[str, str]]:
    """(what, verdict) for every genlib row against every baseline it has a target for."""
    lines = []
    for model, base_id, need in TARGETS:
        base = results.get(base_id, {}).get("images_per_second")
        for b in benches:
            if b.model != model or b.kind != "genlib" or b.id not in results:
                continue
            ips = results[b.id].get("images_per_second")
            what = f"{b.id} vs {base_id}: target >= {need:g}x"
            if not ips or not base or not math.isfinite(ips) or not math.isfinite(base):
                lines.append((what, "not measured"))
                continue
            ratio = ips / base
            verdict = (f"{ratio:.2f}x: met" if ratio >= need
                       else f"{ratio:.2f}x: gap {need / ratio:.2f}x (needs {need * base:,.0f} img/s, has {ips:,.0f})")
            lines.append((what, verdict))
    return lines


COLUMNS = [("model", "model"), ("implementation", "label"), ("prec", "precision"), ("batch", "batch"),
           ("img/s", "ips"), ("steps", "steps"), ("x seed", "ratio"), ("GFLOP/s", "gflops"),
           ("% peak", "pct_peak"), ("max RSS MiB", "rss"), ("+MiB", "rss_growth")]


def cell(row: dict[str, Any], key: str) -> str:
    if row.get("error") and key == "ips":
        return "FAILED"
    v = row.get(key)
    if key == "ips":
        spread = row.get("round_ips") or []
        rounds = f" ({min(spread) / 1e3:.1f}-{max(spread) / 1e3:.1f}k)" if len(spread) > 1 else ""
        return fmt(v, ",.0f") + ("*" if row.get("noisy") else "") + rounds
    if key == "ratio":
        return "-" if v is None else f"{v:.2f}x"
    if key == "gflops":
        return fmt(v, ",.1f")
    if key == "pct_peak":
        return fmt(v, ".1f")
    if key in ("rss", "rss_growth"):
        return fmt(v, ",.0f")
    return "-" if v is None else str(v)


def plain_table(rows: list[dict[str, Any]]) -> str:
    head = [c for c, _ in COLUMNS]
    body = [[cell(r, k) for _, k in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h) for i, h in enumerate(head)]
    numeric = {"batch", "img/s", "steps", "x seed", "GFLOP/s", "% peak", "max RSS MiB", "+MiB"}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if h in numeric else c.ljust(w) for c, w, h in zip(cells, widths, head))

    out = [line(head), "  ".join("-" * w for w in widths)]
    prev = None
    for r, cells in zip(rows, body):
        if prev is not None and r["model"] != prev:
            out.append("")
        prev = r["model"]
        out.append(line(cells))
    return "\n".join(out)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = [c for c, _ in COLUMNS]
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---:" if c not in ("model", "implementation", "prec") else "---" for c in head) + "|"]
    for r in rows:
        out.append("| " + " | ".join(cell(r, k) for _, k in COLUMNS) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=None,
                    help=f"timed wall-clock budget per benchmark (default {DEFAULT_SECONDS:g}; {QUICK_SECONDS:g} "
                         "with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke run: short budgets, fewer warm-up steps")
    ap.add_argument("--only", default=None,
                    help="comma-separated models (rbm, vae, gan) or benchmark ids (e.g. vae/seed, gan/genlib-bf16)")
    default_root = os.environ.get("GENLIB_DATA_ROOT") or str((REPO / ".." / "shared" / "data").resolve())
    ap.add_argument("--data-root", default=default_root,
                    help="folder with MNIST/raw (default $GENLIB_DATA_ROOT, else ../shared/data from the repo)")
    ap.add_argument("--dataset", choices=("mnist", "digits"), default="mnist",
                    help="mnist (falls back to digits with a note when absent) or the offline digits")
    ap.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default per model; at least 1)")
    ap.add_argument("--max-steps", type=int, default=None, help="also stop each benchmark after this many timed steps")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in every benchmark (default: PyTorch's)")
    ap.add_argument("--peak-size", type=int, default=2048, help="side of the square matmul of the peak measurement")
    ap.add_argument("--peak-reps", type=int, default=10, help="timed repetitions of the peak matmul (best is kept)")
    ap.add_argument("--markdown", action="store_true", help="also print the table as markdown (for docs/benchmarks.md)")
    ap.add_argument("--json", default=None, help="also write the raw results to this file")
    ap.add_argument("--list", action="store_true", help="list the benchmark ids and exit")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every benchmark this many times, round-robin, and report each row's median run "
                         "(with the range of the rounds); ratios then compare medians")
    ap.add_argument("--all-precisions", action="store_true",
                    help="also run the bf16 rows on a CPU without bf16 matrix units (there they take minutes each)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.seconds is None:
        args.seconds = QUICK_SECONDS if args.quick else DEFAULT_SECONDS
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    if args.list:
        for b in BENCHES:
            print(f"{b.id:28s} {b.label}")
        return 0

    if args.worker:  # child: one benchmark, one JSON line
        result = worker(args)
        result["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0

    benches = select(args.only)
    choice = choose_data(args.dataset, args.data_root)
    import torch

    from genlib.devices import cpu_has_fast_bf16

    skipped = [] if cpu_has_fast_bf16() or args.all_precisions else [b.id for b in benches if b.precision == "bf16"]
    benches = [b for b in benches if b.id not in skipped]

    print(f"genlib benchmark: {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
          f"threads {args.threads or torch.get_num_threads()}, fast bf16 (AMX/AVX512-BF16): "
          f"{'yes' if cpu_has_fast_bf16() else 'no'}", flush=True)
    print(f"data: {choice.name} from {choice.root}" + (f"\nNOTE: {choice.note}" if choice.note else ""), flush=True)
    if any(b.id == "rbm/genlib-fp32" for b in benches):
        from genlib.sampling.kernels import cd

        state = cd.status()  # builds the library now, so that no timed worker compiles it
        print(f"RBM fused CPU passes: {'compiled, ' + state.detail if state.ok else 'not in use: ' + state.detail}",
              flush=True)
    if skipped:
        print(f"skipped: {', '.join(skipped)} (this CPU has no bf16 matrix units, so bf16 runs hundreds of times slower "
              "than fp32 and genlib's forms default to fp32 here; --all-precisions runs them)", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"timing: {args.seconds:g} s per benchmark after warm-up, each in its own subprocess"
          + (" (quick smoke run)" if args.quick else "") + f"; load average at start {load:.2f}"
          + (" (BUSY machine: expect noisy numbers)" if load > 0.5 * (os.cpu_count() or 1) else ""), flush=True)
    timeout = 3 * args.seconds + 300

    peak = spawn("peak", args, timeout)
    if "error" in peak:
        print(f"matmul peak: FAILED ({peak['error']})", flush=True)
    else:
        print(f"matmul peak (square torch.mm, best of {args.peak_reps}): "
              f"fp32 {peak['fp32']:,.1f} GFLOP/s at {peak['fp32_size']}, bf16 {peak['bf16']:,.1f} GFLOP/s at "
              f"{peak['bf16_size']} (medians {peak['fp32_median']:,.1f} / {peak['bf16_median']:,.1f})", flush=True)
    for m in dict.fromkeys(b.model for b in benches):
        print(f"FLOPs per training image, {m.upper()}: {FLOPS[m] / 1e6:,.2f} MFLOP = {FLOP_NOTES[m]}", flush=True)
    print(flush=True)

    runs: dict[str, list[dict[str, Any]]] = {b.id: [] for b in benches}
    for round_ in range(args.rounds):  # round-robin: a slow spell of a shared machine hits every row alike
        for b in benches:
            tag = f" (round {round_ + 1} of {args.rounds})" if args.rounds > 1 else ""
            print(f"  running {b.id}{tag} ...", end="", file=sys.stderr, flush=True)
            r = spawn(b.id, args, timeout)
            runs[b.id].append(r)
            print(" " + (f"{r['images_per_second']:,.0f} img/s" if "error" not in r else r["error"]),
                  file=sys.stderr, flush=True)
    results = {k: median_run(v) for k, v in runs.items()}

    rows = build_rows(benches, results, peak)
    print(plain_table(rows))
    failures = [r for r in rows if r["error"]]
    for r in failures:
        print(f"FAILED {r['id']}: {r['error']}")
    targets = target_lines(results, benches)
    if targets:
        print("\nTargets (ratios measured in this run, same machine, same data and batch sizes):")
        width = max(len(w) for w, _ in targets)
        for what, verdict in targets:
            print(f"  {what.ljust(width)}  {verdict}")
    if any(r["noisy"] for r in rows):
        print(f"\n* this benchmark's median step was over {NOISE_FACTOR:g}x faster than its average over the budget: "
              "other processes were competing for the CPU; rerun on a quiet machine before quoting it.")
    print("\n'% peak' is the useful FLOP rate over the matmul peak of the row's precision; 'max RSS' is each "
          "benchmark subprocess's own peak resident memory (ru_maxrss), imports and data included; '+MiB' is its growth "
          "over the RSS the subprocess had right after importing torch (data, model, optimiser and activations).")
    if args.markdown:
        print("\n" + markdown_table(rows))
        if targets:
            print()
            for what, verdict in targets:
                print(f"- {what}: {verdict}")
        print(f"\n{cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}; data {choice.name}"
              + (" (MNIST absent: offline fallback)" if choice.note else "") + "; "
              f"{args.seconds:g} s per benchmark after warm-up; matmul peak fp32 "
              f"{fmt(peak.get('fp32'))} / bf16 {fmt(peak.get('bf16'))} GFLOP/s.")
    if args.json:
        Path(args.json).write_text(json.dumps({"peak": peak, "results": results, "targets": targets,
                                               "data": choice.__dict__, "seconds": args.seconds}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
