"""How many sampler steps a trained model needs: one run's (or snapshot's) weights sampled from noise with several
step counts (`sample_steps`: the EBM's Langevin steps, the RBM's Gibbs sweeps), each judged as
scripts/time_to_quality.py judges (the classifier's Fréchet distance and class shares on 2,000 samples), with the
seconds a 64-image grid takes at each count on this process's torch threads.

    .venv/bin/python scripts/sampler_steps.py pretrained/pretrained-ebm --steps 100,200,300,400,500,1000 --seeds 0,1 --data-root ../shared/data

Training never reads `sample_steps` (the EBM's training chains are `langevin_steps` long), so a count chosen here is a
sampling setting only, which a recipe can change without changing what it trains.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file from anywhere: genlib from this checkout
sys.path.insert(0, str(ROOT / "scripts"))

GRID = 64  # images in a page's sample grid


def load_weights(path: Path) -> Any:
    """The checkpoint of a run folder (its newest weights) or a checkpoint file itself."""
    from genlib.runs.checkpoints import load_checkpoint
    from genlib.runs.store import open_run

    return load_checkpoint(open_run(path).require_latest_weights() if path.is_dir() else path)


def with_steps(ckpt: Any, steps: int) -> Any:
    """The checkpoint's model with `sample_steps` set to `steps` (its weights unchanged), float32 on the CPU."""
    import dataclasses

    from genlib.runs.checkpoints import model_from_checkpoint

    if "sample_steps" not in ckpt.model_config:
        raise ValueError(f"a {ckpt.model_name.upper()} has no sample_steps: only models sampled by a chain from "
                         "noise (the RBM and the EBM) do")
    return model_from_checkpoint(dataclasses.replace(ckpt, model_config={**ckpt.model_config,
                                                                         "sample_steps": steps})).eval()


def grid_seconds(model: Any, seed: int = 0) -> float:
    """Wall seconds to draw one GRID-image grid, as a page does."""
    import torch

    t0 = time.perf_counter()
    model.sample(GRID, generator=torch.Generator().manual_seed(seed))
    return time.perf_counter() - t0


def study(ckpt: Any, steps: list[int], seeds: list[int], judge: Any) -> list[dict[str, Any]]:
    """One row per step count: FD and class shares for each seed, and the seconds of one grid."""
    rows = []
    for n in steps:
        model = with_steps(ckpt, n)
        row: dict[str, Any] = {"steps": n, "grid_seconds": grid_seconds(model), "seeds": {}}
        for seed in seeds:
            s = judge.samples(model, seed=seed)
            row["seeds"][seed] = {"frechet": s["frechet"], "floor": s["floor"], "shares": s["shares"]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def pooled_shares(row: dict[str, Any]) -> list[float]:
    """The class shares of all the row's seeds' samples together (equal counts per seed: the mean of their shares).
    The smallest of ten shares estimated from 2,000 samples each is biased low by their noise (about +-0.5 points
    at 5%); pooled over seeds it is estimated from that many times more samples."""
    shares = [s["shares"] for s in row["seeds"].values()]
    return [sum(col) / len(shares) for col in zip(*shares)]


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table: per step count, each seed's FD and smallest digit, the smallest digit of all the seeds'
    samples pooled, and the grid's seconds."""
    def smallest(shares: list[float]) -> str:
        return f"{100 * min(shares):.1f}% ({shares.index(min(shares))}s)"

    out = ["| sampler steps | FD per seed | smallest digit per seed (which) | smallest digit, seeds pooled | "
           "seconds per 64-image grid |",
           "|---:|---|---|---|---:|"]
    for r in rows:
        fds = " / ".join(f"{s['frechet']:.1f}" for s in r["seeds"].values())
        mins = " / ".join(smallest(s["shares"]) for s in r["seeds"].values())
        out.append(f"| {r['steps']} | {fds} | {mins} | {smallest(pooled_shares(r))} | {r['grid_seconds']:.2f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", type=Path, help="a run folder or a checkpoint file (an RBM's or an EBM's)")
    ap.add_argument("--steps", default="100,200,300,400,500,1000", help="sampler step counts, comma-separated")
    ap.add_argument("--seeds", default="0,1", help="sample seeds, comma-separated: 2,000 samples each")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: a dashboard job's share of 2 cores)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)

    import torch

    from genlib.data import load_dataset
    from time_to_quality import Judge

    torch.set_num_threads(args.threads)
    ckpt = load_weights(args.weights)
    rows = study(ckpt, [int(s) for s in args.steps.split(",")], [int(s) for s in args.seeds.split(",")],
                 Judge(load_dataset("mnist", root=args.data_root)))
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps({"weights": str(args.weights), "step": ckpt.step, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
