"""The command line: `python -m genlib train|sample|evaluate|worker|runs`, each ending with one JSON line on stdout."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

# Model options: CLI flag -> (model, config field). --hidden means n_hidden for the RBM, hidden for the VAE.
MODEL_FLAGS: dict[str, dict[str, str]] = {
    "rbm": {"hidden": "n_hidden", "k": "k", "pcd": "persistent", "momentum": "momentum",
            "weight_decay": "weight_decay", "binarize": "binarize", "centering": "centering"},
    "vae": {"hidden": "hidden", "latent": "latent", "decoder": "decoder", "beta": "beta"},
    "gan": {"preset": "preset", "noise_dim": "noise_dim", "channels_last": "channels_last"},
    "ebm": {"langevin_steps": "langevin_steps", "step_size": "step_size", "langevin_noise": "noise",
            "buffer_size": "buffer_size", "reg_weight": "reg_weight", "sample_steps": "sample_steps"},
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m genlib", description="Train, sample and inspect generative models.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (or resume a run) in the foreground")
    t.add_argument("model", nargs="?", choices=sorted(MODEL_FLAGS), help="rbm, vae, gan or ebm (omit with --resume)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    t.add_argument("--dataset", help="mnist, fashion-mnist or digits (offline); default mnist")
    t.add_argument("--data-root", help="folder with the datasets (default $GENLIB_DATA_ROOT or ./data)")
    t.add_argument("--epochs", type=int, help="total epochs from the run's start (default: the seed's)")
    t.add_argument("--max-steps", type=int, help="stop after this many steps from the run's start")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, help="learning rate (default: the seed's)")
    t.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    t.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 autocast where the hardware has it")
    t.add_argument("--seed", type=int)
    t.add_argument("--log-every", type=int)
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--runs-dir", help="where run folders go (default $GENLIB_RUNS_DIR or ./runs)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    g = t.add_argument_group("RBM")
    g.add_argument("--hidden", type=int, help="hidden units (RBM) or hidden layer width (VAE)")
    g.add_argument("--k", type=int, help="Gibbs steps per update (CD-k)")
    g.add_argument("--pcd", action="store_const", const=True, help="persistent contrastive divergence")
    g.add_argument("--momentum", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--binarize", choices=["stochastic", "threshold"])
    g.add_argument("--centering", action="store_const", const=True,
                   help="centred gradient steps (Melchior et al. 2016): offsets at the data's and hiddens' means")
    g = t.add_argument_group("VAE")
    g.add_argument("--latent", type=int, help="latent dimensions (2 to 64)")
    g.add_argument("--decoder", choices=["bernoulli", "gaussian"])
    g.add_argument("--beta", type=float, help="weight of the KL term")
    g = t.add_argument_group("GAN")
    g.add_argument("--preset", choices=["seed", "fast"])
    g.add_argument("--noise-dim", type=int)
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="GAN: NHWC layout (default on; --no-channels-last for NCHW)")
    g = t.add_argument_group("EBM")
    g.add_argument("--langevin-steps", type=int, help="Langevin steps per training batch")
    g.add_argument("--step-size", type=float, help="Langevin step size (multiplies the clipped dE/dx)")
    g.add_argument("--langevin-noise", type=float, help="standard deviation of the Langevin noise")
    g.add_argument("--buffer-size", type=int, help="replay buffer of negatives")
    g.add_argument("--reg-weight", type=float, help="weight of the energy-magnitude regulariser")
    g.add_argument("--sample-steps", type=int, help="Langevin steps when sampling from noise")

    s = sub.add_parser("sample", help="write samples from a run's last checkpoint to an .npz file")
    s.add_argument("run_dir")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")

    e = sub.add_parser("evaluate", help="quality figures of a run's last checkpoint (likelihoods, Fréchet distance)")
    e.add_argument("run_dir")
    e.add_argument("--quick", action="store_true", help="cheap settings (seconds to a minute), not the papers'")
    e.add_argument("--device", default="auto")
    e.add_argument("--data-root", help="folder with the datasets (default: the run's, then $GENLIB_DATA_ROOT)")
    e.add_argument("--k", type=int, help="VAE: importance samples per test image (full 5000, quick 50)")
    e.add_argument("--ais-steps", type=int, help="RBM: AIS intermediate distributions (full 14500, quick 1000)")
    e.add_argument("--ais-chains", type=int, help="RBM: parallel AIS chains (100)")
    e.add_argument("--n-samples", type=int, help="generated images for the Fréchet distance (full 10000, quick 1000)")
    e.add_argument("--n-test", type=int, help="test images for the likelihoods (default all)")
    e.add_argument("--seed", type=int)
    e.add_argument("--train-classifier", action="store_true",
                   help="train and cache the dataset's classifier if none is cached (a few CPU minutes for MNIST)")
    e.add_argument("--cache-dir", help="classifier cache (default $GENLIB_CACHE or ~/.cache/genlib)")

    w = sub.add_parser("worker", help=argparse.SUPPRESS)
    w.add_argument("run_dir")
    w.add_argument("--nice", type=int, default=0, help="lower this worker's CPU priority by this much (os.nice)")

    sb = sub.add_parser("standby", help=argparse.SUPPRESS)  # a worker started ahead of time (genlib.jobs.standby)
    sb.add_argument("--nice", type=int, default=0, help="lower this worker's CPU priority by this much (os.nice)")

    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--runs-dir")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("train", "worker"):
        from genlib.devices import flush_denormals_in_process

        flush_denormals_in_process()  # before torch's thread pool starts, so every intra-op thread inherits it
    try:
        return {"train": _train, "sample": _sample, "evaluate": _evaluate, "worker": _worker,
                "standby": _standby, "runs": _runs}[args.command](args)
    except (ValueError, FileNotFoundError, OSError) as e:
        # Bad input or missing files: a message that says what to do, never a traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2


def _model_config(args: argparse.Namespace, model: str) -> dict[str, Any]:
    out = {}
    for flag, fld in MODEL_FLAGS[model].items():
        value = getattr(args, flag, None)
        if value is not None:
            out[fld] = value
    for m, flags in MODEL_FLAGS.items():  # a flag of another model is a mistake, not something to ignore
        if m != model:
            for flag in flags:
                if flag not in MODEL_FLAGS[model] and getattr(args, flag, None) is not None:
                    raise ValueError(f"--{flag.replace('_', '-')} is a {m.upper()} option, not a {model.upper()} one")
    return out


def _dataset_image_shape(dataset: str | None) -> tuple[int, int, int] | None:
    """(C, H, W) of a dataset whose image size is set by its name's options (ising: 1 x L x L), else None."""
    if dataset and dataset.partition(":")[0] == "ising":
        from genlib.ising.dataset import parse

        L = parse(dataset.partition(":")[2]).L
        return (1, L, L)
    return None


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    from genlib.data import DatasetUnavailable, dataset_available, load_dataset
    from genlib.devices import resolve_device
    from genlib.models import make_config, model_class
    from genlib.runs.store import RunStore, open_run
    from genlib.training import TrainConfig, default_train_config
    from genlib.jobs.worker import run_job

    if args.resume:
        run = open_run(args.resume, RunStore(args.runs_dir) if args.runs_dir else None)
        info = run.info()
        tc = dict(info["train_config"])
        if args.epochs is not None:
            tc["epochs"] = args.epochs
            tc["max_steps"] = None
        if args.max_steps is not None:
            tc["max_steps"] = args.max_steps
        info["train_config"] = dataclasses.asdict(TrainConfig(**tc))
        run.write_info(info)
        run.send(command="run")
        model_name = info["model"]
    else:
        if not args.model:
            raise ValueError("name a model (rbm, vae, gan or ebm) or give --resume RUN_DIR")
        model_name = args.model
        overrides = _model_config(args, model_name)
        shape = _dataset_image_shape(args.dataset)
        fields = {f.name for f in dataclasses.fields(model_class(model_name).config_class)}
        if shape is not None and "image_shape" in fields:
            overrides["image_shape"] = shape  # a parametric dataset's size is an option of its name (ising: L x L)
        model_cfg = dataclasses.asdict(make_config(model_name, overrides))
        cfg = default_train_config(model_name, dataset=args.dataset, data_root=args.data_root, epochs=args.epochs,
                                   max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                                   device=args.device, precision=args.precision, seed=args.seed,
                                   log_every=args.log_every, threads=args.threads)
        resolve_device(cfg.device)  # refuse a missing device before anything is written
        if not dataset_available(cfg.dataset, cfg.data_root):
            try:
                load_dataset(cfg.dataset, root=cfg.data_root)  # downloads when the network allows
            except DatasetUnavailable as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
        run = RunStore(args.runs_dir).create({"model": model_name, "model_config": model_cfg,
                                              "train_config": dataclasses.asdict(cfg), "dataset": cfg.dataset})
        run.send(command="run", lr=cfg.lr)
    bar = None if args.quiet else _ProgressBar(sys.stderr)
    summary = run_job(run, on_log=bar)
    if bar:
        bar.close()
    print(json.dumps({"model": model_name, **summary}))
    if summary["state"] in ("failed", "diverged"):
        print(f"error: {summary.get('error')}", file=sys.stderr)
        return 1
    return 0


class _ProgressBar:
    """One line on stderr, redrawn at most ten times a second: step, epoch, images/s, time left, metrics."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.last = stream, 0.0

    def __call__(self, row: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self.last < 0.1:
            return
        self.last = now
        metrics = " ".join(f"{k}={v:.4g}" for k, v in row.items()
                           if isinstance(v, float) and k not in ("images_per_second", "seconds", "lr", "t"))
        self.stream.write(f"\rstep {row['step']} epoch {row['epoch']} | {row['images_per_second']:.0f} img/s | "
                          f"{metrics}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint
    from genlib.devices import resolve_device
    from genlib.runs.store import open_run

    if not 1 <= args.n <= 100_000:
        raise ValueError(f"--n must be between 1 and 100000, got {args.n}")
    run = open_run(args.run_dir)
    path = run.checkpoint_path if run.checkpoint_path.exists() else run.snapshot_path
    if not path.exists():
        raise FileNotFoundError(f"run {run.id} has no checkpoint yet")
    device = resolve_device(args.device)
    ckpt = load_checkpoint(path, device=device)
    model = model_from_checkpoint(ckpt, device=device)
    images = model.sample(args.n, generator=torch.Generator().manual_seed(args.seed)).float().cpu().numpy()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=images.astype(np.float32))
    print(json.dumps({"run_dir": str(run.path), "out": str(out), "shape": list(images.shape), "step": ckpt.step}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from genlib.data import DatasetUnavailable
    from genlib.quality.evaluate import evaluate_run, settings_for
    from genlib.runs.store import open_run

    settings = settings_for(args.quick, iwae_k=args.k, ais_steps=args.ais_steps, ais_chains=args.ais_chains,
                            n_samples=args.n_samples, n_test=args.n_test, seed=args.seed)
    last = [0.0]

    def progress(fraction: float, message: str) -> None:  # one stderr line per second at most, and the last
        now = time.monotonic()
        if now - last[0] >= 1.0 or fraction >= 1.0:
            last[0] = now
            print(f"[{100 * fraction:5.1f}%] {message}", file=sys.stderr, flush=True)

    try:
        result = evaluate_run(open_run(args.run_dir), quick=args.quick, device=args.device, data_root=args.data_root,
                              cache_dir=args.cache_dir, train_classifier=args.train_classifier, settings=settings,
                              progress=progress)
    except DatasetUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from genlib.runs.store import Run
    from genlib.jobs.worker import run_and_report

    if args.nice > 0:
        os.nice(args.nice)  # background training yields the CPU to the server and the browsers that watch it
    return run_and_report(Run(Path(args.run_dir)))


def _standby(args: argparse.Namespace) -> int:
    from genlib.jobs.standby import serve

    return serve(sys.stdin, args.nice)


def _runs(args: argparse.Namespace) -> int:
    from genlib.runs.store import RunStore

    for run in RunStore(args.runs_dir).list():
        s = run.state()
        print(json.dumps({"run_id": run.id, "model": run.info().get("model"), "state": run.effective_state(),
                          "step": s.get("step"), "metrics": s.get("metrics")}))
    return 0
