"""genlib.sampling.bernoulli: draws from 15-bit uniforms have the probability they claim, in every lane and dtype."""

import math

import pytest
import torch

from genlib.sampling.bernoulli import SCALE, bernoulli, draw_, random_binary, uniform15_, words_for


def test_every_lane_is_uniform_on_15_bits():
    words = words_for(400_000, "cpu")
    u = uniform15_(words, (100_000, 4), torch.Generator().manual_seed(0)).long()  # column j = lane j of each word
    assert u.min() == 0 and u.max() == SCALE - 1
    for lane in range(4):
        col = u[:, lane].double()
        # mean and variance of the discrete uniform on {0..32767}, to 5 standard errors
        mean, var = (SCALE - 1) / 2, (SCALE ** 2 - 1) / 12
        assert abs(col.mean() - mean) < 5 * math.sqrt(var / col.numel())
        assert abs(col.var() / var - 1) < 0.02
        # the top bit of a lane (bit 14) is set half the time: the mask kept 15 random bits, not 14
        assert abs((col >= SCALE / 2).double().mean() - 0.5) < 0.01


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.0, 1e-3, 0.3, 0.5, 0.999, 1.0])
def test_draw_probability_is_ceil_of_32768_p(dtype, p):
    probs = torch.full((1_000_000,), p, dtype=dtype)
    q = probs[0].item()  # p as the dtype holds it
    expected = min(math.ceil(q * SCALE), SCALE) / SCALE  # P(u < 32768 q) for u uniform on {0..32767}
    assert abs(expected - q) <= 1 / SCALE
    out = torch.empty_like(probs)
    draws = draw_(probs, out, generator=torch.Generator().manual_seed(1))
    assert draws is out and set(out.unique().tolist()) <= {0.0, 1.0}
    sd = math.sqrt(max(expected * (1 - expected), 1e-12) / probs.numel())
    assert abs(out.double().mean().item() - expected) <= 5 * sd + 1e-12


def test_float64_draws_use_exact_uniforms():
    probs = torch.full((200_000,), 1 / 3, dtype=torch.float64)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    draws = bernoulli(probs, generator=g1)
    reference = (torch.rand(probs.shape, generator=g2, dtype=torch.float64) < probs).double()
    assert draws.dtype == torch.float64 and torch.equal(draws, reference)


def test_a_too_small_word_buffer_is_refused():
    with pytest.raises(ValueError, match="holds"):
        uniform15_(words_for(8, "cpu"), (3, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_random_binary_is_fair_coin_flips_reproducible_on_the_asked_device(dtype):
    v = random_binary(500, 784, generator=torch.Generator().manual_seed(3), device="cpu", dtype=dtype)
    assert v.shape == (500, 784) and v.dtype == dtype and v.device.type == "cpu"
    assert set(v.unique().tolist()) == {0.0, 1.0}
    assert abs(v.double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / v.numel())
    assert torch.equal(v, random_binary(500, 784, generator=torch.Generator().manual_seed(3), dtype=dtype))
