"""Smoke test of scripts/bench.py (the side-by-side speed table) and checks of its FLOP counts.

The smoke run uses the offline digits dataset and tiny budgets: it proves the table prints with numbers, not speed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "scripts" / "bench.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("genlib_bench_script", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_bench()


def _counted_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_vae_flops_match_the_model(bench):
    from genlib.models import build_model

    vae = build_model("vae", {})
    x = torch.rand(4, 1, 28, 28)
    forward = _counted_flops(lambda: vae.loss(x)) / 4  # FLOPs of one image's forward pass, matmuls only
    assert bench.vae_flops_per_image() == pytest.approx(3 * forward)


def test_gan_flops_match_the_model(bench):
    from genlib.models import build_model

    gan = build_model("gan", {"preset": "seed"})
    z, x = torch.randn(4, 100), torch.rand(4, 1, 28, 28)

    def forward():  # what one training step runs forward: G once, D on the real and on the fake batch
        fake = gan.netG(z)
        gan.netD(x)
        gan.netD(fake)

    assert bench.gan_flops_per_image() == pytest.approx(3 * _counted_flops(forward) / 4)
    assert bench.gan_flops_per_image() / 6 == pytest.approx(51.7e6 + 2 * 10.4e6, rel=0.01)  # MACs: G + 2 D


def test_rbm_flops_are_five_matmuls(bench):
    assert bench.rbm_flops_per_image() == 5 * 2 * 784 * 500


def test_only_selects_models_and_ids(bench):
    assert {b.model for b in bench.select("vae")} == {"vae"}
    assert [b.id for b in bench.select("vae/seed,gan/seed")] == ["vae/seed", "gan/seed"]
    assert len(bench.select(None)) == len(bench.BENCHES)
    with pytest.raises(SystemExit):
        bench.select("nonsense")


def test_targets_say_met_or_gap(bench):
    benches = bench.select("vae/seed,vae/genlib-bernoulli-fp32,vae/genlib-bernoulli-bf16")
    results = {"vae/seed": {"images_per_second": 1000.0},
               "vae/genlib-bernoulli-fp32": {"images_per_second": 5000.0},
               "vae/genlib-bernoulli-bf16": {"images_per_second": 3000.0}}
    verdicts = dict(bench.target_lines(results, benches))
    assert verdicts["vae/genlib-bernoulli-fp32 vs vae/seed: target >= 4x"].endswith("met")
    assert "gap" in verdicts["vae/genlib-bernoulli-bf16 vs vae/seed: target >= 4x"]


def test_rounds_report_the_median_run_and_the_range(bench):
    runs = [{"images_per_second": 300.0, "steps": 3}, {"error": "timed out"}, {"images_per_second": 100.0, "steps": 1},
            {"images_per_second": 200.0, "steps": 2}]
    median = bench.median_run(runs)
    assert median["steps"] == 2 and median["round_ips"] == [100.0, 200.0, 300.0]  # errors dropped, median kept whole
    assert bench.median_run([{"error": "boom"}]) == {"error": "boom"}
    row = {"ips": 200.0, "round_ips": median["round_ips"]}
    assert bench.cell(row, "ips") == "200 (0.1-0.3k)"
    assert bench.cell({"ips": 200.0, "round_ips": [200.0]}, "ips") == "200"


def test_the_eager_rbm_row_turns_the_fused_passes_off(bench):
    assert dict(bench.BY_ID["rbm/genlib-eager-fp32"].env) == {"GENLIB_FUSED_CD": "0"}
    assert bench.BY_ID["rbm/genlib-fp32"].env == ()


@pytest.mark.timeout(90)
def test_quick_run_prints_the_table_with_numbers():
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--only", "vae/seed,vae/genlib-bernoulli-fp32", "--dataset", "digits",
         "--seconds", "0.3", "--warmup", "1", "--peak-size", "256", "--peak-reps", "2", "--markdown",
         "--threads", "1"],  # one thread: on a busy machine two threads' small kernels wait for a descheduled peer
        capture_output=True, text=True, timeout=85, cwd=str(REPO))
    elapsed = time.perf_counter() - t
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "matmul peak" in out and "GFLOP/s" in out
    rows = [line for line in out.splitlines() if line.startswith("VAE ")]
    assert len(rows) == 2, out
    for line in rows:  # batch, img/s and ratio are numbers
        assert re.search(r"\s128\s+[\d,]+\*?\s+\d+\s+\d+\.\d\dx\s", line), line
    assert re.search(r"^\| VAE \| genlib VAE bernoulli, fp32 \| fp32 \| 128 \| [\d,]+\*? \|", out, re.M), out
    assert "vae/genlib-bernoulli-fp32 vs vae/seed: target >= 4x" in out
    assert re.search(r"target >= 4x\s+\d+\.\d\dx: (met|gap)", out), out
    assert elapsed < 60, f"the smoke run took {elapsed:.0f} s"


# ---- scripts/gan_precision.py: fp32 against bf16 from the same start ----

def _load_gan_precision():
    spec = importlib.util.spec_from_file_location("genlib_gan_precision_script", REPO / "scripts" / "gan_precision.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_gan_precision_summary_sets_the_precision_gap_against_the_seed_spread():
    gp = _load_gan_precision()
    rows = [{"seed": s, "precision": p, "fd": fd} for s, p, fd in
            [(0, "fp32", 10.0), (0, "bf16", 10.5), (1, "fp32", 12.0), (1, "bf16", 11.0)]]
    lines = gp.summary(rows)
    assert "- fp32: mean FD 11.00, median 11.00 over 2 seed(s); seed-to-seed SD 1.41, range 2.00" in lines
    assert "- bf16: mean FD 10.75, median 10.75 over 2 seed(s); seed-to-seed SD 0.35, range 0.50" in lines
    assert "- seed 0: bf16 - fp32 = +0.50" in lines and "- seed 1: bf16 - fp32 = -1.00" in lines
    # gaps +0.5 and -1.0: mean -0.25, SD 1.06, standard error 1.06 / sqrt(2) = 0.75
    assert "- paired gap bf16 - fp32: mean -0.25 ± 0.75 (standard error, 2 seeds), median -0.25" in lines
    assert gp.summary(rows[:2])[-1] == "- seed 0: bf16 - fp32 = +0.50"  # one seed: no spread, no standard error


@pytest.mark.parametrize("start", ["scratch", "pretrained"])
def test_gan_precision_runs_start_from_the_same_weights_in_both_precisions(start):
    gp = _load_gan_precision()
    if start == "pretrained" and not (gp.PRETRAINED / "checkpoints" / "last.safetensors").exists():
        pytest.skip("no pretrained GAN in this checkout")
    plan = gp.Plan(start, "fast", 1, 2, (3,), ("fp32", "bf16"), 100)
    (m32, batch32, lr32), (m16, batch16, lr16) = gp.build(plan, 3, "fp32"), gp.build(plan, 3, "bf16")
    assert (m32.precision, m16.precision) == ("fp32", "bf16") and (batch32, lr32) == (batch16, lr16)
    s32, s16 = m32.state_dict(), m16.state_dict()
    assert s32.keys() == s16.keys() and all(torch.equal(s32[k], s16[k]) for k in s32)
    if start == "pretrained":  # the shipped run's weights, lr and batch size, not a fresh model's
        ckpt = gp._pretrained()
        assert all(torch.equal(s32[k], v) for k, v in ckpt.model_state.items())
        assert (batch32, lr32) == (ckpt.train_config["batch_size"], ckpt.train_config["lr"])
        assert bool(m32.optG.state) == bool(ckpt.training_state)  # Adam's moments came with it, where it has them
    else:
        assert (batch32, lr32) == (256, 1e-4)
        other = gp.build(gp.Plan(start, "fast", 1, 2, (4,), ("fp32",), 100), 4, "fp32")[0]
        assert not torch.equal(next(iter(other.state_dict().values())), next(iter(s32.values())))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("recipe,paths", [("seed", ("row sums", "dense products", "eager", "dense products alone")),
                                          ("lecture", ("row sums", "dense products", "eager"))])
def test_rbm_step_ab_prints_each_paths_timings(recipe, paths):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "rbm_step_ab.py"), "--recipe", recipe, "--dataset",
                           "digits", "--batches", "3", "--repeats", "2", "--warmup", "20"], capture_output=True,
                          text=True, timeout=220, cwd=str(REPO))
    if "not available here" in proc.stdout and os.environ.get("GENLIB_REQUIRE_KERNELS") != "1":
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"RBM {recipe} step" in proc.stdout and "ones: data" in proc.stdout
    for name in paths:
        assert re.search(rf"^  {name}\s+median \d+\.\d+  min \d+\.\d+  \(\d+\.\d+x", proc.stdout, re.M), \
            proc.stdout
