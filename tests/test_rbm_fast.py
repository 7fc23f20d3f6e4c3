"""genlib.models.rbm_fast against genlib.models.rbm's reference CD step: fed the same data and the same chain samples,
both make the same parameter update (CD-1, CD-k, PCD; the fused fp32 passes closely, with the binary products' row
sums on sparse batches and BLAS on dense ones; the bf16 chain loosely)."""

from __future__ import annotations

import copy

import pytest
import torch

from genlib.models import rbm_fast
from genlib.models.rbm import PARAMS, RBM, CDChain, RBMConfig

CASES = {
    "cd1": {"k": 1},
    "cdk": {"k": 3, "momentum": 0.5, "weight_decay": 0.01},
    "pcd": {"k": 2, "persistent": True},
    "pcd-centred": {"k": 1, "persistent": True, "centering": True, "momentum": 0.9},
}
# a new batch size makes the fast step reallocate its buffers (and PCD restart its particles); 40 > RBM.RECON_ROWS, so
# PCD's reconstruction error takes the batch's first rows; even steps see sparse images (~15% of pixels on, the row
# sums' range), odd ones dense (~50%, left to BLAS)
BATCHES = (7, 5, 7, 40, 40)
SPARSE_STEP_SCALE = 0.3


def _record_samples(model: RBM) -> list[tuple[torch.Tensor, ...]]:
    """Spy on the model's negative phase: (v0, h0, vk, reconstructed rows) of each step, cloned before the step reuses
    its buffers."""
    seen, run = [], model.contrastive_chain

    def spy(v0):
        out = run(v0)
        seen.append((*(t.detach().clone() for t in (v0, out.h0, out.vk)), out.recon.shape[0]))
        return out
    model.contrastive_chain = spy
    return seen


def _state(model: RBM) -> dict[str, torch.Tensor]:
    """The parameters, momentum buffers and centring offsets, in float64."""
    out = {name: getattr(model, name).detach().double().clone() for name in PARAMS}
    out.update({f"momentum.{k}": t.double().clone() for k, t in model._velocity.items()})
    out.update({f"offset.{k}": t.double().clone() for k, t in model._offsets.items()})
    return out


def _fast_against_reference(precision: str, options: dict, check) -> None:
    """Train a fast RBM for len(BATCHES) steps; after each, the float64 reference takes its step from the same v0 and
    the fast chain's own samples (h0, vk), and `check(name, fast_update, reference_update, fast, ref)` compares."""
    torch.manual_seed(0)
    fast = RBM(RBMConfig(image_shape=(1, 5, 6), n_hidden=11, init_std=0.5, **options))
    with torch.no_grad():
        fast.v_bias.fill_(-2.0)  # sparse chain samples (~15-20% on), as a trained RBM's are
    ref = copy.deepcopy(fast).double()
    fast.configure_training(lr=0.3, precision=precision)
    ref.configure_training(lr=0.3)
    assert rbm_fast.applies(fast) and not rbm_fast.applies(ref)
    seen = _record_samples(fast)
    for step, n in enumerate(BATCHES):
        x = torch.rand(n, 1, 5, 6, generator=torch.Generator().manual_seed(step))
        if step % 2 == 0:
            x *= SPARSE_STEP_SCALE
        fast_before, ref_before = _state(fast), _state(ref)
        got = fast.train_step(x)
        v0, h0, vk = (t.double() for t in seen[-1][:3])
        rows = seen[-1][3]  # the whole batch under CD and at PCD's (re)start; at most RECON_ROWS after
        restart = step == 0 or n != BATCHES[step - 1]
        assert rows == (min(n, RBM.RECON_ROWS) if options.get("persistent") and not restart else n)
        assert set(torch.cat([v0, vk]).unique().tolist()) <= {0.0, 1.0}
        with torch.no_grad():  # the chain's deterministic parts, from the reference's own maths
            chain = CDChain(h0, ref.p_v_given_h(h0[:rows]), vk, *(torch.nn.functional.linear(v, ref.W, ref.h_bias)
                                                                  for v in (v0, vk)))
        want = ref.cd_update(v0, chain)
        fast_after, ref_after = _state(fast), _state(ref)
        assert fast_after.keys() == ref_after.keys()
        for name in fast_after:
            check(name, fast_after[name] - fast_before.get(name, 0), ref_after[name] - ref_before.get(name, 0),
                  fast_after[name], ref_after[name])
        check("loss", got["loss"].double(), want["loss"], None, None)
        check("recon_error", got["recon_error"].double(), want["recon_error"], None, None)


@pytest.mark.parametrize("case", list(CASES))
def test_fused_fp32_step_equals_the_reference_step_on_the_same_samples(kernels, case, monkeypatch):
    def check(name, d_fast, d_ref, fast, ref):
        torch.testing.assert_close(d_fast, d_ref, rtol=1e-5, atol=2e-6, msg=lambda m: f"{name}: {m}")
        if fast is not None:
            torch.testing.assert_close(fast, ref, rtol=0, atol=2e-6, msg=lambda m: f"{name}: {m}")

    ran = {"row sums": 0, "BLAS": 0}  # which way each binary product went
    for name in ("binary_mm_", "binary_tmm_"):
        def counted(*args, _run=getattr(type(kernels), name)):
            done = _run(*args)
            ran["row sums" if done else "BLAS"] += 1
            return done
        monkeypatch.setattr(type(kernels), name, counted)
    _fast_against_reference("fp32", CASES[case], check)
    assert ran["row sums"] >= 6 and ran["BLAS"] >= 3, ran  # both ways checked against the reference


@pytest.mark.parametrize("case", list(CASES))
def test_bf16_step_equals_the_reference_step_on_the_same_samples_to_bf16_rounding(case):
    # bf16 rounds W (to 8 significant bits) before the chain's logits and the statistics' product: each update is the
    # reference's within a few per cent, far from what a missing or mis-signed term would give
    def check(name, d_fast, d_ref, fast, ref):
        err, size = (d_fast - d_ref).norm().item(), d_ref.norm().item()
        assert err <= 0.03 * size + 1e-6, f"{name}: |fast - reference| = {err:.3g}, |reference| = {size:.3g}"

    _fast_against_reference("bf16", CASES[case], check)


def test_float64_and_unfused_models_run_the_reference_step(monkeypatch):
    """Where rbm_fast does not apply (float64, fused_cpu off), training never enters it; bf16 always does."""
    def refuse(*args, **kwargs):
        raise AssertionError("the fast step ran")

    for name in ("chain", "step", "train_step", "train_step_uint8"):
        monkeypatch.setattr(rbm_fast.FastCD, name, refuse)
    x = torch.randint(0, 256, (6, 1, 4, 5), dtype=torch.uint8)
    for dtype, fused in ((torch.float64, True), (torch.float32, False)):
        model = RBM(RBMConfig(image_shape=(1, 4, 5), n_hidden=7, persistent=True, k=2)).to(dtype)
        model.fused_cpu = fused
        model.configure_training(lr=0.1)
        assert torch.isfinite(model.train_step(x / 255)["loss"]) and torch.isfinite(model.train_step_uint8(x)["loss"])
        assert model.pcd_chain.dtype == dtype
    bf16 = RBM(RBMConfig(image_shape=(1, 4, 5), n_hidden=7))
    bf16.configure_training(lr=0.1, precision="bf16")
    with pytest.raises(AssertionError, match="the fast step ran"):
        bf16.train_step(x / 255)


def test_the_fused_step_stores_w_column_major_and_a_checkpoint_restores_it(kernels):
    """The row sums read W^T's rows: the first fused step re-stores W (n_h, n_v) column-major, same shape and values,
    and the checkpoint of the trained model (averaged weights, momentum, chain) resumes into a fresh row-major one."""
    from genlib.runs.checkpoints import checkpoint_bytes, model_from_checkpoint, read_checkpoint

    torch.manual_seed(0)
    model = RBM(RBMConfig(image_shape=(1, 5, 6), n_hidden=11, persistent=True, centering=True, momentum=0.5))
    before = model.W.detach().clone()
    wt = rbm_fast.rows_of_wt(model)
    assert wt.is_contiguous() and model.W.shape == (11, 30) and torch.equal(model.W, before)
    assert rbm_fast.rows_of_wt(model).data_ptr() == wt.data_ptr()  # re-stored once
    model.configure_training(lr=0.1, ema=0.9)
    for step in range(3):
        model.train_step(torch.rand(8, 1, 5, 6, generator=torch.Generator().manual_seed(step)) * SPARSE_STEP_SCALE)
        model.update_average()
    assert model.W.t().is_contiguous() and model._velocity["W"].shape == (11, 30)
    ckpt = read_checkpoint(checkpoint_bytes(model, train_config={}, progress={}))
    fresh = model_from_checkpoint(ckpt)
    with model.averaged_weights():
        torch.testing.assert_close(fresh.W, model.W, rtol=0, atol=0)
    assert fresh.W.is_contiguous()
    fresh.configure_training(lr=0.1, ema=0.9)
    fresh.load_training_state(ckpt.training_state)
    torch.testing.assert_close(fresh._velocity["W"], model._velocity["W"], rtol=0, atol=0)
    assert torch.isfinite(fresh.train_step(torch.rand(8, 1, 5, 6) * SPARSE_STEP_SCALE)["loss"])


def test_row_sums_give_way_to_blas_beyond_two_threads_and_when_switched_off(kernels):
    fast, threads = rbm_fast.FastCD(), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert fast.row_sum_kernels(kernels) is kernels and fast.row_sum_kernels(None) is None
        torch.set_num_threads(rbm_fast.ROW_SUMS_MAX_THREADS + 1)  # MKL's threads outrun one thread's row sums
        assert fast.row_sum_kernels(kernels) is None
        torch.set_num_threads(1)
        fast.row_sums = False
        assert fast.row_sum_kernels(kernels) is None
    finally:
        torch.set_num_threads(threads)
