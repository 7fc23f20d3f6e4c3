"""Time to quality: each model's recipes (genlib/presets.py) trained from scratch through the dashboard's job path, their
snapshots judged after the run by the project's classifier (Fréchet distance on 2,000 samples against its train-vs-test
floor at the same count, the class shares, as Heusel et al. 2017) and the model's own likelihood (RBM: AIS test
log-likelihood, Salakhutdinov & Murray 2008; VAE: IWAE bound, Burda et al. 2016), against seconds since Start.

    .venv/bin/python scripts/time_to_quality.py --models gan,vae --seconds 120 --out docs/img/time_to_quality

Training: one genlib.jobs.manager.JobManager (worker processes, as the dashboard) with its own runs folder under --out,
the dashboard's torch threads (genlib.jobs.worker.dashboard_job_threads: 1 on a 2-core CPU); the recipes of a model run
one after the other (sequential, the order alternating between models), never two at once, so each has the machine the
dashboard would give it. The worker writes a weight snapshot every --snapshot-every seconds; this process copies each
new one aside (a few ms per copy) and evaluates the copies only after every run has ended, so evaluation never slows
training. Elapsed seconds run from the submit (pressing Start), worker start-up included.

The targets and the report are scripts/ttq_targets.py. Beside every run: the one-thread `torch.mm` peak of its core
measured just before it, and the FLOPs of one training step of its recipe (scripts/ttq_compute.py); beside every
target, the FLOPs of the steps to it (to its first reach if met, else to where it holds to the end, else a lower
bound) and their seconds at that peak. A target whose FLOPs take longer than its deadline at the peak is out of reach
on that core by compute; run past a deadline (`--seconds`) to see where a missed target holds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file from anywhere: genlib from this checkout
sys.path.insert(0, str(ROOT / "scripts"))  # and its sibling scripts (bench.py, ttq_*.py)

from ttq_compute import step_flops  # noqa: E402 - after the path above
from ttq_targets import BEFORE_LECTURE, REFERENCE_RUNS, TARGETS, report, table  # noqa: E402

N_SAMPLES = 2_000  # the count for the Fréchet distance and the class shares


# ---------------------------------------------------------------- recipes, and variants of them to try
def parse_recipe(model: str, spec: str) -> Any:
    """A recipe of genlib.presets by name, or a variant to try: 'lecture:latent=32:lr=0.003' (each field set,
    model fields and train fields alike; values read as JSON, else kept as text), named by the spec itself."""
    import dataclasses

    from genlib.presets import recipe
    from genlib.training import TrainConfig

    name, *changes = spec.split(":")
    base = recipe(model, name)
    if not changes:
        return base
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    m, t = dict(base.model_config), dict(base.train_config)
    for change in changes:
        key, sep, text = change.partition("=")
        if not sep:
            raise ValueError(f"{spec!r}: expected field=value after ':', got {change!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        (t if key in train_fields else m)[key] = tuple(value) if isinstance(value, list) else value
    variant = dataclasses.replace(base, name=spec, model_config=m, train_config=t, why=f"{name} with {changes}")
    variant.model_values(), variant.train_values()  # refuse a bad field or value before anything trains
    return variant


# ---------------------------------------------------------------- training through the dashboard's job path
def train_recipe(manager: Any, model: str, recipe: Any, *, seconds: float, snapshot_every: float, snap_dir: Path,
                 log_every: int) -> dict[str, Any]:
    """Submit one recipe, copy each new snapshot aside as `<elapsed>.safetensors`, stop it `seconds` after the submit."""
    snap_dir.mkdir(parents=True, exist_ok=True)
    if not log_every:  # auto: the dashboard's 20 steps, 2 for the seed's DCGAN (seconds a step on one CPU thread)
        log_every = 2 if model == "gan" and recipe.model_values()["preset"] == "seed" else 20
    train_cfg = recipe.train_values(snapshot_every_s=snapshot_every, log_every=log_every, device="cpu")
    train_cfg["epochs"] = max(train_cfg["epochs"], 1000)  # the clock ends the run, never the epochs
    t0 = time.time()
    run_id = manager.submit(model, recipe.model_values(), train_cfg, title=f"time to quality: {model} {recipe.name}")
    run = manager.store.get(run_id)
    seen, copies = None, []
    while True:
        now = time.time()
        try:
            mtime = run.snapshot_path.stat().st_mtime
        except OSError:
            mtime = None
        if mtime is not None and mtime != seen:
            seen = mtime
            dest = snap_dir / f"{mtime - t0:08.2f}.safetensors"
            try:
                shutil.copyfile(run.snapshot_path, dest)  # the worker replaces the file by a rename: never half
                copies.append(dest.name)
            except OSError:
                pass
        if now - t0 >= seconds or not manager.status(run_id).live:
            break
        time.sleep(0.2)
    manager.stop(run_id)
    status = manager.wait(run_id, timeout=300)
    try:  # the checkpoint written at the stop: the last point of the curve
        dest = snap_dir / f"{run.checkpoint_path.stat().st_mtime - t0:08.2f}.safetensors"
        shutil.copyfile(run.checkpoint_path, dest)
        copies.append(dest.name)
    except OSError:
        pass
    state = run.state()
    return {"run_id": run_id, "state": status.state, "steps": state.get("step"), "images": state.get("images"),
            "budget_s": seconds, "train_seconds": state.get("seconds"), "wall_seconds": round(time.time() - t0, 1),
            "snapshots": copies,
            "model_config": recipe.model_values(), "train_config": train_cfg}


# ---------------------------------------------------------------- evaluation of the copies, after training
class Judge:
    """The classifier, the test set's feature statistics and the floor at N_SAMPLES, computed once."""

    def __init__(self, data: Any, n: int = N_SAMPLES) -> None:
        import torch

        from genlib.quality.classifier import ensure_classifier
        from genlib.quality.frechet import classifier_outputs, frechet_distance_from_stats, gaussian_stats

        self.data, self.n = data, n
        self.classifier, _ = ensure_classifier(data)
        f_test, _ = classifier_outputs(self.classifier, data.x_test)
        self.ref = gaussian_stats(f_test)
        pick = torch.randperm(data.x_train.shape[0], generator=torch.Generator().manual_seed(0))[:n]
        f_train, _ = classifier_outputs(self.classifier, data.x_train[pick])
        self.floor = frechet_distance_from_stats(*gaussian_stats(f_train), *self.ref)

    def samples(self, model: Any, seed: int = 0) -> dict[str, Any]:
        import torch

        from genlib.quality.frechet import classifier_outputs, frechet_distance_from_stats, gaussian_stats, generate

        feats, preds = classifier_outputs(self.classifier, generate(model, self.n, seed=seed))
        counts = torch.bincount(preds, minlength=10).tolist()
        shares = [c / self.n for c in counts]
        fd = frechet_distance_from_stats(*gaussian_stats(feats), *self.ref)
        return {"frechet": fd, "floor": self.floor, "ratio": fd / self.floor, "shares": shares,
                "min_share": min(shares)}


def likelihood(model_name: str, model: Any, data: Any, args: argparse.Namespace, seed: int = 0) -> dict[str, Any]:
    """The model's own figure: the VAE's IWAE bound, the RBM's AIS log-likelihood; {} for the GAN and the EBM."""
    if model_name == "vae":
        from genlib.quality.iwae import VAEEvalConfig, evaluate_vae

        r = evaluate_vae(model, data.x_test, VAEEvalConfig(k=args.iwae_k, n_test=args.n_test, sample_seed=seed + 1))
        # the Gaussian decoder's figure is a density of grey images, in other units: never held against a target
        return {"iwae_nll": r["iwae_nll"] if r["comparable"] else None, "iwae_nll_raw": r["iwae_nll"],
                "neg_elbo": r["neg_elbo"], "iwae_k": args.iwae_k}
    if model_name == "rbm":
        from genlib.quality.ais import AISConfig, RBMEvalConfig, evaluate_rbm

        # independent AIS runs (their own chains' seeds): the estimate's spread, beside its mean
        runs = [evaluate_rbm(model, data.x_train, data.x_test,
                             RBMEvalConfig(ais=AISConfig(n_steps=args.ais_steps, n_chains=args.ais_chains,
                                                         seed=seed + 1000 * i), n_test=args.n_test))
                ["test_log_likelihood"] for i in range(max(1, args.ais_repeats))]
        mean = sum(runs) / len(runs)
        return {"ais_ll": mean, "ais_ll_runs": runs, "ais_ll_spread": max(runs) - min(runs),
                "ais_steps": args.ais_steps, "ais_chains": args.ais_chains}
    return {}


def snapshots_to_evaluate(names: list[str], eval_every: float, eval_at: list[float] | None = None
                          ) -> list[tuple[float, str]]:
    """(seconds, file name) of the snapshot copies to judge, in time order: at most one per `eval_every` seconds, or
    with `eval_at` the last one at or before each of those seconds (the targets' deadlines); always the last."""
    timed = sorted((float(name.removesuffix(".safetensors")), name) for name in names)
    keep: list[tuple[float, str]] = []
    if eval_at:
        for deadline in sorted(eval_at):
            before = [tn for tn in timed if tn[0] <= deadline]
            if before and before[-1] not in keep:
                keep.append(before[-1])
    else:
        last_t = -1e9
        for t, name in timed[:-1]:
            if t - last_t >= eval_every:
                keep.append((t, name))
                last_t = t
    if timed and timed[-1] not in keep:
        keep.append(timed[-1])
    return keep


def evaluate_run(model_name: str, snap_dir: Path, names: list[str], judge: Judge, args: argparse.Namespace
                 ) -> list[dict[str, Any]]:
    """One curve point per snapshot that snapshots_to_evaluate keeps."""
    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint

    keep = snapshots_to_evaluate(names, args.eval_every, args.eval_at)
    curve = []
    for t, name in keep:
        ckpt = load_checkpoint(snap_dir / name)
        model = model_from_checkpoint(ckpt).eval()
        point = {"elapsed_s": round(t, 2), "step": ckpt.step, "train_seconds": ckpt.progress.get("seconds"),
                 **judge.samples(model), **likelihood(model_name, model, judge.data, args)}
        curve.append(point)
        print(f"  {model_name} {t:7.1f} s step {ckpt.step:6d}: FD {point['frechet']:.2f} ({point['ratio']:.1f}x floor) "
              f"min share {point['min_share']:.3f}"
              + "".join(f" {k} {point[k]:.2f}" for k in ("iwae_nll", "ais_ll") if point.get(k) is not None),
              flush=True)
    return curve


def references(models: list[str], judge: Judge, which: str = "before-lecture") -> dict[str, float]:
    """The figures the targets are relative to: "<model>.frechet", "<model>.ratio" and "<model>.min_share" of the
    models shipped before the lecture recipes (BEFORE_LECTURE), or with which="shipped" of pretrained/ now."""
    if which == "before-lecture":
        return {k: v for k, v in BEFORE_LECTURE.items() if k.split(".")[0] in models}
    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint
    from genlib.runs.store import Run

    refs: dict[str, float] = {}
    for m in models:
        path = Run(ROOT / "pretrained" / REFERENCE_RUNS[m]).checkpoint_path
        if not path.exists():
            print(f"  no reference: {path} is missing", flush=True)
            continue
        r = judge.samples(model_from_checkpoint(load_checkpoint(path)).eval())
        refs[f"{m}.frechet"], refs[f"{m}.ratio"], refs[f"{m}.min_share"] = r["frechet"], r["ratio"], r["min_share"]
        print(f"  reference {REFERENCE_RUNS[m]}: FD {r['frechet']:.2f} ({r['ratio']:.1f}x floor), min share "
              f"{r['min_share']:.3f}", flush=True)
    return refs


def training_settings(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The clock and snapshot interval the runs trained with: this command's, or with --evaluate-only the runs' own
    records (None where a record predates them), never this command's unused defaults."""
    if not args.evaluate_only:
        return {"seconds": args.seconds, "snapshot_every_s": args.snapshot_every}

    def one(values: set[Any]) -> Any:
        values.discard(None)
        return values.pop() if len(values) == 1 else (sorted(values) or None)

    return {"seconds": one({r.get("budget_s") for r in runs}),
            "snapshot_every_s": one({r.get("train_config", {}).get("snapshot_every_s") for r in runs})}


def host_gflops(size: int = 1024, reps: int = 5) -> float:
    """This core's speed just now: scripts/bench.py's fp32 torch.mm peak on one thread (a dashboard job's share of a
    2-core CPU). Recorded beside every run, because seconds to a target mean nothing without it: the same recipe
    makes twice the steps in 10 minutes on a host whose core is twice as fast."""
    import torch

    from bench import measure_peak  # scripts/bench.py, beside this file

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return measure_peak(size, reps, ("fp32",))["fp32"]
    finally:
        torch.set_num_threads(threads)


def _folder(model: str, spec: str) -> str:
    return f"{model}-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)


def train_all(models: list[str], names: list[str], args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Every model's recipes, one at a time, through one JobManager; the recipes' order alternates between models."""
    from genlib.jobs.manager import JobManager
    from genlib.runs.store import RunStore

    manager = JobManager(RunStore(work / "runs"), backend="process", max_jobs=1)
    runs = []
    try:
        for i, m in enumerate(models):
            for n in (names if i % 2 == 0 else names[::-1]):
                gflops = host_gflops()  # between runs: nothing of ours is running
                print(f"training {m} '{n}' for {args.seconds:g} s (one-thread torch.mm: {gflops:.0f} GFLOP/s) ...",
                      flush=True)
                r = parse_recipe(m, n)
                out = train_recipe(manager, m, r, seconds=args.seconds, snapshot_every=args.snapshot_every,
                                   snap_dir=work / "snapshots" / _folder(m, n), log_every=args.log_every)
                runs.append({"model": m, "recipe": n, "title": r.title, "host_mm_gflops": round(gflops, 1), **out})
                print(f"  {out['state']}: {out['steps']} steps, {len(out['snapshots'])} snapshots", flush=True)
    finally:
        manager.close(stop_jobs=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="gan,vae", help="comma-separated: gan, vae, rbm, ebm")
    ap.add_argument("--recipes", default="seed,lecture", help="comma-separated recipe names (genlib/presets.py), "
                    "or variants to try, e.g. lecture:latent=32:lr=0.003")
    ap.add_argument("--seconds", type=float, default=120.0, help="wall-clock seconds of each run from its Start")
    ap.add_argument("--snapshot-every", type=float, default=5.0, help="seconds between the worker's snapshots")
    ap.add_argument("--eval-every", type=float, default=10.0, help="evaluate at most one snapshot per this many s")
    ap.add_argument("--eval-at", type=lambda v: [float(x) for x in v.split(",") if x.strip()], default=None,
                    help="instead of --eval-every: evaluate the last snapshot at or before each of these seconds, "
                         "e.g. 120,300,1800 (the targets' deadlines)")
    ap.add_argument("--log-every", type=int, default=0, help="steps between the worker's metric reads, its chances "
                    "to write a snapshot (0: the dashboard's 20, 2 for the seed's GAN, which takes seconds a step)")
    ap.add_argument("--iwae-k", type=int, default=100, help="VAE: importance samples per test image")
    ap.add_argument("--n-test", type=int, default=1_000, help="test images for the likelihoods")
    ap.add_argument("--ais-steps", type=int, default=2_000)
    ap.add_argument("--ais-chains", type=int, default=32)
    ap.add_argument("--ais-repeats", type=int, default=1,
                    help="RBM: independent AIS runs per point; the curve has their mean, the JSON each and the spread")
    ap.add_argument("--data-root", default=os.environ.get("GENLIB_DATA_ROOT"))
    ap.add_argument("--out", default="time_to_quality", help="folder for the JSON, the PNGs and the run folders")
    ap.add_argument("--keep-runs", action="store_true", help="keep the run folders and snapshot copies")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="skip training: evaluate the snapshot copies a --keep-runs run left in --out")
    ap.add_argument("--train-only", action="store_true", help="train and keep the snapshot copies; evaluate later")
    ap.add_argument("--references", choices=("before-lecture", "shipped"), default="before-lecture",
                    help="what the targets are relative to: the models shipped before the lecture recipes (their "
                         "recorded figures, the issue's yardstick; default) or pretrained/ as it is now")
    args = ap.parse_args(argv)

    from genlib.data import load_dataset
    from genlib.jobs.worker import WORKER_THREADS_ENV, dashboard_job_threads

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    names = [r.strip() for r in args.recipes.split(",") if r.strip()]
    for m in models:
        if m not in TARGETS:
            ap.error(f"unknown model {m!r}; choose from {', '.join(TARGETS)}")
        for n in names:
            try:
                parse_recipe(m, n)
            except ValueError as e:
                ap.error(str(e))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    if args.data_root:
        os.environ["GENLIB_DATA_ROOT"] = args.data_root
    threads = dashboard_job_threads()
    if threads:
        os.environ.setdefault(WORKER_THREADS_ENV, str(threads))  # the dashboard's _leave_a_core, inherited by workers
    trained = work / "trained.json"
    if args.evaluate_only:
        runs = [r for r in json.loads(trained.read_text()) if r["model"] in models and r["recipe"] in names]
    else:
        runs = train_all(models, names, args, work)
        trained.write_text(json.dumps(runs, indent=1))
        if args.train_only:
            print(f"trained; evaluate with --evaluate-only --out {out}")
            return 0
    print("evaluating the snapshots ...", flush=True)
    judge = Judge(load_dataset("mnist", root=args.data_root))
    refs = references(models, judge, args.references)
    for r in runs:
        if not r.get("step_flops"):  # counted, not timed: the same on any core (runs trained before it was kept too)
            r["step_flops"] = step_flops(r["model"], r["model_config"], r["train_config"], judge.data)
        r["curve"] = evaluate_run(r["model"], work / "snapshots" / _folder(r["model"], r["recipe"]), r["snapshots"],
                                  judge, args)
    settings = {"command": " ".join(["scripts/time_to_quality.py", *(argv if argv is not None else sys.argv[1:])]),
                **training_settings(runs, args), "n_samples": N_SAMPLES, "eval_every_s": args.eval_every,
                "iwae_k": args.iwae_k, "n_test": args.n_test,
                "ais_steps": args.ais_steps, "ais_chains": args.ais_chains, "ais_repeats": args.ais_repeats,
                "worker_threads": threads,
                "order": "sequential, one run at a time, the recipes' order alternating between models",
                "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                "load_average_at_end": list(os.getloadavg()), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    doc = report(runs, refs, settings)
    (out / "time_to_quality.json").write_text(json.dumps(doc, indent=1))
    from ttq_plot import write_plots  # scripts/ttq_plot.py, beside this file

    for m in models:
        (out / f"time_to_quality_{m}.png").write_bytes(write_plots(doc, m))
    print(table(doc))
    if not args.keep_runs and not args.evaluate_only:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
