"""What the dashboard says about each model: its title, its form fields (label, help, step; their bounds are the
config's own, genlib.config), and the captions of its charts and sample grids. Text and specs only; a model that has
no text here yet gets its form from its config's declarations (`model_fields`), so adding a model needs no edit here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from genlib.config import Bounds, bounds, declared
from genlib.models import model_class

PAGES = Path(__file__).resolve().parents[1] / "app_pages"  # a model's page is app_pages/<name>.py (app.py lists it)


def model_title(name: str) -> str:
    """How the pages name model `name`: its class's `title` (genlib.models), or the name itself when no model of
    that name is registered (a run folder from another version)."""
    from genlib.models import model_names, model_title as title  # here: genlib.models imports torch (see Field)

    return title(name) if name in model_names() else name


def model_page(name: str) -> str | None:
    """The page of a registered model (app_pages/<name>.py), or None when it has none."""
    from genlib.models import model_names

    return f"app_pages/{name}.py" if name in model_names() and (PAGES / f"{name}.py").is_file() else None


@dataclass(frozen=True)
class Field:
    """One form input: a config field, its label, the help a student reads, and the widget's step and format.

    What the input accepts (kind, range, options) is not written here: it is the model config's own declaration
    (genlib.config's whole / number / flag / choice on the field), the one source for the form and the config's
    check, so the form cannot offer a value the config refuses. An open end of a range moves in by one step."""

    name: str
    label: str
    help: str
    step: float | None = None
    fmt: str | None = None
    model: str = ""  # the registry name whose config declares the field (set by MODEL_FIELDS)

    @property
    def bounds(self) -> Bounds:
        from genlib.models import model_class  # here: genlib.models imports torch, which this text module must not

        declared = bounds(model_class(self.model).config_class, self.name)
        if declared is None:
            raise ValueError(f"{self.model} config field {self.name!r} declares no bounds (genlib.config)")
        return declared

    @property
    def kind(self) -> str:
        """"int", "float", "bool" or "choice": the widget to draw."""
        kind = self.bounds.kind
        return "float" if kind == "number" else kind

    @property
    def lo(self) -> float | None:
        return self.bounds.closed(self.step or 0)[0]

    @property
    def hi(self) -> float | None:
        return self.bounds.closed(self.step or 0)[1]

    @property
    def options(self) -> tuple:
        return self.bounds.options


_FIELDS: dict[str, tuple[Field, ...]] = {
    "rbm": (
        Field("n_hidden", "Hidden units", "Number of binary hidden units h, the feature detectors. More units "
              "describe more detail but each step costs more. The seed uses 500.", step=50),
        Field("k", "Gibbs steps k (CD-k)", "Gibbs steps v -> h -> v in the negative phase of contrastive divergence. "
              "k = 1 is the seed's CD-1; a larger k gives a less biased gradient at k times the cost.", step=1),
        Field("persistent", "Persistent CD (PCD)", "Keep the negative Gibbs chain running from batch to batch "
              "(Tieleman 2008) instead of restarting it at the data: the chain explores the model's own "
              "distribution, which usually gives better samples."),
        Field("centering", "Centred gradient", "Take each step in coordinates centred on the mean of the data and of "
              "the hidden units (Melchior, Fischer & Wiskott 2016). The model is the same RBM; the gradient is "
              "better conditioned, so it learns faster and closer to the data, most where 0/1 units code a symmetric "
              "variable such as an Ising spin. Off in the seed."),
        Field("momentum", "Momentum", "SGD momentum: the share of the previous update added to the next. It smooths "
              "and speeds up learning; 0 is the seed's plain SGD.", step=0.05, fmt="%.2f"),
        Field("weight_decay", "Weight decay", "L2 penalty that pulls the weights toward zero at every step; small "
              "values (1e-4) keep the filters smooth. 0 in the seed.", step=0.0001, fmt="%.4f"),
    ),
    "vae": (
        Field("latent", "Latent dimensions", "Size of the code z. 2 lets you draw the whole latent space on a plane; "
              "more dimensions reconstruct better. The seed uses 8.", step=1),
        Field("hidden", "Hidden width", "Units in each hidden layer of the encoder and the decoder. The seed uses "
              "512.", step=64),
        Field("decoder", "Decoder likelihood", "p(x|z): 'bernoulli' treats pixels as coin flips (cross-entropy, "
              "sharper digits); 'gaussian' is the seed's Normal(tanh(.), 1) on pixels in [-0.5, 0.5] (squared error).",
              ),
        Field("beta", "beta (KL weight)", "Weight of the KL term in the loss. 1 is the true ELBO; beta > 1 "
              "(beta-VAE) pushes codes toward the prior for a smoother, more disentangled latent space at the cost "
              "of blurrier reconstructions.", step=0.1, fmt="%.2f"),
    ),
    "gan": (
        Field("preset", "Network size", "'seed' is the course's DCGAN (2.5M parameters). 'fast' divides every width "
              "by 4 (0.4M parameters, 16x fewer convolution operations): use it on laptops and CPUs."),
        Field("adam_beta1", "Adam beta1", "Adam's momentum: how much of the previous gradients each step keeps. The "
              "seed keeps Keras's 0.9; DCGAN's paper (Radford et al. 2016) found 0.5 steadier for GANs.",
              step=0.05, fmt="%.2f"),
        Field("dropout", "Discriminator dropout", "The share of the discriminator's units switched off at random in "
              "each training step, as the seed's Dropout(0.3) layers. It holds the discriminator back: without it "
              "(the lecture recipe) the pair reaches recognisable digits in half the steps, but after about 50,000 "
              "steps its samples get worse. For runs longer than ten minutes set 0.1, as the pretrained GAN does "
              "(docs/time_to_quality.md).", step=0.05, fmt="%.2f"),
        Field("channels_last", "Channels-last layout", "Store images as (batch, height, width, channels) inside the "
              "networks. The same arithmetic in another memory order; with bf16 on this kind of CPU it made the "
              "seed's DCGAN 17% faster (docs/benchmarks.md). Turn off to compare."),
    ),
    "ebm": (
        Field("langevin_steps", "Langevin steps per batch", "Steps of the Langevin chain that makes the negative "
              "samples for each batch. More steps give better negatives at proportionally more cost; the replay "
              "buffer lets a few steps per batch add up to long chains. Foster uses 60.", step=5),
        Field("step_size", "Langevin step size", "Multiplies the energy's gradient (clipped to ±0.03 per pixel) at "
              "each step: 10 lets a pixel move by up to 0.3 per step.", step=0.5, fmt="%.1f"),
        Field("noise", "Langevin noise", "Standard deviation of the Gaussian noise added at each Langevin step. "
              "Small (0.005) as in Du & Mordatch; more noise explores more but blurs the samples.",
              step=0.001, fmt="%.3f"),
        Field("buffer_size", "Replay buffer size", "How many past samples the buffer keeps; 95% of each batch's "
              "chains continue from it, 5% start from noise. A smaller buffer means each chain is revisited more "
              "often, so chains get longer sooner.", step=512),
        Field("reg_weight", "Energy regulariser alpha", "Weight of alpha x (E(data)^2 + E(samples)^2), which keeps "
              "the energies near 0; without it they drift and training diverges. Foster uses 0.1.",
              step=0.05, fmt="%.2f"),
        Field("spectral_norm", "Spectral normalisation", "Divide every layer's weights by their largest singular "
              "value (Miyato et al. 2018), as Du & Mordatch do: the energy can then change no faster than the image, "
              "so its slopes, and the Langevin steps that follow them, stay tame while Adam takes larger steps. The "
              "lecture recipe turns it on; off is Foster's network."),
        Field("sample_steps", "Steps when sampling", "Langevin steps from uniform noise for the sample grids below "
              "(the chain viewer has its own slider). Too few stop short of a digit (the thin 1s form last), too "
              "many drift towards thin strokes; sampling only, training never reads it.", step=50),
    ),
}
MODEL_FIELDS: dict[str, tuple[Field, ...]] = {
    model: tuple(dataclasses.replace(f, model=model) for f in fields) for model, fields in _FIELDS.items()}


def model_fields(name: str) -> tuple[Field, ...]:
    """The form's fields of model `name`: those written above, else one per declared field of its config that a
    widget can draw, labelled by its name and explained by its command-line help (genlib.config's Option)."""
    if name in MODEL_FIELDS:
        return MODEL_FIELDS[name]
    return tuple(Field(field, " ".join(field.split("_")).capitalize(), o.help or "", model=name)
                 for field, b, o in declared(model_class(name).config_class) if b.kind != "ints")


CHART_CAPTIONS = {
    "rbm": "Averages over each logged window of steps. The reconstruction error should fall as the hidden units "
           "learn features; the free-energy gap is not a likelihood and may wander. Orange dotted lines: learning-rate "
           "changes.",
    "vae": "Negative ELBO = reconstruction + beta x KL, in nats per image, averaged over each logged window. "
           "Reconstruction falls fast; KL usually rises first, as the code starts to carry information.",
    "gan": "A two-player game: the losses need not fall. As the generator improves, D(real) and D(fake) approach "
           "the dashed 1/2 line, where the discriminator can only guess (the seed's stopping criterion).",
    "ebm": "Averages over each logged window. Training pushes the data's energy down and the samples' up; the sampler "
           "pulls the samples back down. The gap E(samples) − E(data) is large while samples are poor and shrinks "
           "as they start to look like data; the loss hovers near 0 and is not a likelihood.",
}


def averaged_caption(ema: float) -> str:
    """What a sample grid adds when the run shows its weights' moving average (TrainConfig.ema > 0), else ""."""
    if not ema:
        return ""
    return (f" Drawn from the moving average of the weights (decay {ema:g}: about the last {round(1 / (1 - ema)):,} "
            "steps), which sits nearer the optimum than the live weights each SGD step moves; the explorers and "
            "quality figures use it too.")


def continue_caveat(model_name: str, model_config: dict) -> str | None:
    """What a measurement says against continuing a run of these settings for long, shown beside 'Continue
    training', or None: today a GAN whose discriminator has no dropout (the lecture recipe) gets worse past ~50,000
    steps (docs/time_to_quality.md, the dropout study)."""
    if model_name == "gan" and model_config.get("dropout") == 0.0:
        return ("This GAN's discriminator has no dropout (the lecture recipe): it learns fastest in a lecture's first "
                "ten minutes, but measured, its samples get worse past about 50,000 steps. For a longer run, fork the "
                "pretrained GAN (dropout 0.1) or start a new run with dropout 0.1.")
    return None


SAMPLE_CAPTIONS = {
    "rbm": "Samples from the same random start after a fixed number of Gibbs steps, refreshed every few seconds.",
    "vae": "Decoded from the same 64 fixed latent draws z ~ N(0, I), refreshed every few seconds.",
    "gan": "Generated from the same 64 fixed noise vectors (the seed's seed_images), refreshed every few seconds.",
    "ebm": "Langevin chains from the same 64 uniform-noise images, run for the model's sampling steps, refreshed "
           "every few seconds (each grid costs many gradient steps, so less often than for the other models).",
}
