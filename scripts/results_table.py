#!/usr/bin/env python3
"""The results table of docs/quality.md: train the seed's default settings of each model on MNIST within a stated CPU budget,
evaluate them with genlib.quality's FULL settings (the same evaluation and record as `python -m genlib evaluate` and
the dashboard's), and print a markdown table beside the published references.

    nice -n 10 .venv/bin/python scripts/results_table.py --data-root ../shared/data --out artifacts/results.json
    .venv/bin/python scripts/results_table.py --dataset digits --quick     # a smoke run in seconds

References (the figures are the papers' own; genlib's come from this script):
* RBM, 784-500, MNIST test log-likelihood by AIS, nats per image: Salakhutdinov & Murray, "On the quantitative
  analysis of deep belief networks", ICML 2008, Table 2: CD-1 -125.53, CD-3 -105.50, CD-25 -86.34.
* VAE, one stochastic layer (50 units, 2 x 200 tanh deterministic layers), test -log p(x) by IWAE with k = 5,000 on
  dynamically binarised MNIST: Burda, Grosse & Salakhutdinov, "Importance weighted autoencoders", ICLR 2016,
  Table 1: VAE (k = 1) 86.76, IWAE (k = 50) 84.78.
* pytorch/examples' vae/main.py (784-400-20, Adam 1e-3, batch 128, default 10 epochs): its printed test loss is
  BCE + KL on the *grey* (not binarised) pixels, one z draw per image; its published logs show about 106.7 after
  epoch 7 (pytorch/examples pull request 1416). `--examples-vae` trains the same architecture here for 10 epochs
  and reports that figure, and genlib's VAE is also scored in that protocol, so the two compare like with like.

Training uses the seed's model settings, learning rates and batch sizes (genlib.training.SEED_DEFAULTS); only the
number of epochs is cut to fit the budget (the defaults below: about 20-30 minutes on 2 CPU cores in all).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PAPERS = {
    "rbm": "Salakhutdinov & Murray 2008 (500 hidden, AIS): CD-1 -125.53, CD-3 -105.50, CD-25 -86.34",
    "vae_iwae": "Burda et al. 2016, 1 stochastic layer, k = 5,000: VAE 86.76, IWAE (k = 50) 84.78",
    "vae_examples": "pytorch/examples vae, 10 epochs: about 106 (epoch 7: 106.66, PR #1416's log)",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def train_model(name: str, data: Any, *, epochs: int, precision: str, seed: int, max_steps: int | None) -> dict:
    """Train `name` with the seed's settings for `epochs`; returns the model, its settings and the time taken."""
    from genlib.models import build_model
    from genlib.training import Callbacks, default_train_config, train

    cfg = default_train_config(name, dataset=data.name, epochs=epochs, precision=precision, seed=seed,
                               log_every=50, max_steps=max_steps)
    import torch

    torch.manual_seed(seed)
    model = build_model(name)
    model.configure_training(lr=cfg.lr, precision=cfg.precision)
    last = {"t": 0.0}

    def on_log(row: dict) -> None:
        if time.monotonic() - last["t"] > 20:
            last["t"] = time.monotonic()
            metrics = " ".join(f"{k}={row[k]:.3g}" for k in model.metric_names if k in row)
            log(f"{name}: epoch {row['epoch']} step {row['step']:,} {row['images_per_second']:,.0f} img/s {metrics}")

    t0 = time.perf_counter()
    progress = train(model, data, cfg, callbacks=Callbacks(on_log=on_log))
    return {"model": model, "epochs": epochs, "steps": progress.step, "seconds": time.perf_counter() - t0,
            "lr": cfg.lr, "batch_size": cfg.batch_size, "precision": precision,
            "seed_epochs": default_train_config(name).epochs}


def grey_pixel_loss(encode: Any, decode_logits: Any, x_test: Any, seed: int = 0) -> float:
    """pytorch/examples' test loss: BCE of the decoder's Bernoulli means against the grey pixels in [0, 1], summed
    over pixels, plus the analytic KL, with one z ~ q(z|x) per image, averaged over the test images (nats)."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        for i in range(0, x_test.shape[0], 1000):
            x = x_test[i:i + 1000].float() / 255.0  # (B, 1, 28, 28) grey
            mu, log_sigma = encode(x)  # (B, L) each
            z = mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=gen)
            logits = decode_logits(z).reshape(x.shape[0], -1)
            bce = F.binary_cross_entropy_with_logits(logits, x.reshape(x.shape[0], -1), reduction="sum")
            kl = 0.5 * (mu.square() + torch.exp(2 * log_sigma) - 1 - 2 * log_sigma).sum()
            total += float(bce + kl)
    return total / x_test.shape[0]


def examples_vae(data: Any, *, epochs: int, seed: int) -> dict:
    """pytorch/examples' VAE architecture and training (784-400-20, ReLU, Adam 1e-3, batch 128, BCE on grey pixels
    plus KL), written out here, trained for `epochs`; returns its test loss in that example's protocol."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(seed)
    fc1, fc21, fc22, fc3, fc4 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20), nn.Linear(20, 400), \
        nn.Linear(400, 784)
    params = [p for m in (fc1, fc21, fc22, fc3, fc4) for p in m.parameters()]

    def encode(x: Any) -> tuple[Any, Any]:
        h = F.relu(fc1(x.reshape(x.shape[0], -1)))
        return fc21(h), 0.5 * fc22(h)  # its second head is log sigma^2; halved: log sigma

    def decode_logits(z: Any) -> Any:
        return fc4(F.relu(fc3(z)))

    opt = torch.optim.Adam(params, lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    n = data.x_train.shape[0]
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, 128):  # its DataLoader keeps the last, smaller batch
            x = data.x_train[order[i:i + 128]].float() / 255.0
            mu, log_sigma = encode(x)
            z = mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=gen)
            bce = F.binary_cross_entropy_with_logits(decode_logits(z), x.reshape(x.shape[0], -1), reduction="sum")
            kl = 0.5 * (mu.square() + torch.exp(2 * log_sigma) - 1 - 2 * log_sigma).sum()
            opt.zero_grad(set_to_none=True)
            (bce + kl).backward()  # its loss: summed over the batch (the rate is tuned for that)
            opt.step()
        log(f"examples-vae: epoch {epoch + 1}/{epochs}")
    return {"test_loss_grey": grey_pixel_loss(encode, decode_logits, data.x_test, seed), "epochs": epochs,
            "seconds": time.perf_counter() - t0}


def fmt(value: Any, se: Any = None, digits: int = 2) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    if isinstance(se, (int, float)) and math.isfinite(se):
        return f"{value:.{digits}f} ± {se:.{digits}f}"
    return f"{value:.{digits}f}"


def figures_of(r: dict) -> dict:
    """A model's figures: from its quality record (genlib.quality.records.make_record), or an older --out file's."""
    return (r.get("quality") or {}).get("figures") or r.get("figures") or {}


def table(results: dict) -> str:
    """The markdown table: one row per figure, genlib's value beside the published reference."""
    rows = ["| model (seed settings) | trained here | figure | genlib | published reference |",
            "|---|---|---|---:|---|"]

    def trained(r: dict) -> str:
        prec = "" if r["precision"] == "fp32" else f", {r['precision']}"
        return (f"{r['epochs']} of the seed's {r['seed_epochs']} epochs ({r['steps']:,} steps{prec}), "
                f"{r['seconds'] / 60:.1f} min")

    def samples(name: str, r: dict, f: dict, first: str = "") -> None:
        if "frechet_distance" in f:
            rows.append(f"| {name} | {first} | Fréchet distance, {f['n_samples']:,} samples (floor: train vs test) | "
                        f"{fmt(f['frechet_distance'])} ({fmt(f['frechet_floor'])}) | lower is better; the floor "
                        "is a perfect model's |")
            rows.append(f"| {name} | | classes seen; class entropy (max 2.30 nats) | {f['classes_seen']}; "
                        f"{fmt(f['class_entropy'])} | 10; 2.30 |")

    if "rbm" in results:
        r = results["rbm"]
        f = figures_of(r)
        name = "RBM 784-500, CD-1, SGD lr 0.1, batch 64"
        rows.append(f"| {name} | {trained(r)} | test log-likelihood, AIS {f['ais_steps']:,} x {f['ais_chains']}, "
                    f"nats | {fmt(f['test_log_likelihood'], f['test_log_likelihood_se'])} | {PAPERS['rbm']} |")
        rows.append(f"| {name} | | pseudo-log-likelihood, nats | "
                    f"{fmt(f['pseudo_log_likelihood'], f['pseudo_log_likelihood_se'])} | (none published) |")
        samples(name, r, f)
    if "vae" in results:
        r = results["vae"]
        f = figures_of(r)
        name = "VAE 784-512-512-8, Bernoulli, Adam 1e-3, batch 128"
        rows.append(f"| {name} | {trained(r)} | test -ELBO, binarised, nats | "
                    f"{fmt(f['neg_elbo'], f['neg_elbo_se'])} | |")
        rows.append(f"| {name} | | test -log p(x), IWAE k = {f['iwae_k']:,} on {f['vae_n_test']:,} images, nats | "
                    f"{fmt(f['iwae_nll'], f['iwae_nll_se'])} | {PAPERS['vae_iwae']} |")
        if "test_loss_grey" in r:
            ex = results.get("examples_vae", {})
            ref = PAPERS["vae_examples"]
            if "test_loss_grey" in ex:
                ref += f"; its architecture trained here for {ex['epochs']} epochs: {fmt(ex['test_loss_grey'])}"
            rows.append(f"| {name} | | pytorch/examples' test loss (grey pixels, one z draw), nats | "
                        f"{fmt(r['test_loss_grey'])} | {ref} |")
        samples(name, r, f)
    if "gan" in results:
        r = results["gan"]
        samples("GAN (the seed's DCGAN), Adam 1e-4, batch 256", r, figures_of(r), trained(r))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", help="folder with MNIST (torchvision layout)")
    p.add_argument("--dataset", default="mnist", help="mnist (default) or digits (offline smoke runs)")
    p.add_argument("--models", default="rbm,vae,gan", help="any of rbm, vae, gan (and examples-vae alone)")
    p.add_argument("--rbm-epochs", type=int, default=10, help="the seed's 10")
    p.add_argument("--vae-epochs", type=int, default=10, help="the seed has 100; pytorch/examples' default 10")
    p.add_argument("--gan-epochs", type=int, default=3, help="the seed has 30: 1.5 h on 2 cores in fp32")
    p.add_argument("--gan-precision", default="bf16", help="bf16 autocast halves the GAN's CPU time (fp32: seed)")
    p.add_argument("--vae-n-test", type=int, default=2_000, help="test images for IWAE k = 5,000 (0: all 10,000)")
    p.add_argument("--n-samples", type=int, default=10_000, help="samples for the Fréchet distance")
    p.add_argument("--examples-vae", action=argparse.BooleanOptionalAction, default=True,
                   help="with the VAE, also train pytorch/examples' VAE architecture for 10 epochs (2 CPU minutes)")
    p.add_argument("--cache-dir", help="classifier cache (default $GENLIB_CACHE or ~/.cache/genlib)")
    p.add_argument("--threads", type=int, help="torch threads (default: PyTorch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smoke run: a few steps and small evaluations")
    p.add_argument("--out", help="also write every figure as JSON here")
    p.add_argument("--from-json", nargs="+", metavar="FILE",
                   help="print the table from earlier --out files (merged in order) instead of training")
    args = p.parse_args(argv)
    if args.from_json:
        merged: dict[str, Any] = {}
        for f in args.from_json:
            merged.update(json.loads(Path(f).read_text()))
        print(table(merged))
        return 0

    import torch

    from genlib.data import load_dataset
    from genlib.quality.evaluator import QualityEvaluator
    from genlib.quality.records import evaluate_record
    from genlib.quality.settings import settings_for

    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    data = load_dataset(args.dataset, root=args.data_root, device="cpu", download=False)
    settings = settings_for("full", vae_n_test=args.vae_n_test or None, n_samples=args.n_samples)
    if args.quick:
        settings = settings_for("full", ais_steps=200, ais_chains=16, iwae_k=20, vae_n_test=200, n_samples=500)
    progress_t = {"t": 0.0}

    def progress(fraction: float, message: str) -> None:
        if time.monotonic() - progress_t["t"] > 20:
            progress_t["t"] = time.monotonic()
            log(f"  {fraction:4.0%} {message}")

    evaluator = QualityEvaluator(data, cache_dir=args.cache_dir)
    results: dict[str, Any] = {"dataset": data.name, "settings": dataclasses.asdict(settings),
                               "torch_threads": torch.get_num_threads()}
    epochs = {"rbm": args.rbm_epochs, "vae": args.vae_epochs, "gan": args.gan_epochs}
    for name in [m.strip() for m in args.models.split(",") if m.strip() in epochs]:
        log(f"{name}: training {epochs[name]} epochs")
        r = train_model(name, data, epochs=epochs[name], seed=args.seed, max_steps=20 if args.quick else None,
                        precision=args.gan_precision if name == "gan" else "fp32")
        model = r.pop("model")
        log(f"{name}: trained in {r['seconds']:.0f} s; evaluating")
        model.eval()
        r["quality"] = record = evaluate_record(evaluator, model, settings, r["steps"], on_progress=progress)
        if record["error"] is not None:
            log(f"{name}: the evaluation failed: {record['error']}\n{record.get('traceback', '')}")
            return 1
        r["eval_seconds"] = record["seconds"]
        if name == "vae":
            r["test_loss_grey"] = grey_pixel_loss(model.encode, model.decode_logits, data.x_test, args.seed)
        log(f"{name}: evaluated in {r['eval_seconds']:.0f} s")
        results[name] = r
        if args.out:  # what is done so far survives an interrupted run
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=1, default=str) + "\n")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.examples_vae and ("vae" in models or "examples-vae" in models):
        log("examples-vae: training pytorch/examples' architecture")
        results["examples_vae"] = examples_vae(data, epochs=1 if args.quick else 10, seed=args.seed)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1, default=str) + "\n")
    classifier = evaluator.classifier(False)
    if classifier is not None:
        results["classifier_test_accuracy"] = classifier[1].get("test_accuracy")
    results["seconds"] = time.perf_counter() - t_start
    text = table(results)
    print(text)
    acc = results.get("classifier_test_accuracy")
    print(f"\nTotal {results['seconds'] / 60:.1f} min on {torch.get_num_threads()} torch threads"
          + (f"; the Fréchet distances use genlib's classifier, {acc:.2%} accurate on the test set." if acc else "."))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({**results, "table": text}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
