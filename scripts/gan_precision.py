"""Does bfloat16 change the GAN's samples? Trains the DCGAN (Radford et al. 2016) through genlib in float32 and in
bfloat16 autocast from the same seeds, data and step count, and compares the Fréchet distances of their samples
(Heusel et al. 2017, in genlib's own MNIST classifier's features) with the spread between seeds.

    nice -n 10 .venv/bin/python scripts/gan_precision.py --data-root ../shared/data --start pretrained \
        --max-steps 300 --seeds 0,1 --out artifacts/gan-precision.md

--start pretrained continues the shipped pretrained GAN (pretrained/pretrained-gan: its weights, lr and batch size;
Adam starts afresh, since the shipped checkpoint keeps no optimiser state) for --max-steps steps: a trained model whose samples are digits, where a precision that hurt
quality would show. --start scratch trains a new model (--preset, the seed's batch 256 and lr 1e-4) from
torch.manual_seed(seed), as the run worker does. Either way each (seed, precision) pair starts from the same weights
and sees the same batches (TrainConfig.seed); only the arithmetic differs. "Unchanged" means the fp32-bf16 gap at a
seed is of the size of the gap between two seeds at the same precision.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file: make genlib importable without installing it
    sys.path.insert(0, str(ROOT))


PRETRAINED = ROOT / "pretrained" / "pretrained-gan"  # the shipped GAN run (scripts/pretrain.py)


@dataclass(frozen=True)
class Plan:
    start: str  # "scratch" or "pretrained"
    preset: str  # GAN preset of a scratch model: "seed" (the course's DCGAN) or "fast"
    epochs: int
    max_steps: int | None  # stop earlier than `epochs` when set
    seeds: tuple[int, ...]
    precisions: tuple[str, ...]
    n_samples: int  # images whose features are compared with the test set's
    batch_size: int = 256  # the seed's (a pretrained start uses its run's)
    lr: float = 1e-4  # the seed's (a pretrained start uses its run's)


def _pretrained() -> Any:
    from genlib.runs.checkpoints import load_checkpoint

    path = PRETRAINED / "checkpoints" / "last.safetensors"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run scripts/pretrain.py, or use --start scratch")
    return load_checkpoint(path)


def build(plan: Plan, seed: int, precision: str) -> tuple[Any, int, float]:
    """The model to train (configured for `precision`), its batch size and lr."""
    import torch

    from genlib.models import build_model

    torch.manual_seed(seed)  # same initial weights and noise for both precisions (the worker does the same)
    if plan.start == "scratch":
        model = build_model("gan", {"preset": plan.preset})
        model.configure_training(lr=plan.lr, precision=precision)
        return model, plan.batch_size, plan.lr
    ckpt = _pretrained()
    model = build_model("gan", ckpt.model_config)
    model.load_state_dict(ckpt.model_state)
    lr, batch = float(ckpt.train_config["lr"]), int(ckpt.train_config["batch_size"])
    model.configure_training(lr=lr, precision=precision)
    if ckpt.training_state:
        model.load_training_state(ckpt.training_state)  # Adam's moments, where the checkpoint kept them
    return model, batch, lr


def score(model: Any, plan: Plan, data: Any, classifier: Any) -> dict[str, Any]:
    from genlib.quality.frechet import sample_quality

    q = sample_quality(model, classifier, data.x_train, data.x_test, n=plan.n_samples, seed=0)
    return {"fd": q["frechet_distance"], "floor": q["frechet_floor"], "entropy": q["class_entropy"],
            "classes_seen": q["class_classes_seen"]}


def train_and_score(plan: Plan, seed: int, precision: str, data: Any, classifier: Any) -> dict[str, Any]:
    """Train one GAN with genlib's loop and score its samples; returns the row of the table."""
    from genlib.training import TrainConfig, train

    model, batch, lr = build(plan, seed, precision)
    cfg = TrainConfig(dataset=data.name, epochs=plan.epochs, max_steps=plan.max_steps, batch_size=batch,
                      lr=lr, seed=seed, precision=precision, device="cpu")
    t0 = time.perf_counter()
    progress = train(model, data, cfg)
    seconds = time.perf_counter() - t0
    return {"seed": seed, "precision": precision, "steps": progress.step, "batch": batch, "lr": lr,
            "train_seconds": seconds, "images_per_second": progress.images / seconds,
            **score(model, plan, data, classifier)}


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Mean, median and spread of FD per precision, and the fp32-bf16 gap at each seed with its paired mean and
    standard error: "unchanged" is judged against the seed-to-seed standard deviation at one precision."""
    lines = []
    by_prec: dict[str, list[float]] = {}
    for r in rows:
        by_prec.setdefault(r["precision"], []).append(r["fd"])
    for prec, fds in by_prec.items():
        spread = (f"seed-to-seed SD {statistics.stdev(fds):.2f}, range {max(fds) - min(fds):.2f}" if len(fds) > 1
                  else "one seed: no spread")
        lines.append(f"- {prec}: mean FD {statistics.fmean(fds):.2f}, median {statistics.median(fds):.2f} over "
                     f"{len(fds)} seed(s); {spread}")
    fd = {(r["seed"], r["precision"]): r["fd"] for r in rows}
    gaps = []
    for seed in sorted({r["seed"] for r in rows}):
        if (seed, "fp32") in fd and (seed, "bf16") in fd:
            gaps.append(fd[(seed, "bf16")] - fd[(seed, "fp32")])
            lines.append(f"- seed {seed}: bf16 - fp32 = {gaps[-1]:+.2f}")
    if len(gaps) > 1:
        se = statistics.stdev(gaps) / len(gaps) ** 0.5
        lines.append(f"- paired gap bf16 - fp32: mean {statistics.fmean(gaps):+.2f} ± {se:.2f} (standard error, "
                     f"{len(gaps)} seeds), median {statistics.median(gaps):+.2f}")
    return lines


def markdown(plan: Plan, rows: list[dict[str, Any]], command: str, note: str, start: dict[str, Any] | None) -> str:
    r0 = rows[0]
    if plan.start == "scratch":
        what = f"A new model, preset `{plan.preset}`"
    else:
        adam = ("with its Adam state" if _pretrained().training_state else
                "with a fresh Adam (the shipped checkpoint keeps no optimiser state)")
        what = f"The shipped pretrained GAN (pretrained/pretrained-gan: 'fast' preset, trained in fp32), continued {adam}"
    head = ["# GAN sample quality: float32 against bfloat16 autocast", "",
            f"Command: `{command}`", "",
            f"{what}; batch {r0['batch']}, Adam lr {r0['lr']:g}, {r0['steps']} steps per run "
            f"({plan.epochs} epoch(s) of MNIST{'' if plan.max_steps is None else f', capped at {plan.max_steps}'}); "
            f"Fréchet distance of {plan.n_samples:,} samples to the 10,000 test images in the features of genlib's "
            "cached MNIST classifier (lower is better; the floor is real training images against the same "
            "reference at the same n). Images/s are from a shared 2-core machine under nice -n 10: not a speed figure.",
            "", note, "",
            *([] if start is None else [f"Before the continued training: FD {start['fd']:.2f} (floor {start['floor']:.2f}, "
                                        f"class entropy {start['entropy']:.3f}).", ""]),
            "| seed | precision | steps | FD | floor | class entropy | classes seen | train s | img/s |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    body = [f"| {r['seed']} | {r['precision']} | {r['steps']} | {r['fd']:.2f} | {r['floor']:.2f} | "
            f"{r['entropy']:.3f} | {r['classes_seen']} | {r['train_seconds']:.0f} | {r['images_per_second']:,.0f} |"
            for r in rows]
    return "\n".join(head + body + ["", "Summary:", ""] + summary(rows)) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default=None, help="where MNIST is (torchvision layout)")
    ap.add_argument("--start", default="pretrained", choices=("pretrained", "scratch"),
                    help="continue the shipped pretrained GAN, or train a new one")
    ap.add_argument("--preset", default="seed", choices=("seed", "fast"), help="preset of a scratch model")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=None, help="stop each run after this many steps")
    ap.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--n-samples", type=int, default=5_000)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's)")
    ap.add_argument("--out", default=None, help="write the markdown report here (e.g. artifacts/gan-precision.md)")
    args = ap.parse_args(argv)

    import torch

    from genlib.quality.classifier import ensure_classifier
    from genlib.data import load_dataset
    from genlib.devices import flush_denormals_in_process

    flush_denormals_in_process()  # what genlib's CLI and job workers do first
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    bad = [p for p in precisions if p not in ("fp32", "bf16")]
    if bad:
        raise SystemExit(f"--precisions takes fp32 and/or bf16, not {bad}")
    plan = Plan(args.start, args.preset, args.epochs, args.max_steps, tuple(int(s) for s in args.seeds.split(",")),
                precisions, args.n_samples)
    data = load_dataset("mnist", root=args.data_root, download=False)
    classifier, _ = ensure_classifier(data)  # from ~/.cache/genlib; trained once (a few CPU minutes) when missing
    note = ("bf16 runs use the CPU's native bf16 matrix units (AMX) through autocast." if _fast_bf16()
            else "This CPU has no bf16 matrix units: the bf16 runs are slower, their rounding is the same.")
    start = None
    if plan.start == "pretrained":
        model, _, _ = build(plan, plan.seeds[0], "fp32")
        start = score(model, plan, data, classifier)
        print(f"pretrained start: FD {start['fd']:.2f} (floor {start['floor']:.2f})", flush=True)
    rows = []
    for seed in plan.seeds:
        for prec in plan.precisions:
            row = train_and_score(plan, seed, prec, data, classifier)
            rows.append(row)
            print(f"seed {seed} {prec}: {row['steps']} steps in {row['train_seconds']:.0f} s, FD {row['fd']:.2f} "
                  f"(floor {row['floor']:.2f})", flush=True)
    command = "nice -n 10 .venv/bin/python scripts/gan_precision.py " + " ".join(argv if argv is not None
                                                                                  else sys.argv[1:])
    text = markdown(plan, rows, command.strip(), note, start)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return 0


def _fast_bf16() -> bool:
    from genlib.devices import cpu_has_fast_bf16

    return cpu_has_fast_bf16()


if __name__ == "__main__":
    raise SystemExit(main())
