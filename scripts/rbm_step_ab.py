"""The RBM's training step in one process, interleaved on the same batches so that a shared host's drifting speed hits
every path alike (a measurement, not a test): the fused CPU step (genlib.models.rbm_fast) with its binary products as
row sums, the same step with every product left to BLAS (the step before the row sums), and the eager reference step
(RBM.cd_step); for the seed's CD-1 also its four matrix products alone.

    .venv/bin/python scripts/rbm_step_ab.py --recipe seed --data-root ../shared/data
    .venv/bin/python scripts/rbm_step_ab.py --recipe lecture --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genlib.data import load_dataset  # noqa: E402
from genlib.devices import flush_denormals_in_process  # noqa: E402
from genlib.models import build_model  # noqa: E402
from genlib.presets import recipe  # noqa: E402
from genlib.sampling.kernels import cd  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", choices=("seed", "lecture"), default="seed",
                    help="seed: CD-1, batch 64, plain SGD; lecture: centred PCD-1, batch 100, momentum")
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--dataset", default="mnist", help="mnist, or digits (offline)")
    ap.add_argument("--batches", type=int, default=300, help="steps per timing")
    ap.add_argument("--repeats", type=int, default=6, help="interleaved timings of each path")
    ap.add_argument("--warmup", type=int, default=1200,
                    help="steps trained first, so that the chains' samples are digits, as sparse as a run's")
    args = ap.parse_args(argv)
    if cd.load() is None:
        print(f"the fused passes are not available here: {cd.status().detail}")
        return 1
    flush_denormals_in_process()
    torch.set_grad_enabled(False)
    r = recipe("rbm", args.recipe)
    batch = r.train_values()["batch_size"]
    data = load_dataset(args.dataset, root=args.data_root, device="cpu")
    order = torch.Generator().manual_seed(0)
    epoch = list(data.batches(batch, generator=order))  # uint8 (B, 1, 28, 28)
    batches = epoch[:args.batches]
    torch.manual_seed(0)
    trained = build_model("rbm", r.model_values())
    trained.configure_training(lr=r.train_values()["lr"], precision="fp32")
    trained.init_from_data(data.x_train)
    for i in range(args.warmup):
        trained.train_step_uint8(epoch[i % len(epoch)])
    models = {name: copy.deepcopy(trained) for name in ("row sums", "dense products", "eager")}
    models["eager"].fused_cpu = False
    models["dense products"]._fast.row_sums = False  # every product to BLAS ...
    models["dense products"].RECON_ROWS = batch  # ... and the whole batch reconstructed: the step before
    paths = {name: model.train_step_uint8 for name, model in models.items()}
    if args.recipe == "seed":
        m = models["row sums"]
        s, W, b_v, c_h = m._fast.scratch, m.W, m.v_bias, m.h_bias

        def products(_: torch.Tensor) -> None:  # CD-1's four matmuls on its own buffers; alpha ~0 keeps W as it is
            torch.addmm(c_h, s.halves[0], W.t(), out=s.halves[2])
            torch.addmm(b_v, s.h0, W, out=s.recon)
            torch.addmm(c_h, s.halves[1], W.t(), out=s.halves[3])
            W.addmm_(s.p_h.t(), s.visibles, alpha=1e-12)
        paths["dense products alone"] = products
    v = models["row sums"]._fast.scratch.halves
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(args.repeats):
        for name, step in paths.items():
            t = time.perf_counter()
            for b in batches:
                step(b)
            times[name].append((time.perf_counter() - t) / len(batches) * 1e3)
    print(f"RBM {args.recipe} step ({r.model_values()['n_hidden']} hidden, batch {batch}, "
          f"{'PCD' if r.model_values()['persistent'] else 'CD'}-{r.model_values()['k']}), fp32, "
          f"{torch.get_num_threads()} threads, after {args.warmup} steps (ones: data {v[0].mean():.1%}, chain "
          f"{v[1].mean():.1%}); ms per step over {args.batches} batches, {args.repeats} interleaved timings")
    base = sorted(times["row sums"])[args.repeats // 2]
    for name, t in times.items():
        t = sorted(t)
        med = t[len(t) // 2]
        print(f"  {name:22s} median {med:.3f}  min {t[0]:.3f}  ({med / base:.2f}x the row sums')  "
              f"all {' '.join(f'{x:.2f}' for x in t)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
