"""One contract test run over every registered model (diffusers' pattern): config, step, metrics, samples, latents."""

import dataclasses
import math

import pytest
import torch

from genlib.runs.checkpoints import checkpoint_bytes, model_from_checkpoint, read_checkpoint
from genlib.models import MODELS, DenseDecoder, EnergyModel, LatentModel, build_model, make_config

SMALL = {"rbm": {"n_hidden": 32, "sample_steps": 20}, "vae": {"hidden": 32, "latent": 4}, "gan": {"preset": "fast"},
         "ebm": {"channels": (4, 4, 8, 8), "hidden": 8, "langevin_steps": 3, "buffer_size": 32, "sample_steps": 5}}
NO_LATENT = {"ebm"}  # energy-based models sample by MCMC from noise: no latent code to slide


# settings that change which modules a model holds, as the lecture recipes set them: the contract holds with them too
VARIANTS = {"ebm+spectral_norm": ("ebm", {**SMALL["ebm"], "spectral_norm": True})}


@pytest.fixture(params=sorted(MODELS) + sorted(VARIANTS))
def model(request):
    torch.manual_seed(0)
    name, config = VARIANTS.get(request.param, (request.param, SMALL.get(request.param)))
    m = build_model(name, config)
    m.configure_training(lr=1e-3)
    return m


def test_registry_names_match(model):
    assert MODELS[model.name] is type(model)
    assert isinstance(model.config, model.config_class)
    assert dataclasses.is_dataclass(model.config) and model.config_class.__dataclass_params__.frozen


def test_train_step_returns_declared_finite_scalar_metrics(model):
    x = torch.rand(8, 1, 28, 28)
    before = [p.detach().clone() for p in model.parameters()]
    metrics = model.train_step(x)
    assert list(metrics) == list(model.metric_names) and model.metric_names[0] == "loss"
    assert model.monitor in metrics
    for k, v in metrics.items():
        assert isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad, k
        assert math.isfinite(float(v)), k
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "a step must change parameters"
    assert set(getattr(model, "metric_labels", {})) >= set(model.metric_names)


def test_sample_shape_range_and_reproducibility(model):
    a = model.sample(5, generator=torch.Generator().manual_seed(3))
    b = model.sample(5, generator=torch.Generator().manual_seed(3))
    assert a.shape == (5, 1, 28, 28)
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)


def test_latent_interface(model):
    if model.name in NO_LATENT:
        assert not isinstance(model, LatentModel)
        return
    assert isinstance(model, LatentModel)
    z = model.sample_latent(3, generator=torch.Generator().manual_seed(0))
    assert z.shape == (3, model.latent_dim)
    x = model.decode(z)
    assert x.shape == (3, 1, 28, 28) and 0 <= x.min() and x.max() <= 1


def test_set_lr_reaches_every_optimizer(model):
    model.set_lr(5e-4)
    assert model.lr == 5e-4
    for opt in model.optimizers().values():
        assert all(g["lr"] == 5e-4 for g in opt.param_groups)
    with pytest.raises(ValueError):
        model.set_lr(-1.0)


def test_checkpoint_round_trip_gives_identical_samples(model):
    model.train_step(torch.rand(8, 1, 28, 28))
    data = checkpoint_bytes(model, train_config={"lr": 1e-3}, progress={"step": 1})
    ckpt = read_checkpoint(data)
    assert ckpt.model_name == model.name and ckpt.step == 1
    again = model_from_checkpoint(ckpt)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(model.sample(4, generator=g1), again.sample(4, generator=g2))
    # the optimiser state survives too, so a resumed run continues where it left off
    again.configure_training(lr=1e-3)
    again.load_training_state(ckpt.training_state)
    for name, opt in model.optimizers().items():
        a, b = opt.state_dict()["state"], again.optimizers()[name].state_dict()["state"]
        assert a.keys() == b.keys()
        for i in a:
            for key in a[i]:
                assert torch.equal(torch.as_tensor(a[i][key]), torch.as_tensor(b[i][key]))


def test_unknown_config_keys_are_refused(model):
    with pytest.raises(ValueError, match="no setting"):
        make_config(model.name, {"not_a_field": 1})


def test_bf16_precision_step_is_finite(model):
    model.configure_training(lr=1e-3, precision="bf16")
    metrics = model.train_step(torch.rand(8, 1, 28, 28))
    assert all(math.isfinite(float(v)) for v in metrics.values())


# ---- what a model exports to code outside it (the dashboard never reaches into a model's layers) ----

DENSE_DECODERS = {"vae", "rbm"}  # small dense decoders the dashboard runs in the browser; the GAN's are convolutions
ENERGIES = {"rbm", "ebm"}  # an energy on images: the RBM's free energy, the EBM's network


def test_exported_decoder_is_plain_tensors_that_decode_like_the_model(model):
    if not isinstance(model, LatentModel):
        return
    net = model.export_decoder()
    assert (net is not None) == (model.name in DENSE_DECODERS)
    if net is None:
        return
    assert isinstance(net, DenseDecoder) and net.out in ("sigmoid", "tanh_half")
    for layer in net.layers:
        assert layer.act in ("relu", "none")
        for t in (layer.weight, layer.bias):
            assert t.device.type == "cpu" and t.dtype == torch.float32 and not t.requires_grad
    assert net.layers[0].weight.shape[1] == model.latent_dim
    assert net.layers[-1].weight.shape[0] == 28 * 28
    z = model.sample_latent(4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(net(z), model.decode(z).reshape(4, -1).double(), atol=1e-5, rtol=0)
    before = model.decode(z)
    net.layers[0].weight.zero_()  # a copy: changing it leaves the model alone
    assert torch.equal(model.decode(z), before)


def test_energy_on_images_is_per_image_finite_and_differentiable(model):
    assert isinstance(model, EnergyModel) == (model.name in ENERGIES)
    if not isinstance(model, EnergyModel):
        return
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    e = model.image_energy(x)
    assert e.shape == (3,) and torch.isfinite(e).all()
    (grad,) = torch.autograd.grad(e.sum(), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    # each image's energy is its own: a batch of one gives the same number
    torch.testing.assert_close(model.image_energy(x[1:2].detach()), e[1:2].detach(), atol=1e-4, rtol=1e-4)


def test_rbm_image_energy_is_its_free_energy():
    rbm = build_model("rbm", SMALL["rbm"])
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(rbm.image_energy(x), rbm.free_energy(x.reshape(5, -1)))
    assert rbm.filters().shape == (rbm.latent_dim, rbm.n_visible)


def test_a_weight_average_is_what_checkpoints_hold_and_a_resume_continues_the_live_weights(model):
    def steps(m, n, seed):
        for i in range(n):
            torch.manual_seed(seed + i)
            m.train_step(torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(seed + i)))
            m.update_average()

    model.configure_training(lr=1e-3, ema=0.9)
    steps(model, 3, 0)
    live = {k: v.clone() for k, v in model.averaged_entries().items()}
    average = {k: v.clone() for k, v in model.weight_average.average.items()}
    assert any(not torch.equal(live[k], average[k]) for k in live)
    if model.averaged_modules:  # only those submodules are averaged (the GAN's generator)
        assert all(k.startswith(tuple(f"{m}." for m in model.averaged_modules)) for k in live)
    ckpt = read_checkpoint(checkpoint_bytes(model, train_config={"lr": 1e-3, "ema": 0.9}, progress={"step": 3}))
    assert all(torch.equal(ckpt.model_state[k], average[k]) for k in average)
    again = model_from_checkpoint(ckpt)  # what a page shows: the average
    again.configure_training(lr=1e-3, ema=0.9)
    again.load_training_state(ckpt.training_state)  # what a resume trains: the live weights
    assert all(torch.equal(v, live[k]) for k, v in again.averaged_entries().items())
    assert all(torch.equal(v, average[k]) for k, v in again.weight_average.average.items())
    assert again.weight_average.updates == model.weight_average.updates == 3
    # a model resumed without an average still gets the live weights back
    plain = model_from_checkpoint(ckpt)
    plain.configure_training(lr=1e-3)
    plain.load_training_state(ckpt.training_state)
    assert all(torch.equal(v, live[k]) for k, v in plain.averaged_entries().items())
