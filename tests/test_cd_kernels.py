"""The RBM's fused CPU passes (genlib.sampling.kernels.cd) against PyTorch references, and the fused CD step against the same
step computed in float64 from the draws it made."""

import copy

import pytest
import torch
import torch.nn.functional as F

from genlib.sampling.kernels import cd
from genlib.models import rbm_fast
from genlib.models.rbm import RBM, RBMConfig


def test_bernoulli_frequencies_match_p_and_streams_repeat(kernels):
    p = torch.linspace(0, 1, 11).repeat(40_001)  # odd length: the last element takes a word of its own
    s = torch.empty_like(p)
    stream = [12345, 0]
    kernels.bernoulli_(p, s, stream)
    assert stream == [12345, (p.numel() + 1) // 2]
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    freq = s.view(-1, 11).mean(0)
    sd = (torch.linspace(0, 1, 11) * (1 - torch.linspace(0, 1, 11)) / 40_001).sqrt()
    assert ((freq - torch.linspace(0, 1, 11)).abs() <= 5 * sd + 1e-9).all()
    assert freq[0] == 0 and freq[-1] == 1  # p = 0 never fires, p = 1 always does
    again = kernels.bernoulli_(p, torch.empty_like(p), [12345, 0])
    assert torch.equal(again, s)  # same key and counter: the same draws
    later = kernels.bernoulli_(p, torch.empty_like(p), stream)  # the advanced counter: fresh words
    assert not torch.equal(later, s)


def test_bernoulli_draws_are_independent_across_the_two_halves_of_a_word(kernels):
    p = torch.full((200_000,), 0.5)
    s = kernels.bernoulli_(p, torch.empty_like(p), [7, 0])
    a, b = s[:100_000], s[100_000:]  # element j and j + n/2 come from the same 64-bit word
    corr = ((a - 0.5) * (b - 0.5)).mean() / 0.25
    assert abs(corr) < 5 / 100_000 ** 0.5


def test_bernoulli_of_bytes_fires_with_probability_x_over_255(kernels):
    x = torch.tensor([0, 1, 64, 128, 200, 254, 255], dtype=torch.uint8).repeat(30_001)
    s = kernels.bernoulli_u8_(x, torch.empty(x.shape), [99, 0])
    freq, p = s.view(-1, 7).mean(0), torch.tensor([0, 1, 64, 128, 200, 254, 255]) / 255
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / 30_001).sqrt() + 1e-9).all()
    assert freq[0] == 0 and freq[-1] == 1
    with pytest.raises(ValueError, match="uint8"):
        kernels.bernoulli_u8_(x.float(), torch.empty(x.shape), [99, 0])


def test_sigmoid_matches_torch_in_place_and_out(kernels):
    a = torch.cat([torch.linspace(-100, 100, 20_001), torch.randn(10_000) * 5])
    ref = torch.sigmoid(a.double())
    out = kernels.sigmoid_(a, torch.empty_like(a))
    assert (out.double() - ref).abs().max() < 3e-7
    keep = a > -80  # below, exp's argument is clamped: sigmoid stays ~1e-38 where float32 has denormals
    assert ((out.double() - ref).abs() / ref)[keep].max() < 1e-6  # relative, down to sigmoid(-80) ~ 2e-35
    assert (out[~keep] < 2e-35).all()
    b = a.clone()
    assert kernels.sigmoid_(b, b) is b and torch.equal(b, out)


def test_visible_and_hidden_stats_match_torch(kernels):
    g = torch.Generator().manual_seed(0)
    n, n_v, n_h = 9, 37, 23
    v0 = torch.bernoulli(torch.full((n, n_v), 0.3), generator=g)
    vk = torch.bernoulli(torch.full((n, n_v), 0.4), generator=g)
    recon, b = torch.rand(n, n_v, generator=g), torch.randn(n_v, generator=g)
    logits = torch.randn(2 * n, n_h, generator=g) * 6
    p_h = torch.sigmoid(logits)
    expect_p = p_h.clone()
    dv, v0_sum, dh, p0_sum = (torch.empty(m) for m in (n_v, n_v, n_h, n_h))
    out = torch.zeros(3, dtype=torch.float64)
    kernels.visible_stats(recon, v0, vk, b, dv, v0_sum, out)
    kernels.hidden_stats(logits, p_h, dh, p0_sum, out)
    assert torch.equal(dv, (v0 - vk).sum(0)) and torch.equal(v0_sum, v0.sum(0))
    assert out[0].item() == pytest.approx(((recon - v0) ** 2).sum().item(), rel=1e-6)
    assert out[1].item() == pytest.approx(((v0 - vk).sum(0) @ b).item(), rel=1e-6)
    sp = F.softplus(logits.double())
    assert out[2].item() == pytest.approx((sp[:n].sum() - sp[n:].sum()).item(), rel=1e-6, abs=1e-4)
    assert torch.allclose(dh, expect_p[:n].sum(0) - expect_p[n:].sum(0), atol=1e-5)
    assert torch.allclose(p0_sum, expect_p[:n].sum(0), atol=1e-5)
    assert torch.equal(p_h[:n], expect_p[:n]) and torch.equal(p_h[n:], -expect_p[n:])  # negated in place


def test_non_finite_inputs_give_nan_metrics(kernels):
    # a diverged model must reach the training loop's NaN check, whatever the compiler did with the arithmetic
    recon, v = torch.rand(4, 6), torch.zeros(4, 6)
    recon[2, 3] = float("nan")
    out = torch.zeros(3, dtype=torch.float64)
    kernels.visible_stats(recon, v, v, torch.zeros(6), torch.empty(6), torch.empty(6), out)
    assert out[0].isnan()
    logits = torch.zeros(8, 5)
    logits[5, 1] = float("inf")
    kernels.hidden_stats(logits, torch.rand(8, 5), torch.empty(5), torch.empty(5), out)
    assert out[2].isnan()


def test_kernels_refuse_tensors_they_cannot_take(kernels):
    with pytest.raises(ValueError, match="contiguous float32 CPU"):
        kernels.sigmoid_(torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous float32 CPU"):
        kernels.sigmoid_(torch.zeros(4, 4).t(), torch.zeros(4, 4))


@pytest.mark.parametrize("options,uint8", [({}, False), ({}, True), ({"momentum": 0.5, "weight_decay": 0.01}, False),
                                           ({"centering": True}, True)])
def test_fused_cd1_step_equals_the_float64_step_from_its_own_draws(kernels, options, uint8):
    """The fused step's draws (v0, h0, v1) are in the chain's buffers afterwards: from them, the seed's maths in
    float64 (sigmoids, free energies, SGD) must give the same parameters and metrics."""
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(image_shape=(1, 5, 6), n_hidden=11, init_std=0.5, **options))
    ref = copy.deepcopy(rbm).double()
    rbm.configure_training(lr=0.3)
    x = torch.randint(0, 256, (7, 1, 5, 6), dtype=torch.uint8)
    assert rbm_fast.fused_kernels(rbm) is kernels
    for _ in range(2):  # the second step exercises momentum buffers and centring's moving offsets
        W, b, c = (t.detach().double().clone() for t in (rbm.W, rbm.v_bias, rbm.h_bias))
        velocity = {k: t.double().clone() for k, t in rbm._velocity.items()}
        offsets = {k: t.double().clone() for k, t in rbm._offsets.items()}
        metrics = rbm.train_step_uint8(x) if uint8 else rbm.train_step(x / 255)  # the loop's entry, or [0, 1] floats
        s = rbm._fast.scratch
        v0, v1, h0 = s.visibles[:7].double(), s.visibles[7:].double(), s.h0.double()
        assert set(v0.unique().tolist()) <= {0.0, 1.0} and set(h0.unique().tolist()) <= {0.0, 1.0}
        ph0, ph1 = torch.sigmoid(v0 @ W.T + c), torch.sigmoid(v1 @ W.T + c)
        free = lambda v: -(v @ b) - F.softplus(v @ W.T + c).sum(-1)  # noqa: E731
        assert metrics["loss"].item() == pytest.approx((free(v0).mean() - free(v1).mean()).item(), abs=1e-4)
        recon = torch.sigmoid(h0 @ W + b)
        assert metrics["recon_error"].item() == pytest.approx(((recon - v0) ** 2).mean().item(), rel=1e-5)
        g = {"W": -(ph0.T @ v0 - ph1.T @ v1) / 7, "v_bias": -(v0 - v1).mean(0), "h_bias": -(ph0 - ph1).mean(0)}
        params = {"W": W, "v_bias": b, "h_bias": c}
        if options.get("centering"):
            mu, lam = v0.mean(0), ph0.mean(0)
            if offsets:
                mu, lam = offsets["mu"] + 0.01 * (mu - offsets["mu"]), offsets["lam"] + 0.01 * (lam - offsets["lam"])
            g["W"] = g["W"] - torch.outer(lam, g["v_bias"]) - torch.outer(g["h_bias"], mu)
            b_c, c_c = b + W.T @ lam, c + W @ mu
            W1 = W - 0.3 * g["W"]
            b_c, c_c = b_c - 0.3 * g["v_bias"], c_c - 0.3 * g["h_bias"]
            expect = {"W": W1, "v_bias": b_c - W1.T @ lam, "h_bias": c_c - W1 @ mu}
        else:
            expect = {}
            for name, p in params.items():
                d = g[name] + options.get("weight_decay", 0.0) * p
                if options.get("momentum"):
                    d = d if name not in velocity else options["momentum"] * velocity[name] + d
                expect[name] = p - 0.3 * d
        for name, want in expect.items():
            assert torch.allclose(getattr(rbm, name).double(), want, atol=2e-6), name


def test_fused_and_eager_steps_learn_alike(kernels):
    """Same model, same batches: the fused and the eager step draw different random numbers but follow the same
    gradient; after 30 steps their reconstruction errors agree to within the sampling noise."""
    torch.manual_seed(0)
    base = RBM(RBMConfig(image_shape=(1, 6, 6), n_hidden=16, init_std=0.1))
    eager = copy.deepcopy(base)
    eager.fused_cpu = False
    data = (torch.rand(64, 1, 6, 6) < torch.linspace(0.1, 0.9, 36).view(1, 1, 6, 6)).float()
    errors = {}
    for name, model in (("fused", base), ("eager", eager)):
        model.configure_training(lr=0.5)
        torch.manual_seed(1)
        for step in range(30):
            m = model.train_step(data[(step * 16) % 64:][:16])
        errors[name] = m["recon_error"].item()
        assert rbm_fast.fused_kernels(model) is (kernels if name == "fused" else None)
    assert errors["fused"] == pytest.approx(errors["eager"], abs=0.03)


def test_the_uint8_entry_is_train_step_of_x_over_255_where_it_cannot_fuse():
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(image_shape=(1, 4, 4), n_hidden=5, binarize="threshold"))  # thresholds: no fused pass
    twin = copy.deepcopy(rbm)
    for model in (rbm, twin):
        model.configure_training(lr=0.1)
    x = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8)
    torch.manual_seed(4)
    a = rbm.train_step_uint8(x)
    torch.manual_seed(4)
    b = twin.train_step(x.float() / 255)
    assert torch.equal(rbm.W, twin.W) and a["loss"].item() == b["loss"].item()


def test_draws_follow_torch_manual_seed(kernels):
    rbm = RBM(RBMConfig(image_shape=(1, 4, 4), n_hidden=5))
    rbm.configure_training(lr=0.1)
    x = torch.rand(6, 1, 4, 4)
    runs = []
    for _ in range(2):
        model = copy.deepcopy(rbm)
        torch.manual_seed(3)
        model.train_step(x)
        runs.append(model.W.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_a_failed_build_falls_back_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("GENLIB_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "/bin/false")
    cd._build.cache_clear()
    try:
        assert cd.load() is None
        assert not cd.status().ok and "compiling cd_cpu.c failed" in cd.status().detail
        rbm = RBM(RBMConfig(image_shape=(1, 4, 4), n_hidden=5))
        rbm.configure_training(lr=0.1)
        assert rbm_fast.fused_kernels(rbm) is None
        assert torch.isfinite(rbm.train_step(torch.rand(3, 1, 4, 4))["loss"])  # the reference step runs
        monkeypatch.setenv(cd.ENV_SWITCH, "0")
        cd._build.cache_clear()
        assert cd.load() is None and "GENLIB_FUSED_CD=0" in cd.status().detail
    finally:
        monkeypatch.undo()
        cd._build.cache_clear()  # the next caller builds (or finds) the real library again
