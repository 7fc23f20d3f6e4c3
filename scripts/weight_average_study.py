"""The weight average (genlib.models.averaging; Polyak & Juditsky 1992, Yazici et al. 2019) against the live weights of
the same run: one recipe trained in this process on one torch thread, the live weights and their moving averages at
several decays copied at given seconds of training, then each copy judged as scripts/time_to_quality.py judges (the
classifier's Fréchet distance and class shares on 2,000 samples, the RBM's AIS, the VAE's IWAE).

    .venv/bin/python scripts/weight_average_study.py --model rbm --at 120,300,600 --decays 0.99,0.999,0.9999

Paired by design: every column of a row comes from one training run, so the host's speed (which drifts here by a
third within minutes) moves them together; the seconds are of this loop (data loaded, no worker, no side tasks), so
they run ahead of the dashboard's job path, which scripts/time_to_quality.py measures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file from anywhere: genlib from this checkout
sys.path.insert(0, str(ROOT / "scripts"))


def train_and_copy(model_name: str, recipe_spec: str, at: list[float], decays: list[float], data: Any,
                   seed: int = 0) -> list[dict[str, Any]]:
    """Train `recipe_spec` until the last of `at` (seconds); at each, copy the live weights and each decay's average.
    Returns [{"seconds", "step", "weights": {"live" | "ema <d>": state_dict}}]."""
    import torch

    from genlib.models import build_model
    from genlib.models.averaging import WeightAverage
    from genlib.training import Callbacks, TrainConfig, train
    from time_to_quality import parse_recipe

    recipe = parse_recipe(model_name, recipe_spec)
    # the project's loop (genlib.training.train: batch order, data-dependent start, denormals), run until the last
    # copy; its control callback, called after every step, folds the weights into each average and copies when due
    cfg = TrainConfig(**{**recipe.train_values(), "epochs": 100_000, "seed": seed})
    torch.manual_seed(seed)
    model = build_model(model_name, recipe.model_values())
    model.configure_training(lr=cfg.lr)  # no average of its own: the study keeps one per decay
    averages = {d: WeightAverage(d) for d in decays}
    copies: list[dict[str, Any]] = []
    pending = sorted(at)
    t0 = time.perf_counter()

    def control(progress: Any) -> bool:
        live = model.averaged_entries()
        for avg in averages.values():
            avg.update(live)
        if time.perf_counter() - t0 >= pending[0]:
            weights = {"live": {k: v.clone() for k, v in model.state_dict().items()}}
            for d, avg in averages.items():
                with avg.shown(live):
                    weights[f"ema {d:g}"] = {k: v.clone() for k, v in model.state_dict().items()}
            copies.append({"seconds": pending.pop(0), "step": progress.step, "weights": weights})
            print(f"copied at {copies[-1]['seconds']:.0f} s, step {progress.step}", flush=True)
        return bool(pending)  # False ends the training

    train(model, data, cfg, callbacks=Callbacks(control=control))
    return copies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=("rbm", "vae", "gan", "ebm"))
    ap.add_argument("--recipe", default="lecture", help="a recipe or variant, as time_to_quality.py's --recipes")
    ap.add_argument("--at", default="120,300,600", help="seconds of training at which to copy the weights")
    ap.add_argument("--decays", default="0.99,0.999,0.9999")
    ap.add_argument("--iwae-k", type=int, default=100)
    ap.add_argument("--n-test", type=int, default=1_000)
    ap.add_argument("--ais-steps", type=int, default=2_000)
    ap.add_argument("--ais-chains", type=int, default=32)
    ap.add_argument("--ais-repeats", type=int, default=1)
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args(argv)

    import torch

    from genlib.data import load_dataset
    from genlib.models import build_model
    from time_to_quality import Judge, likelihood, parse_recipe

    torch.set_num_threads(1)  # a dashboard job's share of a 2-core CPU
    data = load_dataset("mnist", root=args.data_root)
    copies = train_and_copy(args.model, args.recipe, [float(a) for a in args.at.split(",")],
                            [float(d) for d in args.decays.split(",")], data)
    judge = Judge(data)
    model_values = parse_recipe(args.model, args.recipe).model_values()
    print("| seconds | step | weights | FD (x floor) | smallest digit | likelihood |\n|---:|---:|---|---:|---:|---:|")
    for copy in copies:
        for name, state in copy["weights"].items():
            model = build_model(args.model, model_values)
            model.load_state_dict(state)
            model.eval()
            s, lik = judge.samples(model), likelihood(args.model, model, data, args)
            figure = (f"AIS {lik['ais_ll']:.1f}" if "ais_ll" in lik else
                      f"IWAE {lik['iwae_nll_raw']:.1f}" if "iwae_nll_raw" in lik else "-")
            print(f"| {copy['seconds']:.0f} | {copy['step']:,} | {name} | {s['frechet']:.1f} ({s['ratio']:.0f}x) "
                  f"| {100 * s['min_share']:.1f}% | {figure} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
