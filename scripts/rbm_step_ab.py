"""The RBM's CD-1 step in one process, fused CPU passes (genlib.models.rbm_fast) against the eager reference step
(RBM.cd_step) against its four matrix products alone, interleaved on the same batches so that a shared host's
drifting speed hits all three alike (a measurement, not a test).

    .venv/bin/python scripts/rbm_step_ab.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genlib.data import load_dataset  # noqa: E402
from genlib.devices import flush_denormals_in_process  # noqa: E402
from genlib.sampling.kernels import cd  # noqa: E402
from genlib.models import build_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--dataset", default="mnist", help="mnist, or digits (offline)")
    ap.add_argument("--batches", type=int, default=300, help="steps per timing")
    ap.add_argument("--repeats", type=int, default=6, help="interleaved timings of each path")
    args = ap.parse_args(argv)
    if cd.load() is None:
        print(f"the fused passes are not available here: {cd.status().detail}")
        return 1
    flush_denormals_in_process()
    torch.set_grad_enabled(False)
    data = load_dataset(args.dataset, root=args.data_root, device="cpu")
    order = torch.Generator().manual_seed(0)
    batches = [b for _, b in zip(range(args.batches), data.batches(64, generator=order))]  # uint8 (64, 1, 28, 28)
    models = {}
    for name in ("fused", "eager"):
        models[name] = build_model("rbm", {})  # the seed's 784-500 RBM
        models[name].configure_training(lr=0.1, precision="fp32")
        models[name].fused_cpu = name == "fused"
        for b in batches[:30]:  # warm-up: buffers, the library, MKL's threads
            models[name].train_step_uint8(b)
    m = models["fused"]
    s, W, b_v, c_h = m._fast.scratch, m.W, m.v_bias, m.h_bias

    def products() -> None:  # the step's four matmuls on its own buffers; alpha ~0 keeps W as it is
        torch.addmm(c_h, s.halves[0], W.t(), out=s.halves[2])
        torch.addmm(b_v, s.h0, W, out=s.recon)
        torch.addmm(c_h, s.halves[1], W.t(), out=s.halves[3])
        W.addmm_(s.p_h.t(), s.visibles, alpha=1e-12)

    paths = {"fused": lambda b: models["fused"].train_step_uint8(b),
             "eager": lambda b: models["eager"].train_step_uint8(b),
             "products only": lambda b: products()}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(args.repeats):
        for name, step in paths.items():
            t = time.perf_counter()
            for b in batches:
                step(b)
            times[name].append((time.perf_counter() - t) / len(batches) * 1e3)
    print(f"CD-1 step, batch 64, 784x500, fp32, {torch.get_num_threads()} threads; ms per step over {args.batches} "
          f"batches, {args.repeats} interleaved timings")
    for name, v in times.items():
        v = sorted(v)
        print(f"  {name:14s} median {v[len(v) // 2]:.3f}  min {v[0]:.3f}  all {' '.join(f'{x:.2f}' for x in v)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
