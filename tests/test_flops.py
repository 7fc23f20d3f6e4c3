"""genlib.flops against hand counts: matrix products (in place too) and their backward passes, and a training step of
the RBM against its closed form (Hinton 2002's CD-1, Tieleman 2008's PCD-1: products of (B, n_v) x (n_v, n_h))."""

import pytest
import torch

from genlib.flops import count_flops, train_step_flops
from genlib.models import MODEL_NAMES, build_model
from genlib.presets import recipe


def test_a_product_counts_two_flops_a_multiply_add_in_place_too():
    a, b, c = torch.randn(3, 5), torch.randn(5, 7), torch.zeros(3, 7)
    assert count_flops(torch.mm, a, b)[0] == 2 * 3 * 5 * 7
    flops, out = count_flops(lambda: c.addmm_(a, b))
    assert flops == 2 * 3 * 5 * 7 and out is c and torch.allclose(c, a @ b, atol=1e-5)
    assert count_flops(torch.sigmoid, a)[0] == 0  # elementwise work is not counted


def test_a_backward_pass_is_counted():
    layer = torch.nn.Linear(5, 7, bias=False)
    x = torch.randn(3, 5, requires_grad=True)
    forward = 2 * 3 * 5 * 7
    flops, _ = count_flops(lambda: layer(x).sum().backward())
    assert flops == 3 * forward  # the forward, then the input's and the weight's gradients


def _configured(name, model_config, train_config):
    torch.manual_seed(0)
    model = build_model(name, model_config)
    model.configure_training(lr=train_config["lr"], ema=train_config.get("ema", 0.0))
    return model


@pytest.mark.parametrize("persistent,products", [(False, 5), (True, 6)])
@pytest.mark.parametrize("fused", [True, False])
def test_an_rbm_step_is_its_closed_form(persistent, products, fused):
    """CD-1: p(h|v0), p(v|h0), p(h|v1) and one stacked product for both statistics (2B rows): 5 products of
    (B, n_v) x (n_v, n_h). PCD-1 starts its negative chain from the persistent chains instead (one more p(v|h)); the
    reconstruction p(v|h0) it makes for the metric only takes the batch's first RBM.RECON_ROWS (32 > 20 here). Dense
    images (~50% of pixels on), so the fused step's row sums leave every product to BLAS."""
    n_v, n_h, batch = 784, 48, 20
    model = _configured("rbm", {"n_hidden": n_h, "k": 1, "persistent": persistent, "centering": persistent,
                                "momentum": 0.5 if persistent else 0.0}, {"lr": 0.05, "ema": 0.999})
    model.fused_cpu = fused
    x = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8)
    assert train_step_flops(model, x) == products * 2 * batch * n_v * n_h


def test_the_lecture_rbm_step_is_0_42_gflop_as_dense_products():
    """The figure docs/time_to_quality.md sets against a core's peak: 784-500, batch 100, centred PCD-1, its products
    dense: five of 100 rows and the reconstruction of 32. MNIST's sparse digits let the fused step sum rows instead,
    and PyTorch then counts only its dense products: p(v|h) of the chain and of the 32 reconstructions."""
    from genlib.sampling.kernels import cd

    r = recipe("rbm", "lecture")
    model = _configured("rbm", r.model_values(), r.train_values())
    x = torch.randint(0, 256, (r.train_values()["batch_size"], 1, 28, 28), dtype=torch.uint8)
    dense = 2 * 784 * 500 * (5 * 100 + 32)
    assert train_step_flops(model, x) == dense
    if cd.load() is not None:
        sparse = (x.float() * 0.2).to(torch.uint8)  # ~10% of pixels on, as binarised MNIST's 13%
        model.v_bias.data.fill_(-3.0)  # and sparse chain samples
        assert train_step_flops(model, sparse) == 2 * 784 * 500 * (100 + 32)


def _forward_of_what_it_trains(model, x):
    """FLOPs of one forward pass over the batch of the network a step trains (the RBM: p(h|v), one product)."""
    v = x.float().div(255)
    with torch.no_grad():
        if model.name == "rbm":
            return count_flops(model.p_h_given_v, model.visibles(x))[0]
        if model.name == "vae":
            return count_flops(lambda: model.decode(model.encode(v)[0]))[0]
        if model.name == "gan":
            return count_flops(model.netD, v * 2 - 1)[0]
        return count_flops(model.energy, v)[0]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_models_step_costs_more_than_a_forward_and_backward_pass(name):
    """Each model's step takes at least a forward and a backward pass of what it trains (the RBM: three products of
    its chain and the statistics' stacked one), so its count exceeds twice one forward pass of the batch, and a
    repeat gives the same count."""
    model = _configured(name, None, {"lr": 1e-3})
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    first, again = train_step_flops(model, x), train_step_flops(model, x)
    forward = _forward_of_what_it_trains(model, x)
    assert forward > 0 and first == again > 2 * forward, (first, forward)
