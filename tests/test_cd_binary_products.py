"""The RBM's products with a binary operand (genlib.sampling.kernels.cd's row sums) against torch.mm: equal where they
run, refused (out untouched) where the operand is dense or not binary, and the partial reconstruction error."""

import pytest
import torch

from genlib.sampling.kernels.cd import BINARY_MAX_SHARE


def _binary(n, k, share, g):
    return (torch.rand(n, k, generator=g) < share).float()


@pytest.mark.parametrize("n,k,m", [(100, 784, 500), (7, 30, 11), (1, 5, 3), (13, 9, 4)])
def test_binary_mm_equals_addmm(kernels, n, k, m):
    g = torch.Generator().manual_seed(n + k)
    v, wt, bias = _binary(n, k, 0.13, g), torch.randn(k, m, generator=g), torch.randn(m, generator=g)
    v[0] = 0.0  # a row with no ones is the bias alone
    out = torch.full((n, m), float("nan"))
    assert kernels.binary_mm_(v, wt, bias, out)
    torch.testing.assert_close(out, torch.addmm(bias, v, wt), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[0], bias, rtol=0, atol=0)


@pytest.mark.parametrize("n,k,m", [(200, 784, 500), (14, 30, 11), (1, 5, 3), (13, 9, 4)])
def test_binary_tmm_equals_the_transposed_product(kernels, n, k, m):
    g = torch.Generator().manual_seed(n * k)
    v, p = _binary(n, k, 0.15, g), torch.randn(n, m, generator=g)  # p signed, as [p(h|v0); -p(h|vk)] is
    v[:, 0] = 0.0  # a visible unit never on gets a zero row
    out = torch.full((k, m), float("nan"))
    assert kernels.binary_tmm_(v, p, out)
    torch.testing.assert_close(out, v.t() @ p, rtol=1e-5, atol=1e-5)
    assert torch.equal(out[0], torch.zeros(m))


def test_dense_or_non_binary_operands_are_left_to_blas(kernels):
    g = torch.Generator().manual_seed(0)
    n, k, m = 20, 50, 8
    wt, bias, p = torch.randn(k, m, generator=g), torch.randn(m, generator=g), torch.randn(n, m, generator=g)
    at_limit = torch.zeros(n, k)
    at_limit.view(-1)[:int(BINARY_MAX_SHARE * n * k)] = 1.0  # exactly the largest share the row sums take
    dense = at_limit.clone()
    dense.view(-1)[int(BINARY_MAX_SHARE * n * k)] = 1.0  # one more one
    halves = _binary(n, k, 0.1, g)
    halves[3, 7] = 0.5  # probabilities, not draws: a row sum would count it as a one
    for v, runs in ((at_limit, True), (dense, False), (halves, False)):
        out, out_t = torch.full((n, m), 7.0), torch.full((k, m), 7.0)
        assert kernels.binary_mm_(v, wt, bias, out) is runs and kernels.binary_tmm_(v, p, out_t) is runs
        if runs:
            torch.testing.assert_close(out, torch.addmm(bias, v, wt), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out_t, v.t() @ p, rtol=1e-5, atol=1e-5)
        else:
            assert bool((out == 7.0).all()) and bool((out_t == 7.0).all())  # untouched


def test_binary_products_refuse_shapes_that_do_not_fit(kernels):
    v = torch.zeros(4, 6)
    with pytest.raises(ValueError, match="do not fit"):
        kernels.binary_mm_(v, torch.zeros(5, 3), torch.zeros(3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="do not fit"):
        kernels.binary_tmm_(v, torch.zeros(4, 3), torch.zeros(3, 6))
    with pytest.raises(ValueError, match="contiguous float32 CPU"):
        kernels.binary_mm_(v, torch.zeros(3, 6).t(), torch.zeros(3), torch.zeros(4, 3))


def test_visible_stats_reconstruct_the_first_rows_only(kernels):
    g = torch.Generator().manual_seed(1)
    n, n_v, rows = 9, 12, 4
    v0, vk = _binary(n, n_v, 0.3, g), _binary(n, n_v, 0.3, g)
    recon, b = torch.rand(rows, n_v, generator=g), torch.randn(n_v, generator=g)
    dv, v0_sum, out = torch.empty(n_v), torch.empty(n_v), torch.zeros(3, dtype=torch.float64)
    kernels.visible_stats(recon, v0, vk, b, dv, v0_sum, out)
    assert out[0].item() == pytest.approx(((recon - v0[:rows]) ** 2).sum().item(), rel=1e-6)
    assert torch.equal(dv, (v0 - vk).sum(0)) and torch.equal(v0_sum, v0.sum(0))  # the sums still take every row
    with pytest.raises(ValueError, match="do not fit"):
        kernels.visible_stats(torch.rand(n + 1, n_v), v0, vk, b, dv, v0_sum, out)
