"""Tests of genlib.models.rbm and genlib.sampling.gibbs against references: brute force, autograd + torch.optim.SGD, replay."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from genlib.runs.checkpoints import checkpoint_bytes, read_checkpoint
from genlib.data import load_dataset, to_unit
from genlib.models.rbm import RBM, RBMConfig
from genlib.sampling.gibbs import gibbs_chain

TINY = (1, 2, 3)  # 6 visible units


def _all_binary(n: int, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=dtype)  # (2^n, n)


def _images(n: int, seed: int = 0, shape=(1, 28, 28)) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def _spy_chain(model: RBM) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Record (v0, vk) of every negative phase the model runs."""
    seen, run = [], model.contrastive_chain

    def spy(v0):
        out = run(v0)
        seen.append((v0.clone(), out.vk.clone()))
        return out
    model.contrastive_chain = spy
    return seen


def test_free_energy_and_energy_match_brute_force_over_all_states():
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(image_shape=TINY, n_hidden=5, init_std=1.0)).double()
    with torch.no_grad():
        rbm.v_bias.normal_()
        rbm.h_bias.normal_()
    v, h = _all_binary(6), _all_binary(5)  # (64, 6), (32, 5)
    # E for every (v, h) pair: (64, 32); F(v) = -log sum_h exp(-E(v, h))
    energies = torch.stack([rbm.energy(v, h_row.expand(64, 5)) for h_row in h], dim=1)
    expected = -torch.logsumexp(-energies, dim=1)
    torch.testing.assert_close(rbm.free_energy(v), expected, rtol=1e-12, atol=1e-12)
    # and the energy itself against its definition -v.b - h.c - h^T W v, one pair at a time
    i, j = 37, 11
    direct = -(v[i] @ rbm.v_bias) - (h[j] @ rbm.h_bias) - h[j] @ rbm.W @ v[i]
    torch.testing.assert_close(energies[i, j], direct)
    # the conditionals are the ratios of the joint: p(h_j = 1 | v) from brute force
    joint = torch.softmax(-energies, dim=1)  # p(h | v) (64, 32)
    torch.testing.assert_close(rbm.p_h_given_v(v), joint @ h, rtol=1e-12, atol=1e-12)


def test_free_energy_does_not_overflow():
    rbm = RBM(RBMConfig(image_shape=TINY, n_hidden=5))
    with torch.no_grad():
        rbm.W.fill_(100.0)
    assert torch.isfinite(rbm.free_energy(torch.ones(2, 6))).all()


@pytest.mark.parametrize("momentum, weight_decay, k, persistent", [
    (0.0, 0.0, 1, False), (0.9, 0.0, 1, False), (0.5, 0.01, 3, False), (0.9, 0.001, 2, True)])
def test_closed_form_update_equals_sgd_on_autograd_of_seed_loss(momentum, weight_decay, k, persistent):
    torch.manual_seed(0)
    cfg = RBMConfig(image_shape=(1, 4, 5), n_hidden=7, k=k, persistent=persistent, momentum=momentum,
                    weight_decay=weight_decay, init_std=0.5)
    rbm = RBM(cfg).double()
    with torch.no_grad():
        rbm.v_bias.normal_()
        rbm.h_bias.normal_()
    ref = copy.deepcopy(rbm)
    rbm.configure_training(lr=0.1)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay)
    seen = _spy_chain(rbm)
    for step in range(3):  # several steps, so the momentum buffers matter
        metrics = rbm.train_step(_images(16, seed=step, shape=(1, 4, 5)))
        v0, vk = seen[-1]
        opt.zero_grad()
        loss = ref.free_energy(v0).mean() - ref.free_energy(vk).mean()  # the seed's loss, vk held fixed
        loss.backward()
        opt.step()
        torch.testing.assert_close(metrics["loss"], loss.detach(), rtol=1e-12, atol=1e-12)
        for name in ("W", "v_bias", "h_bias"):
            torch.testing.assert_close(getattr(rbm, name), getattr(ref, name), rtol=1e-12, atol=1e-12)
    assert not any(p.grad is not None for p in rbm.parameters()), "training must not use autograd"


def _resumed(rbm: RBM):
    """(its checkpoint, a new RBM) from rbm's checkpoint bytes, with weights and training state loaded."""
    ckpt = read_checkpoint(checkpoint_bytes(rbm, train_config={}, progress={"step": 2}))
    again = RBM(rbm.config)
    again.load_state_dict(ckpt.model_state)
    again.configure_training(lr=0.1)
    again.load_training_state(ckpt.training_state)
    return ckpt, again


def _assert_same_next_step(rbm: RBM, again: RBM, x: torch.Tensor, seed: int) -> None:
    for model in (rbm, again):
        torch.manual_seed(seed)
        model.train_step(x)
    for a, b in zip(rbm.parameters(), again.parameters()):
        assert torch.equal(a, b)


def _centred_free_energy(W, b_c, c_c, mu, lam, v):
    """F~(v) = -(v-mu).b~ + sum_j [lam_j a_j - softplus(a_j)], a = c~ + W (v-mu): the centred energy
    E = -(v-mu).b~ - (h-lam).c~ - (h-lam)^T W (v-mu) summed over binary h (Melchior et al. 2016, eq. 8)."""
    a = torch.nn.functional.linear(v - mu, W, c_c)
    return -((v - mu) @ b_c) + (a * lam).sum(-1) - torch.nn.functional.softplus(a).sum(-1)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_centred_update_equals_sgd_on_autograd_of_the_centred_free_energy(momentum):
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(image_shape=(1, 4, 5), n_hidden=7, momentum=momentum, init_std=0.5, centering=True)).double()
    with torch.no_grad():
        rbm.v_bias.normal_()
        rbm.h_bias.normal_()
    rbm.configure_training(lr=0.1)
    seen = _spy_chain(rbm)
    velocity = {}
    for step in range(3):
        W, b, c = (t.detach().clone() for t in (rbm.W, rbm.v_bias, rbm.h_bias))
        rbm.train_step(_images(16, seed=step, shape=(1, 4, 5)))
        v0, vk = seen[-1]
        mu, lam = rbm._offsets["mu"], rbm._offsets["lam"]  # as this step used them
        if step == 0:  # the first batch sets the offsets to its own means
            torch.testing.assert_close(mu, v0.mean(0))
            torch.testing.assert_close(lam, torch.sigmoid(torch.nn.functional.linear(v0, W, c)).mean(0))
        # the reference: autograd of the centred loss in centred coordinates, torch.optim.SGD's momentum rule
        params = {"W": W.requires_grad_(), "b": (b + lam @ W).detach().requires_grad_(),
                  "c": (c + W @ mu).detach().requires_grad_()}
        loss = (_centred_free_energy(params["W"], params["b"], params["c"], mu, lam, v0).mean()
                - _centred_free_energy(params["W"], params["b"], params["c"], mu, lam, vk).mean())
        loss.backward()
        with torch.no_grad():
            for name, t in params.items():
                buf = velocity[name] = (t.grad.clone() if name not in velocity
                                        else velocity[name].mul_(momentum).add_(t.grad))
                t -= 0.1 * buf
            W_ref = params["W"]
            b_ref, c_ref = params["b"] - lam @ W_ref, params["c"] - W_ref @ mu  # back to the plain biases
        for got, want in ((rbm.W, W_ref), (rbm.v_bias, b_ref), (rbm.h_bias, c_ref)):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # the energy function is the plain RBM's: centring changed the step, not the model's form (F = F~ + const)
    v = _all_binary(20)[:64]
    with torch.no_grad():
        centred = _centred_free_energy(rbm.W, rbm.v_bias + lam @ rbm.W, rbm.h_bias + rbm.W @ mu, mu, lam, v)
        gap = rbm.free_energy(v) - centred
    torch.testing.assert_close(gap, gap[:1].expand_as(gap), rtol=1e-10, atol=1e-10)


def test_centring_offsets_follow_the_data_and_resume_from_a_checkpoint():
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(image_shape=(1, 4, 4), n_hidden=6, centering=True, momentum=0.5))
    rbm.configure_training(lr=0.1)
    first = (_images(8, seed=0, shape=(1, 4, 4)) > 0.5).float()
    rbm.train_step(first)
    mu0 = rbm._offsets["mu"].clone()
    torch.testing.assert_close(mu0, first.reshape(8, -1).mean(0))
    second = torch.ones(8, 1, 4, 4)
    rbm.train_step(second)  # the running mean moves 1% of the way to the new batch's mean
    torch.testing.assert_close(rbm._offsets["mu"], mu0 + 0.01 * (1 - mu0))
    ckpt, again = _resumed(rbm)
    assert set(ckpt.training_state["offsets"]) == {"mu", "lam"}
    _assert_same_next_step(rbm, again, first, seed=3)


def test_fp32_update_matches_sgd_and_metrics_are_detached_scalars():
    torch.manual_seed(1)
    rbm = RBM(RBMConfig(n_hidden=32, momentum=0.5))
    ref = copy.deepcopy(rbm)
    rbm.configure_training(lr=0.1)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.5)
    seen = _spy_chain(rbm)
    for step in range(2):
        metrics = rbm.train_step(_images(64, seed=step))
        opt.zero_grad()
        (ref.free_energy(seen[-1][0]).mean() - ref.free_energy(seen[-1][1]).mean()).backward()
        opt.step()
    for name in ("W", "v_bias", "h_bias"):
        torch.testing.assert_close(getattr(rbm, name), getattr(ref, name), rtol=1e-5, atol=1e-6)
    assert list(metrics) == ["loss", "recon_error"]
    assert all(m.ndim == 0 and not m.requires_grad for m in metrics.values())


def _saturated_rbm(persistent: bool, k: int = 1, momentum: float = 0.0) -> RBM:
    """An RBM whose logits are all +-500 or more: every conditional draw is deterministic, so chains can be replayed."""
    torch.manual_seed(3)
    rbm = RBM(RBMConfig(image_shape=(1, 4, 4), n_hidden=6, k=k, persistent=persistent, binarize="threshold",
                        momentum=momentum))
    with torch.no_grad():
        rbm.W.copy_(1000.0 * torch.randn(6, 16).sign())
        rbm.v_bias.copy_(500.0 * torch.randn(16).sign())
        rbm.h_bias.copy_(500.0 * torch.randn(6).sign())
    rbm.configure_training(lr=1e-3)  # steps move the parameters far less than the +-500 margin
    return rbm


def test_pcd_keeps_its_chain_across_steps_and_restarts_on_a_new_batch_size():
    rbm, cd = _saturated_rbm(persistent=True), _saturated_rbm(persistent=False)
    up = lambda v: (rbm.p_h_given_v(v) > 0.5).float()  # noqa: E731 - the deterministic conditionals
    down = lambda h: (rbm.p_v_given_h(h) > 0.5).float()  # noqa: E731
    seen, seen_cd = _spy_chain(rbm), _spy_chain(cd)
    x = _images(8, seed=1, shape=(1, 4, 4))
    rbm.train_step(x)
    cd.train_step(x)
    v0 = seen[0][0]
    with torch.no_grad():
        assert torch.equal(seen[0][1], down(up(v0)))  # the first step starts at the data, like CD
        assert torch.equal(rbm.pcd_chain, up(seen[0][1]))
        stored = rbm.pcd_chain.clone()
        rbm.train_step(x)
        cd.train_step(x)
        assert torch.equal(seen[1][1], down(stored))  # the second continues from the stored particles
        assert not torch.equal(seen[1][1], seen_cd[1][1])  # ... which CD does not
        rbm.train_step(_images(5, seed=2, shape=(1, 4, 4)))
        assert rbm.pcd_chain.shape == (5, 6) and torch.equal(seen[2][1], down(up(seen[2][0])))


def test_training_state_round_trips_through_a_checkpoint():
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(n_hidden=16, persistent=True, momentum=0.9, k=2))
    rbm.configure_training(lr=0.1)
    for step in range(2):
        rbm.train_step(_images(8, seed=step))
    rbm.set_k(3)
    ckpt, again = _resumed(rbm)
    assert set(ckpt.training_state) == {"k", "momentum", "pcd_chain"}
    assert again.k == 3 and torch.equal(again.pcd_chain, rbm.pcd_chain)
    _assert_same_next_step(rbm, again, _images(8, seed=5), seed=9)
    again.load_training_state({})  # missing entries are fine
    assert again.pcd_chain is None


def test_set_k_validates():
    rbm = RBM(RBMConfig(n_hidden=4))
    rbm.set_k(5)
    assert rbm.k == 5
    with pytest.raises(ValueError, match="k must be"):
        rbm.set_k(0)


def test_gibbs_chain_trajectory_every_and_final_agree():
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(n_hidden=16, init_std=0.5))
    v0 = torch.bernoulli(torch.full((3, 784), 0.5))
    traj = gibbs_chain(rbm, v0, 12, generator=torch.Generator().manual_seed(1), every=4, return_trajectory=True)
    assert traj.shape == (4, 3, 784) and torch.equal(traj[0], v0)
    final = gibbs_chain(rbm, v0, 12, generator=torch.Generator().manual_seed(1))
    assert final.shape == (3, 784) and torch.equal(final, traj[-1])
    assert gibbs_chain(rbm, v0, 5, every=1, return_trajectory=True).shape == (6, 3, 784)
    assert torch.equal(gibbs_chain(rbm, v0, 0), v0)
    with pytest.raises(ValueError, match="every"):
        gibbs_chain(rbm, v0, 5, every=0)


def test_gibbs_chain_clamp_holds_the_clamped_hidden_units():
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(n_hidden=8, init_std=1.0))
    hiddens = []

    class Recorder:  # any object with the four methods will do: the sampler knows no model class
        p_h_given_v, sample_h_given_v, sample_v_given_h = rbm.p_h_given_v, rbm.sample_h_given_v, rbm.sample_v_given_h

        def p_v_given_h(self, h):
            hiddens.append(h.clone())
            return rbm.p_v_given_h(h)

    mask = torch.tensor([True, True, False, False, True, False, False, False])
    values = torch.tensor([1.0, 0.0, 0, 0, 1.0, 0, 0, 0])
    v0 = torch.bernoulli(torch.full((4, 784), 0.5))
    traj = gibbs_chain(Recorder(), v0, 10, clamp=(mask, values), return_trajectory=True)
    assert traj.shape == (11, 4, 784) and len(hiddens) == 10
    for h in hiddens:
        assert torch.equal(h[:, mask], values[mask].expand(4, 3))
    assert not all(torch.equal(h[:, ~mask], hiddens[0][:, ~mask]) for h in hiddens)  # the free units move


def test_sample_is_reproducible_in_range_and_latents_decode():
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(n_hidden=32, sample_steps=25, init_std=0.3))
    a = rbm.sample(6, generator=torch.Generator().manual_seed(4))
    b = rbm.sample(6, generator=torch.Generator().manual_seed(4))
    c = rbm.sample(6, generator=torch.Generator().manual_seed(5))
    assert a.shape == (6, 1, 28, 28) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    z = rbm.sample_latent(3, generator=torch.Generator().manual_seed(0))
    assert z.shape == (3, 32) and set(z.unique().tolist()) <= {0.0, 1.0}
    assert rbm.decode(z).shape == (3, 1, 28, 28)


@pytest.mark.parametrize("field, value", [
    ("k", 0), ("n_hidden", 0), ("momentum", 1.0), ("binarize", "x"), ("weight_decay", -0.1),
    ("sample_steps", 0), ("init_std", 0.0), ("image_shape", (28, 28)), ("n_hidden", True)])
def test_config_refuses_bad_values(field, value):
    with pytest.raises(ValueError, match=f"^{field} must"):
        RBMConfig(**{field: value})


def test_bf16_step_is_finite_and_keeps_fp32_parameters():
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(n_hidden=32, persistent=True, momentum=0.5))
    rbm.configure_training(lr=0.1, precision="bf16")
    for step in range(2):
        metrics = rbm.train_step(_images(16, seed=step))
    assert all(torch.isfinite(m) for m in metrics.values())
    assert all(p.dtype == torch.float32 for p in rbm.parameters()) and rbm.pcd_chain.dtype == torch.float32


@pytest.mark.parametrize("persistent, momentum, k", [(False, 0.0, 1), (True, 0.5, 2), (False, 0.9, 3)])
def test_bf16_update_equals_fp32_when_the_draws_agree(persistent, momentum, k):
    # saturated conditionals make every draw deterministic, so both precisions run the same chain; the statistics
    # are then small integers, exact in bf16: the bf16 path (cast weights, [v0; vk] buffers, one bf16 gradient matmul,
    # fp32 update) must give the fp32 update, signs and scaling included
    fp32, bf16 = _saturated_rbm(persistent, k, momentum), _saturated_rbm(persistent, k, momentum)
    bf16.configure_training(lr=1e-3, precision="bf16")
    fp32.configure_training(lr=1e-3)
    for step in range(3):
        x = _images(8, seed=step, shape=(1, 4, 4))
        m32, m16 = fp32.train_step(x), bf16.train_step(x)
        torch.testing.assert_close(m16["recon_error"], m32["recon_error"])
        for name in ("W", "v_bias", "h_bias"):
            torch.testing.assert_close(getattr(bf16, name), getattr(fp32, name), rtol=1e-6, atol=1e-6)
    assert torch.equal(bf16.pcd_chain, fp32.pcd_chain) if persistent else bf16.pcd_chain is None


def test_bf16_step_stays_close_to_fp32_on_the_same_random_stream():
    torch.manual_seed(0)
    fp32 = RBM(RBMConfig(n_hidden=64, init_std=0.1))
    bf16 = copy.deepcopy(fp32)
    fp32.fused_cpu = False  # PyTorch's random stream, which the bf16 chain uses too
    fp32.configure_training(lr=0.1)
    bf16.configure_training(lr=0.1, precision="bf16")
    w0, x = fp32.W.detach().clone(), _images(32, seed=1)
    torch.manual_seed(5)
    m32 = fp32.train_step(x)
    torch.manual_seed(5)  # the same uniforms: draws differ only where bf16 rounding moves p across u
    m16 = bf16.train_step(x)
    d32, d16 = fp32.W - w0, bf16.W - w0
    assert (d16 - d32).norm() < 0.15 * d32.norm()
    assert abs(m16["recon_error"] - m32["recon_error"]) < 1e-3 and abs(m16["loss"] - m32["loss"]) < 0.5


def test_steps_with_changing_batch_sizes_match_sgd():
    # momentum across changing batch sizes (tests/test_rbm_fast.py: the fast step reallocates its buffers per size)
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(image_shape=(1, 4, 5), n_hidden=7, init_std=0.5, momentum=0.5)).double()
    ref = copy.deepcopy(rbm)
    rbm.configure_training(lr=0.1)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.5)
    seen = _spy_chain(rbm)
    for step, n in enumerate((16, 5, 16, 16)):
        metrics = rbm.train_step(_images(n, seed=step, shape=(1, 4, 5)))
        v0, vk = seen[-1]
        opt.zero_grad()
        loss = ref.free_energy(v0).mean() - ref.free_energy(vk).mean()
        loss.backward()
        opt.step()
        torch.testing.assert_close(metrics["loss"], loss.detach(), rtol=1e-12, atol=1e-12)
        assert metrics["recon_error"].dtype == torch.float64
        for name in ("W", "v_bias", "h_bias"):
            torch.testing.assert_close(getattr(rbm, name), getattr(ref, name), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_stochastic_binarisation_draws_bernoulli_p(dtype):
    from genlib.data import binarize

    p = torch.tensor([0.0, 1.0, 0.25, 0.5, 0.9], dtype=dtype).repeat(40_000, 1)  # (40000, 5)
    b = binarize(p, "stochastic", generator=torch.Generator().manual_seed(0))
    assert b.dtype == dtype and set(b.unique().tolist()) <= {0.0, 1.0}
    freq = b.float().mean(0)
    assert freq[0] == 0 and freq[1] == 1  # p = 0 never fires, p = 1 always does
    torch.testing.assert_close(freq[2:], p[0, 2:].float(), rtol=0, atol=0.01)
    again = binarize(p, "stochastic", generator=torch.Generator().manual_seed(0))
    assert torch.equal(b, again)


def test_sampler_draws_follow_the_conditionals():
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(image_shape=(1, 2, 2), n_hidden=3, init_std=1.0))
    v = torch.tensor([[1.0, 0.0, 1.0, 1.0]]).expand(50_000, 4)
    h = rbm.sample_h_given_v(v, generator=torch.Generator().manual_seed(1))
    assert h.dtype == torch.float32 and set(h.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(h.mean(0), rbm.p_h_given_v(v[:1])[0].detach(), rtol=0, atol=0.01)


@pytest.fixture
def one_thread():
    # 300 tiny steps are dominated by OpenMP hand-offs, which stall when the CI's cores are shared: one thread is
    # faster here and keeps the test's time steady
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_short_training_on_digits_lowers_reconstruction_error(one_thread):
    data = load_dataset("digits", download=False)
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(n_hidden=64))
    rbm.configure_training(lr=0.1)
    g, errors = torch.Generator().manual_seed(0), []
    while len(errors) < 300:
        for xb in data.batches(64, generator=g):
            errors.append(rbm.train_step(to_unit(xb))["recon_error"])
    errors = torch.stack(errors[:300])
    first, last = errors[:20].mean().item(), errors[-20:].mean().item()
    assert last < 0.75 * first, (first, last)  # from about 0.10 to 0.064 (stochastic binarisation keeps a floor)


@pytest.mark.parametrize("mode", ["stochastic", "threshold"])
def test_base_rate_visible_biases_start_at_the_datas_log_odds_on_a_fresh_run_only(mode, one_thread):
    """visible_bias='base_rate' (Hinton's guide 8.1): before the first step b_i = log(p_i / (1 - p_i)), p_i the share of
    training images whose pixel i is on once binarised; a resumed run keeps the biases it learned."""
    from genlib.training import Progress, TrainConfig, train

    data = load_dataset("digits", download=False)
    x = to_unit(data.x_train).reshape(data.x_train.shape[0], -1).double()  # (N, n_v)
    p = (x > 0.5).double().mean(0) if mode == "threshold" else x.mean(0)  # (n_v,)
    p = (p + 0.05) / 1.05  # the pseudocount: a pixel never on starts finite, at log(0.05)
    want = (torch.log(p) - torch.log1p(-p)).float()
    rbm = RBM(RBMConfig(n_hidden=16, image_shape=tuple(data.image_shape), binarize=mode, visible_bias="base_rate"))
    rbm.init_from_data(data.x_train)
    torch.testing.assert_close(rbm.v_bias.detach(), want, rtol=0, atol=1e-5)
    assert rbm.v_bias.min().item() == pytest.approx(-3.0, abs=0.01)  # border pixels: never on
    zero = RBM(RBMConfig(n_hidden=16, image_shape=tuple(data.image_shape)))
    zero.init_from_data(data.x_train)
    assert not zero.v_bias.any()  # the seed's zero biases unless asked

    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, log_every=5)
    fresh = RBM(RBMConfig(n_hidden=16, image_shape=tuple(data.image_shape), binarize=mode, visible_bias="base_rate"))
    fresh.configure_training(lr=cfg.lr)
    seen = []
    fresh.init_from_data = lambda x: (seen.append("fresh"), RBM.init_from_data(fresh, x))
    progress = train(fresh, data, cfg)
    assert seen == ["fresh"]
    resumed = copy.deepcopy(fresh)
    resumed.init_from_data = lambda x: seen.append("resumed")
    train(resumed, data, TrainConfig(epochs=2, batch_size=64, lr=0.05, log_every=5),
          progress=Progress(step=progress.step, images=progress.images))
    assert seen == ["fresh"]  # never on a resume: its biases are learned ones
