"""The command line: `python -m genlib train|sample|evaluate|worker|runs`, each ending with one JSON line on stdout."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from genlib.config import Bounds, declared
from genlib.models import model_class, model_names

# TrainConfig fields the train command sets from flags of the same name (device, dataset and data_root aside)
TRAIN_FLAGS = ("epochs", "max_steps", "batch_size", "lr", "ema", "precision", "seed", "log_every", "threads",
               "checkpoint_every_s", "snapshot_every_s", "live_every_s", "n_samples", "sample_seed")


def _int_tuple(text: str) -> tuple[int, ...]:
    """'16,32,64,64' -> (16, 32, 64, 64), for --channels."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None


def model_flags() -> dict[str, dict[str, str]]:
    """Each registered model's options: model -> {flag, with underscores: config field}. Every config field that
    declares its bounds (genlib.config) has one, named after the field unless it declares another (`cli=`): the
    RBM's n_hidden is --hidden, as the VAE's and the EBM's hidden are."""
    return {m: {(o.flag or name): name for name, _, o in declared(model_class(m).config_class)} for m in model_names()}


def _flag_spec(b: Bounds, default: Any) -> dict[str, Any]:
    """argparse keywords for a field with Bounds `b`: a flag given sets the field, one not given leaves it (None)."""
    if b.kind == "bool":  # a switch that is off by default only turns on; one that is on by default gets --no-<flag>
        return ({"action": argparse.BooleanOptionalAction, "default": None} if default else
                {"action": "store_const", "const": True})
    return {"int": {"type": int}, "number": {"type": float}, "ints": {"type": _int_tuple},
            "choice": {"choices": list(b.options)}}[b.kind]


def _add_model_options(t: argparse.ArgumentParser) -> None:
    """The models' options, one group per model, from their configs' declarations: a flag shared by several models
    (--hidden) is listed once, under the first, its help saying what it sets in each ("RBM: hidden units; VAE, EBM:
    hidden layer width")."""
    specs: dict[str, dict[str, Any]] = {}  # flag -> argparse keywords
    helps: dict[str, dict[str, list[str]]] = {}  # flag -> help -> the titles of the models it describes
    groups: dict[str, list[str]] = {}  # model -> the flags first declared by it
    for m in model_names():
        cls = model_class(m)
        defaults = {f.name: f.default for f in dataclasses.fields(cls.config_class)}
        for name, b, o in declared(cls.config_class):
            flag = o.flag or name
            spec = _flag_spec(b, defaults[name])
            if flag in specs and specs[flag] != spec:
                raise ValueError(f"--{flag.replace('_', '-')} means different things for {m} and another model "
                                 f"({spec} vs {specs[flag]}): give one of the config fields another flag (cli=)")
            if flag not in specs:
                specs[flag] = spec
                groups.setdefault(m, []).append(flag)
            helps.setdefault(flag, {}).setdefault(o.help or name.replace("_", " "), []).append(cls.title)
    for m, flags in groups.items():
        g = t.add_argument_group(model_class(m).title)
        for flag in flags:
            text = "; ".join(f"{', '.join(titles)}: {h}" for h, titles in helps[flag].items())
            g.add_argument(f"--{flag.replace('_', '-')}", help=text.replace("%", "%%"), **specs[flag])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m genlib", description="Train, sample and inspect generative models.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (or resume a run) in the foreground")
    names = model_names()
    t.add_argument("model", nargs="?", choices=sorted(names),
                   help=f"{', '.join(names[:-1])} or {names[-1]} (omit with --resume)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    t.add_argument("--dataset", help="mnist, fashion-mnist or digits (offline); default mnist")
    t.add_argument("--data-root", help="folder with the datasets (default $GENLIB_DATA_ROOT or ./data)")
    t.add_argument("--epochs", type=int, help="total epochs from the run's start (default: the seed's)")
    t.add_argument("--max-steps", type=int, help="stop after this many steps from the run's start")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, help="learning rate (default: the seed's)")
    t.add_argument("--ema", type=float, help="decay of the moving average of the weights that samples and "
                   "checkpoints show, e.g. 0.999 (0: off, the seed's; the lecture recipes' value otherwise)")
    t.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    t.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 autocast where the hardware has it")
    t.add_argument("--seed", type=int)
    t.add_argument("--log-every", type=int)
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--preset", choices=["seed", "lecture", "fast"],
                   help="a named recipe (genlib/presets.py) that the other flags override: 'seed' (the seed's "
                        "settings), 'lecture' (fast and good on a CPU); 'fast' is the GAN's --widths fast with the "
                        "seed's training, as before")
    t.add_argument("--checkpoint-every-s", type=float, help="seconds between resumable checkpoints")
    t.add_argument("--snapshot-every-s", type=float, help="seconds between weight snapshots for the pages")
    t.add_argument("--live-every-s", type=float, help="seconds between live sample grids")
    t.add_argument("--n-samples", type=int, help="images in the fixed-noise sample grid")
    t.add_argument("--sample-seed", type=int, help="seed of the sample grid's fixed noise")
    t.add_argument("--runs-dir", help="where run folders go (default $GENLIB_RUNS_DIR or ./runs)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--evaluate", choices=["none", "cheap", "final"], default="cheap",
                   help="quality figures after training (and every ~15 s during it, within 10%% of its time), "
                        "recorded in the run folder: 'cheap' (default: seconds), 'final' (the papers' AIS and "
                        "5,000 samples: a minute or more on a CPU, and once ~1 min to train the dataset's "
                        "classifier), or 'none'")
    _add_model_options(t)

    s = sub.add_parser("sample", help="write samples from a run's last checkpoint to an .npz file")
    s.add_argument("run_dir")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")

    e = sub.add_parser("evaluate", help="quality figures of a run's last checkpoint (likelihoods, Fréchet distance), "
                                        "recorded in the run folder as the dashboard's are")
    e.add_argument("run_dir")
    e.add_argument("--kind", choices=["cheap", "final", "full"], default="full",
                   help="genlib.quality.settings' CHEAP (seconds), FINAL (the papers' AIS, 5,000 samples: a minute "
                        "or more) or FULL (default: the papers' settings throughout, minutes to ten on a CPU)")
    e.add_argument("--quick", action="store_true", help="the same as --kind cheap")
    e.add_argument("--device", default="auto")
    e.add_argument("--data-root", help="folder with the datasets (default: the run's, then $GENLIB_DATA_ROOT)")
    e.add_argument("--k", type=int, help="VAE: importance samples per test image (full 5000, final 500, cheap 50)")
    e.add_argument("--ais-steps", type=int, help="RBM: AIS intermediate distributions (full 14500, cheap 500)")
    e.add_argument("--ais-chains", type=int, help="RBM: parallel AIS chains (full 100, cheap 32)")
    e.add_argument("--n-samples", type=int, help="generated images for the Fréchet distance (full 10000, cheap 1000)")
    e.add_argument("--n-test", type=int, help="test images for the likelihoods (default: the kind's)")
    e.add_argument("--seed", type=int)
    e.add_argument("--train-classifier", action=argparse.BooleanOptionalAction, default=None,
                   help="train and cache the dataset's classifier if none is cached (about a CPU minute for MNIST; "
                        "default: final and full do, cheap does not)")
    e.add_argument("--cache-dir", help="classifier cache (default $GENLIB_CACHE or ~/.cache/genlib)")

    w = sub.add_parser("worker", help=argparse.SUPPRESS)
    w.add_argument("run_dir")
    w.add_argument("--nice", type=int, default=0, help="lower this worker's CPU priority by this much "
                   "(genlib/jobs/priority.py)")

    sb = sub.add_parser("standby", help=argparse.SUPPRESS)  # a worker started ahead of time (genlib.jobs.standby)
    sb.add_argument("--nice", type=int, default=0, help="lower this worker's CPU priority by this much "
                   "(genlib/jobs/priority.py)")

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
    all_flags = model_flags()
    for flag, fld in all_flags[model].items():
        value = getattr(args, flag, None)
        if value is not None:
            out[fld] = value
    for m, flags in all_flags.items():  # a flag of another model is a mistake, not something to ignore
        if m != model:
            for flag in flags:
                if flag not in all_flags[model] and getattr(args, flag, None) is not None:
                    raise ValueError(f"--{flag.replace('_', '-')} is a {model_class(m).title} option, not a "
                                     f"{model_class(model).title} one")
    return out


def train_configs(args: argparse.Namespace, model_name: str) -> tuple[dict[str, Any], Any]:
    """(model config as a dict, TrainConfig) of a new run from the train command's flags: the --preset recipe (or
    the model's defaults with the seed's lr, batch size and epochs), each flag given replacing its field."""
    from genlib.models import make_config
    from genlib.training import TrainConfig, default_train_config

    recipe = _recipe(args.preset, model_name)
    overrides = {**(recipe.model_config if recipe else {}), **_model_config(args, model_name)}
    if args.preset == "fast" and "preset" not in overrides:
        overrides["preset"] = "fast"  # the GAN's former --preset fast: widths / 4, the seed's training
    shape = _dataset_image_shape(args.dataset)
    fields = {f.name for f in dataclasses.fields(model_class(model_name).config_class)}
    if shape is not None and "image_shape" in fields:
        overrides["image_shape"] = shape  # a parametric dataset's size is an option of its name (ising: L x L)
    model_cfg = dataclasses.asdict(make_config(model_name, overrides))
    flags = {name: getattr(args, name) for name in TRAIN_FLAGS}
    if recipe is not None:
        return model_cfg, TrainConfig(**recipe.train_values(dataset=args.dataset, data_root=args.data_root,
                                                            device=args.device, **flags))
    return model_cfg, default_train_config(model_name, dataset=args.dataset, data_root=args.data_root,
                                           device=args.device, **flags)


def _recipe(preset: str | None, model: str) -> Any:
    """The genlib.presets recipe --preset names for `model`, or None (no --preset, or the GAN's 'fast' widths)."""
    if preset is None or preset == "fast":
        if preset == "fast" and model != "gan":
            raise ValueError("--preset fast is the GAN's small network; for other models use seed or lecture")
        return None
    from genlib.presets import recipe

    return recipe(model, preset)


def _dataset_image_shape(dataset: str | None) -> tuple[int, int, int] | None:
    """(C, H, W) of a dataset whose image size is set by its name's options (ising: 1 x L x L), else None."""
    if dataset and dataset.partition(":")[0] == "ising":
        from genlib.ising.dataset import parse

        L = parse(dataset.partition(":")[2]).L
        return (1, L, L)
    return None


def _train(args: argparse.Namespace) -> int:
    from genlib.data import DatasetUnavailable

    try:
        summary = run_train_command(args)
    except DatasetUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    if summary["state"] in ("failed", "diverged"):
        print(f"error: {summary.get('error')}", file=sys.stderr)
        return 1
    return 0


def run_train_command(args: argparse.Namespace) -> dict[str, Any]:
    """The train command's work, shared with genlib.api.train: create the run folder from `args` (or resume one),
    train it in the foreground through genlib.jobs.worker.run_job with a progress line on stderr (unless
    args.quiet), and return the summary (the CLI's last line). Raises DatasetUnavailable when the dataset is neither
    on disk nor downloadable."""
    from genlib.data import dataset_available, load_dataset
    from genlib.devices import resolve_device
    from genlib.runs import ownership
    from genlib.runs.resume import resumed_train_config
    from genlib.runs.store import RunStore, open_run
    from genlib.jobs.worker import run_job

    lock = None  # the run folder's owner lock, held from before the first write until the job has recorded its end
    try:
        if args.resume:
            run = open_run(args.resume, RunStore(args.runs_dir) if args.runs_dir else None)
            record, lock = claim_for_resume(run)  # refused (nothing touched) while another process owns the run
            record = record.with_train_config(resumed_train_config(record.train_config, epochs=args.epochs,
                                                                   max_steps=args.max_steps))
            run.write_info(record)
            run.send(command="run")
            model_name = record.model
        else:
            if not args.model:
                raise ValueError("name a model (rbm, vae, gan or ebm) or give --resume RUN_DIR")
            model_name = args.model
            model_cfg, cfg = train_configs(args, model_name)
            resolve_device(cfg.device)  # refuse a missing device before anything is written
            if not dataset_available(cfg.dataset, cfg.data_root):
                load_dataset(cfg.dataset, root=cfg.data_root)  # downloads if it can, else DatasetUnavailable
            run = RunStore(args.runs_dir).create({"model": model_name, "model_config": model_cfg,
                                                  "train_config": dataclasses.asdict(cfg), "dataset": cfg.dataset})
            lock = ownership.take(run.path, what=FOREGROUND)
            run.send(command="run", lr=cfg.lr)
        bar = None if args.quiet else _ProgressBar(sys.stderr)
        report = EvaluationReport(sys.stderr, getattr(args, "evaluate", "cheap"), quiet=args.quiet,
                                  skip_hint="--evaluate none skips it", before=bar.close if bar else None)
        summary = run_job(run, on_log=bar, evaluate=report.kind, on_evaluation_plan=report.plan,
                          on_evaluation_progress=report.progress, on_stage=report.stage, owner_lock=lock)
    finally:
        if lock is not None:
            lock.release()
    if bar:
        bar.close()
    report.close()
    return {"model": model_name, **summary}


FOREGROUND = "a foreground training (python -m genlib train)"  # the owner's name in a refusal


def claim_for_resume(run: Any) -> tuple[Any, Any]:
    """The run's record and its owner lock (genlib.runs.ownership) when the CLI may resume it; ValueError, before
    any file is touched, for a pretrained run and for one that a live process owns (a worker, the server that queued
    it, an evaluation), naming it. The lock closes the race between these checks and a server's worker starting on
    the run: whichever takes it first trains, the other refuses."""
    from genlib.jobs.manager import refuse_during_evaluation
    from genlib.runs import ownership
    from genlib.runs.pretrained import refuse_if_pretrained

    record = run.record()
    refuse_if_pretrained(run, "resumed")
    owner = run.owner()
    if owner is not None:
        raise ValueError(f"run {run.id} is owned by {owner.describe()}: it cannot be resumed here while that "
                         "process holds it. Stop it there (or wait for it to end), then resume it.")
    refuse_during_evaluation(run, "resumed")
    return record, ownership.take(run.path, what=FOREGROUND)


class _ProgressBar:
    """One line on stderr, redrawn at most ten times a second: step, epoch, images/s, time left, metrics."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.last, self.closed = stream, 0.0, False

    def __call__(self, row: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 or self.closed:
            return
        self.last = now
        metrics = " ".join(f"{k}={v:.4g}" for k, v in row.items()
                           if isinstance(v, float) and k not in ("images_per_second", "seconds", "lr", "t"))
        self.stream.write(f"\rstep {row['step']} epoch {row['epoch']} | {row['images_per_second']:.0f} img/s | "
                          f"{metrics}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if not self.closed:  # once: the end-of-run evaluation's report closes it before its own lines
            self.closed = True
            self.stream.write("\n")
            self.stream.flush()


class EvaluationReport:
    """An evaluation's announcement and progress on stderr: what it computes and its expected time on this machine
    (timed by genlib.quality.estimate's probes), then "final evaluation: 30% (AIS step ...), ~60 s left", redrawn
    at most twice a second on a terminal, else a line at most every 5 s (and the last)."""

    def __init__(self, stream: Any, kind: str, *, quiet: bool = False, skip_hint: str = "",
                 before: Any = None) -> None:
        self.stream, self.kind, self.quiet, self.skip_hint = stream, kind, quiet, skip_hint
        self.before = before  # called first (the training's progress bar ends its line)
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.clock: Any = None
        self.last, self.drawn = 0.0, False

    def stage(self, message: str) -> None:
        """A step after training that is not the evaluation (the last checkpoint and sample grid)."""
        if self.before is not None:
            self.before()
        if not self.quiet:
            self.stream.write(f"{message}...\n")
            self.stream.flush()

    def plan(self, stages: dict[str, float]) -> None:
        from genlib.quality.estimate import StagedProgress, describe

        if self.before is not None:
            self.before()
        self.clock = StagedProgress(stages)
        hint = f"; {self.skip_hint}" if self.skip_hint else ""
        self.stream.write(f"{self.kind} evaluation ({describe(stages)} on this machine{hint})\n")
        self.stream.flush()

    def progress(self, stage_fraction: float, message: str) -> None:
        if self.quiet or self.clock is None:
            return
        from genlib.quality.estimate import format_seconds

        fraction = self.clock.fraction(stage_fraction, message)
        now = time.monotonic()
        if now - self.last < (0.5 if self.tty else 5.0) and fraction < 1.0:
            return
        self.last = now
        line = (f"{self.kind} evaluation: {fraction:4.0%} ({message}), "
                f"~{format_seconds(self.clock.seconds_left(fraction))} left")
        self.stream.write(f"\r{line}\x1b[K" if self.tty else f"{line}\n")
        self.drawn = self.tty
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _sample(args: argparse.Namespace) -> int:
    import numpy as np

    run, step, images = sample_run(args.run_dir, args.n, seed=args.seed, device=args.device)
    images = images.numpy()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=images.astype(np.float32))
    print(json.dumps({"run_dir": str(run.path), "out": str(out), "shape": list(images.shape), "step": step}))
    return 0


def sample_run(run_dir: Any, n: int, *, seed: int = 0, device: str = "auto") -> tuple[Any, int, Any]:
    """The sample command's work, shared with genlib.api.sample: (run, checkpoint step, images), the images n new
    samples from the run's newest weights (Run.latest_weights) as a float32 CPU tensor (n, C, H, W) in [0, 1]."""
    import torch

    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint
    from genlib.devices import resolve_device
    from genlib.runs.store import open_run

    if not 1 <= n <= 100_000:
        raise ValueError(f"n (the number of samples) must be between 1 and 100000, got {n}")
    run = open_run(run_dir)
    path = run.require_latest_weights()
    dev = resolve_device(device)
    ckpt = load_checkpoint(path, device=dev)
    model = model_from_checkpoint(ckpt, device=dev)
    images = model.sample(n, generator=torch.Generator().manual_seed(seed)).float().cpu()  # (n, C, H, W)
    return run, ckpt.step, images


def _evaluate(args: argparse.Namespace) -> int:
    """One evaluation of genlib.quality (the dashboard's and the worker's), recorded in the run folder; its record,
    the run's identity and the figures grouped per model as the JSON line (genlib.quality.records.result_line)."""
    from genlib.data import dataset_available, default_data_root
    from genlib.quality.records import evaluate_saved_run, evaluation_device, result_line
    from genlib.quality.settings import settings_for
    from genlib.runs.store import open_run

    kind = "cheap" if args.quick else args.kind
    settings = settings_for(kind, iwae_k=args.k, ais_steps=args.ais_steps, ais_chains=args.ais_chains,
                            n_samples=args.n_samples, n_test=args.n_test, vae_n_test=args.n_test, seed=args.seed,
                            train_classifier=args.train_classifier)
    run = open_run(args.run_dir)
    run.require_latest_weights()  # refused before anything is recorded
    info = run.info()
    dataset, root = run.dataset(), args.data_root or (info.get("train_config") or {}).get("data_root")
    if not dataset_available(dataset, root):  # said before anything is recorded, as a missing run folder is
        print(f"error: the run's dataset {dataset} is not on disk in {root or default_data_root()}: pass "
              "--data-root (the folder that holds it)", file=sys.stderr)
        return 2
    device = evaluation_device(args.device)
    report = EvaluationReport(sys.stderr, kind)
    record = evaluate_saved_run(run, settings, device=device, data_root=args.data_root, cache_dir=args.cache_dir,
                                progress=report.progress, on_plan=report.plan)
    report.close()
    print(json.dumps(result_line(run, record, device=device), default=str))
    if record.get("error"):
        print(f"error: {record['error']}", file=sys.stderr)
        return 1
    return 0


def _worker(args: argparse.Namespace) -> int:
    from genlib.runs.store import Run
    from genlib.jobs.worker import run_and_report

    from genlib.jobs.priority import lower_priority

    # background training yields the CPU to the server and the browsers that watch it
    lowered = lower_priority(args.nice)
    if lowered:
        print("; ".join(lowered), flush=True)
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
