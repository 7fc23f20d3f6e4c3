"""Trains the pretrained models the app ships (RBM, VAE with latent 16 and 2, GAN, EBM; the VAE, GAN and EBM with
their lecture recipes, genlib/presets.py) on MNIST within a stated CPU budget, and writes each as a small read-only
run folder under pretrained/ (half-precision weights, metrics, per-epoch grids, and with --evaluate its quality
figures), which genlib.runs.pretrained installs into the runs folder on a fresh install.

    nice -n 10 .venv/bin/python scripts/pretrain.py --data-root ../shared/data            # every model
    nice -n 10 .venv/bin/python scripts/pretrain.py --data-root ../shared/data --only pretrained-vae-latent2 --epochs 3
    .venv/bin/python scripts/pretrain.py --adopt pretrained-rbm OUT/work/runs/<run id>   # time_to_quality --keep-runs

Each model trains through genlib.jobs.worker.run_job in a temporary runs folder, exactly as a dashboard job does; the
export then rewrites the last checkpoint in float16 (no optimiser state: forks of a pretrained run start a fresh
optimiser) and checks that the half-precision weights draw the same fixed-noise grid as the float32 ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
HALF_TOLERANCE = 2 / 255  # the largest pixel change (in [0, 1]) that the float16 weights may make to a sample grid
# model settings that only model.sample() reads (training never does): an adopted run may differ in them, and ships
# with the spec's value, so a better sampler measured after a run (scripts/sampler_steps.py) needs no retraining
SAMPLING_ONLY = ("sample_steps",)


@dataclass(frozen=True, kw_only=True)
class PretrainSpec:
    """One shipped model: its run id, model settings, training settings and the wall-clock budget it must fit."""

    run_id: str
    model: str
    title: str
    model_config: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields over the seed's defaults
    budget_min: float = 10.0  # stop (and ship what was learned) if training runs longer than this


def _lecture(model: str, run_id: str, title: str, budget_min: float, model_config: dict[str, Any] | None = None,
             **train: Any) -> PretrainSpec:
    """A shipped model made with its lecture recipe (genlib/presets.py), `model_config` and `train` on top."""
    from genlib.presets import recipe

    r = recipe(model, "lecture")
    return PretrainSpec(run_id=run_id, model=model, title=title, model_config={**r.model_config, **(model_config or {})},
                        train={**r.train_config, **train}, budget_min=budget_min)


def specs(model_names: Sequence[str]) -> list[PretrainSpec]:
    """The shipped models, in the order they are trained: each model's lecture recipe, trained for longer than a
    lecture's minutes (docs/time_to_quality.md has the curves these runs follow)."""
    out = [
        # the lecture recipe (centred PCD-1 at lr 0.02 with momentum 0.5, visible biases at the data's log-odds, weight
        # decay 2e-4, the weights' moving average shown): the shipped run is the 30-minute time_to_quality run it was
        # adopted from (239,965 steps, 399 epochs, AIS -85.5, docs/time_to_quality.md); a retrain stops at 400 epochs,
        # or at 35 minutes on a slower or busier machine. Its samples take 2,000 Gibbs steps, not the recipe's 500:
        # the trained model mixes slowly, and 500 leave its 1s at 3.2-3.4% where 2,000 give every digit >= 5.9%
        # (scripts/sampler_steps.py); a two-minute model gains nothing from them, so the recipe keeps 500.
        # It keeps the recipe's step of its day (0.02, average 0.999): the recipe's 0.05 (average 0.9995) covers the
        # digits better in a Start's two minutes, but after 30 minutes it measured FD 82 and AIS -86.7 against 52 and
        # -85.2 (docs/time_to_quality.md)
        _lecture("rbm", "pretrained-rbm", "Pretrained RBM (lecture recipe: centred PCD-1, 500 hidden units)", 35,
                 model_config={"sample_steps": 2000}, epochs=400, lr=0.02, ema=0.999),
        # the lecture recipe (Bernoulli decoder, 16 latent dimensions, the weights' moving average shown): the shipped
        # run is the 15-minute time_to_quality run (112 epochs, IWAE 91.2 nats, docs/time_to_quality.md); a retrain
        # stops at 100 epochs, not the clock, so a busy machine takes longer but ships the same model
        _lecture("vae", "pretrained-vae", "Pretrained VAE (lecture recipe: latent 16, Bernoulli decoder)", 40,
                 epochs=100),
        # the shipped latent-2 run shows its live weights (it was made before the weights' average), and so does a
        # retrain
        _lecture("vae", "pretrained-vae-latent2", "Pretrained VAE (latent 2: a map you can see)", 20,
                 model_config={"latent": 2}, epochs=30, ema=0.0),
        # the lecture recipe (Adam 8e-4 with beta1 0.5, batches of 32 on the widths / 4 network, the generator's
        # moving average shown) with a tenth of the discriminator's units dropped, not none: the shipped run is the
        # 25-minute time_to_quality run it was adopted from (117,043 steps, FD 29.5 at 2,000 samples). Without dropout
        # (the recipe) a run leads for a lecture's ten minutes and then gets worse (FD 46 after 52,000 steps, 63 after
        # 134,000); with 0.1 it keeps improving (39 after 45,540 steps, 29.5 after 117,043; docs/time_to_quality.md)
        _lecture("gan", "pretrained-gan", "Pretrained GAN (lecture recipe: the seed's DCGAN with widths / 4)", 30,
                 model_config={"dropout": 0.1}, epochs=63),
    ]
    if "ebm" in model_names:
        # the lecture recipe (Du & Mordatch's replay buffer and spectral normalisation, Adam 1e-3, the weights' moving
        # average shown, 400 Langevin steps to sample) for longer than a lecture's six epochs: the shipped run is the
        # 20-minute time_to_quality run (5,215 steps on a core that did 107 GFLOP/s of one-thread torch.mm, FD 15.3 at
        # 2,000 samples against 16.5 after 10 minutes, docs/time_to_quality.md); a retrain stops at 11 epochs, or at
        # 25 minutes on a slower core
        out.append(_lecture("ebm", "pretrained-ebm", "Pretrained EBM (lecture recipe, 20 minutes)", 25, epochs=11))
    return out


def train_one(spec: PretrainSpec, runs_dir: Path, data_root: str | None, threads: int, epochs: int | None,
              dataset: str = "mnist") -> tuple[Any, float]:
    """Train `spec` as a run in `runs_dir` (stopped at its budget, if it gets there); returns (run, wall seconds)."""
    from genlib.jobs.manager import JobManager  # noqa: F401 - the same imports a worker process makes
    from genlib.models import make_config
    from genlib.runs.store import RunStore
    from genlib.training import default_train_config
    from genlib.jobs.worker import run_job

    train = {**spec.train, "dataset": dataset, "data_root": data_root, "threads": threads, "device": "cpu",
             "checkpoint_every_s": 600.0, "snapshot_every_s": 600.0, "live_every_s": 30.0}
    if epochs is not None:
        train["epochs"] = epochs
    tc = dataclasses.asdict(default_train_config(spec.model, **train))
    mc = dataclasses.asdict(make_config(spec.model, spec.model_config))
    run = RunStore(runs_dir).create({"model": spec.model, "model_config": mc, "train_config": tc,
                                     "dataset": dataset, "title": spec.title}, run_id=spec.run_id)
    run.send(command="run", lr=tc["lr"])
    timer = threading.Timer(spec.budget_min * 60, lambda: run.send(command="stop"))
    timer.daemon = True
    timer.start()
    t0 = time.perf_counter()
    try:
        summary = run_job(run, on_log=lambda row: print(f"  {spec.run_id} epoch {row['epoch']} step {row['step']} "
                                                        f"loss {row.get('loss', float('nan')):.4g}", file=sys.stderr))
    finally:
        timer.cancel()
    seconds = time.perf_counter() - t0
    if summary["state"] not in ("finished", "stopped"):
        raise RuntimeError(f"{spec.run_id} {summary['state']}: {summary.get('error')}")
    return run, seconds


def export(run: Any, spec: PretrainSpec, out_dir: Path, seconds: float, order: int, threads: int) -> dict[str, Any]:
    """Write `run` as pretrained/<id>/: half-precision checkpoint, metrics, grids, cleaned run.json and state.json."""
    import torch

    from genlib.runs.checkpoints import checkpoint_bytes, load_checkpoint, model_from_checkpoint, read_checkpoint
    from genlib.images import grid, png_bytes
    from genlib.runs.io import atomic_write_bytes
    from genlib.runs.schema import ControlRecord, StateRecord
    from genlib.models import LatentModel
    from genlib.training import TrainConfig

    ckpt = load_checkpoint(run.checkpoint_path)
    sampling = {k: spec.model_config[k] for k in SAMPLING_ONLY if k in spec.model_config}
    ckpt = dataclasses.replace(ckpt, model_config={**ckpt.model_config, **sampling})  # the spec's sampler
    model = model_from_checkpoint(ckpt).eval()
    info, state = run.info(), run.state()
    tc = dict(info["train_config"], data_root=None, device="auto", threads=None)
    at_budget = state.get("state") == "stopped"
    if at_budget:  # stopped by the wall-clock budget: its planned length becomes what it reached, so it is finished
        spe = int(state.get("steps_per_epoch") or 1)
        tc.update(max_steps=int(state["step"]), epochs=max(1, -(-int(state["step"]) // spe)))
        state = {**state, "state": "finished", "total_steps": int(state["step"])}
    half = checkpoint_bytes(model, train_config=tc, progress=ckpt.progress, half=True,
                            extra={**ckpt.extra, "pretrained": True, "run_id": spec.run_id})
    # the shipped weights must draw what the trained ones drew: compare decodes of the same fixed latents (a
    # deterministic map; a Gibbs or Langevin chain would amplify any rounding into a different random path)
    cfg = TrainConfig(**tc)
    half_model = model_from_checkpoint(read_checkpoint(half)).eval()

    def fixed(m: Any) -> torch.Tensor:
        g = torch.Generator().manual_seed(cfg.sample_seed)
        with torch.no_grad():
            if isinstance(m, LatentModel):
                return m.decode(m.sample_latent(cfg.n_samples, generator=g))
            return m.sample(cfg.n_samples, generator=g)

    full_images, half_decoded = fixed(model), fixed(half_model)
    diff = float((full_images - half_decoded).abs().max())
    mean_diff = float((full_images - half_decoded).abs().mean())
    with torch.no_grad():  # what the dashboard shows: the shipped weights' own fixed-noise samples
        half_images = half_model.sample(cfg.n_samples, generator=torch.Generator().manual_seed(cfg.sample_seed))
    target = out_dir / spec.run_id
    if target.exists():
        shutil.rmtree(target)
    (target / "checkpoints").mkdir(parents=True)
    atomic_write_bytes(target / "checkpoints" / "last.safetensors", half)
    grids = run.epoch_grids()
    for p in grids:
        atomic_write_bytes(target / "samples" / p.name, p.read_bytes())
    live = png_bytes(grid(half_images))
    atomic_write_bytes(target / "live.png", live)
    resampled = {k: [info["model_config"].get(k), v] for k, v in sampling.items() if info["model_config"].get(k) != v}
    if resampled and grids:  # the last grid is what pages and the home gallery show: the new sampler's
        atomic_write_bytes(target / "samples" / grids[-1].name, live)
    shutil.copyfile(run.metrics_path, target / "metrics.jsonl")
    created = 1_700_000_000.0 + order  # fixed, older than any real run: a teacher's own runs are always newer
    record = run.record()
    dataclasses.replace(record, model_config={**record.model_config, **sampling}, train_config=tc, id=spec.run_id,
                        created=created, title=spec.title, pretrained={
        "script": "scripts/pretrain.py", "wall_seconds": round(seconds, 1), "threads": threads,
        "budget_min": spec.budget_min, "stopped_at_budget": at_budget,
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "half_max_pixel_diff": round(diff, 5),
        "half_mean_pixel_diff": round(mean_diff, 6), "resampled": resampled}).save(target / "run.json")
    keep = ("step", "epoch", "images", "seconds", "total_steps", "steps_per_epoch", "images_per_second", "metrics")
    StateRecord.from_dict({**{k: state[k] for k in keep if k in state}, "state": state.get("state", "finished"),
                           "eta_seconds": 0, "message": None, "error": None, "updated": created},
                          where=f"{spec.run_id}'s state").save(target / "state.json")
    ControlRecord(command="run", seq=1, knobs={"lr": info["train_config"]["lr"]}).save(target / "control.json")
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"{spec.run_id}: {state.get('state')} at step {state.get('step')} (epoch {state.get('epoch')}) in "
          f"{seconds:.0f} s; folder {size / 2**20:.2f} MB; float16 vs float32 samples: max pixel diff {diff:.4f}, "
          f"mean {mean_diff:.5f}", file=sys.stderr)
    if diff > HALF_TOLERANCE:
        print(f"  warning: float16 changes the samples by up to {diff:.3f} (over {HALF_TOLERANCE:.3f})",
              file=sys.stderr)
    return {"run_id": spec.run_id, "state": state.get("state"), "step": state.get("step"),
            "epoch": state.get("epoch"), "wall_seconds": round(seconds, 1), "bytes": size,
            "checkpoint_bytes": len(half), "half_max_pixel_diff": round(diff, 5)}


# the figures a MANIFEST row carries (genlib.runs.pretrained ranks a model's pretrained runs by them; the page's
# quality panel reads the folder's quality.json)
MANIFEST_FIGURES = ("frechet_distance", "frechet_floor", "class_min_share", "iwae_nll", "neg_elbo",
                    "test_log_likelihood", "test_log_likelihood_se")


def evaluate_export(folder: Path, data_root: str | None) -> dict[str, Any]:
    """The FINAL quality evaluation of an exported folder's float16 weights, recorded in it (quality.jsonl and
    quality.json ship with it, so its page shows the figures at once); returns the MANIFEST's figures."""
    from genlib.quality.records import evaluate_saved_run
    from genlib.quality.settings import FINAL
    from genlib.runs.store import Run

    run = Run(folder)
    # every model's samples, the EBM's too: a page's FINAL evaluation leaves the EBM's Langevin chains out for their
    # cost, but a shipped model is evaluated once, offline (5,000 chains of 200 steps: a few CPU minutes)
    settings = dataclasses.replace(FINAL, sample_models=None)
    record = evaluate_saved_run(run, settings, data_root=data_root)
    run.quality_status_path.unlink(missing_ok=True)  # the evaluation's progress: nothing a shipped run needs
    if record.get("error"):
        raise RuntimeError(f"the final evaluation of {folder.name} failed: {record['error']}")
    figures = {k: round(float(v), 4) for k, v in record["figures"].items()
               if k in MANIFEST_FIGURES and isinstance(v, (int, float))}
    print(f"{folder.name}: {figures}", file=sys.stderr)
    return figures


def write_manifest(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    """pretrained/MANIFEST.json: what each folder holds and how long it trained (merged with earlier rows)."""
    path = out_dir / "MANIFEST.json"
    old = {r["run_id"]: r for r in json.loads(path.read_text())["runs"]} if path.exists() else {}
    old.update({r["run_id"]: r for r in rows})
    runs = [old[k] for k in sorted(old) if (out_dir / k).is_dir()]
    total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
    path.write_text(json.dumps({"runs": runs, "total_bytes": total}, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=os.environ.get("GENLIB_DATA_ROOT") or str(ROOT.parent / "shared" / "data"),
                   help="folder holding torchvision's MNIST")
    p.add_argument("--out", default=str(ROOT / "pretrained"), help="where the run folders go (default pretrained/)")
    p.add_argument("--only", nargs="*", help="run ids to (re)train, e.g. pretrained-rbm (default: all)")
    p.add_argument("--epochs", type=int, help="override every model's epochs (quick trials)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the machine is shared)")
    p.add_argument("--dataset", default="mnist", help="mnist (default; what ships) or digits (offline trials)")
    p.add_argument("--adopt", nargs=2, metavar=("RUN_ID", "RUN_DIR"),
                   help="instead of training RUN_ID, export a run folder already trained with the same settings "
                        "(e.g. `python -m genlib train ebm --epochs 2` on a quieter machine, or a run that "
                        "scripts/time_to_quality.py --keep-runs stopped at its clock); its own wall time is kept")
    p.add_argument("--evaluate", action="store_true",
                   help="after each export, its FINAL quality evaluation (minutes), shipped in the folder and MANIFEST")
    p.add_argument("--figures-only", action="store_true",
                   help="train nothing: evaluate the shipped folders of --only (or all) and record their figures")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from genlib.models import MODEL_NAMES

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = [s for s in specs(MODEL_NAMES) if not args.only or s.run_id in args.only]
    if not chosen:
        raise SystemExit(f"nothing to train: --only names none of {[s.run_id for s in specs(MODEL_NAMES)]}")
    rows = []
    shipped_order = [s.run_id for s in specs(MODEL_NAMES)]

    def ship(run: Any, spec: PretrainSpec, seconds: float) -> dict[str, Any]:
        """Export `run` as `spec`'s folder (with --evaluate, its FINAL figures too); returns its MANIFEST row."""
        row = export(run, spec, out_dir, seconds, shipped_order.index(spec.run_id), args.threads)
        if args.evaluate:
            row["figures"] = evaluate_export(out_dir / spec.run_id, args.data_root)
        return row

    if args.figures_only:  # the shipped folders as they are: evaluate them and record their figures
        old_rows = {r["run_id"]: r for r in json.loads((out_dir / "MANIFEST.json").read_text())["runs"]}
        for spec in chosen:
            rows.append({**old_rows[spec.run_id], "figures": evaluate_export(out_dir / spec.run_id, args.data_root)})
        write_manifest(out_dir, rows)
        print(json.dumps({"evaluated": [r["run_id"] for r in rows], "out": str(out_dir)}))
        return 0
    if args.adopt:
        from genlib.runs.store import Run

        run_id, run_dir = args.adopt
        by_id = {s.run_id: s for s in specs(MODEL_NAMES)}
        if run_id not in by_id:
            raise SystemExit(f"--adopt: {run_id} is none of {sorted(by_id)}")
        run = Run(Path(run_dir))
        spec = by_id[run_id]
        info = run.info()
        if info.get("model") != spec.model or run.state().get("state") not in ("finished", "stopped"):
            raise SystemExit(f"--adopt: {run_dir} is not a finished or stopped {spec.model} run")
        differs = {k: (info["model_config"].get(k), v) for k, v in spec.model_config.items()
                   if info["model_config"].get(k) != v and k not in SAMPLING_ONLY}
        if differs:  # the folder must hold what the spec ships, or its title would say something else
            raise SystemExit(f"--adopt: {run_dir}'s model settings differ from {run_id}'s (theirs, ours): {differs}")
        write_manifest(out_dir, [ship(run, spec, float(run.state().get("seconds") or 0.0))])
        print(json.dumps({"adopted": run_id, "from": str(run_dir), "out": str(out_dir)}))
        return 0
    with tempfile.TemporaryDirectory(prefix="genlib-pretrain-") as tmp:
        for spec in chosen:
            run, seconds = train_one(spec, Path(tmp), args.data_root, args.threads, args.epochs, args.dataset)
            rows.append(ship(run, spec, seconds))
    write_manifest(out_dir, rows)
    print(json.dumps({"runs": rows, "out": str(out_dir)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
