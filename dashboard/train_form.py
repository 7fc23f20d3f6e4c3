"""The "train a new model" form of a model page: the model's fields and the training settings, checked before any
data loads; a bad value is refused with a message, a good form submits a job and selects its run.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import auth, state
from dashboard.model_text import Field, model_fields


def _defaults(model_name: str, recipe_name: str = "seed") -> dict[str, Any]:
    """Every model and training field of a named recipe (genlib.presets): the form's starting values."""
    from genlib.presets import recipe

    r = recipe(model_name, recipe_name)
    return {**r.model_values(), **r.train_values()}


def _form_keys(model_name: str) -> list[str]:
    """The keys of the form's widgets that a recipe sets (stable: presenter links and tests use them)."""
    k = f"{model_name}-form"
    return [f"{k}-{f.name}" for f in model_fields(model_name)] + [f"{k}-lr", f"{k}-batch", f"{k}-epochs", f"{k}-ema"]


def recipe_choice(model_name: str) -> str:
    """The recipe selector above the form: "The seed's settings" or "Lecture: fast and good"; choosing one drops the
    form's edited values, so every field shows the chosen recipe's. Returns the recipe's name."""
    from genlib.presets import RECIPE_NAMES, RECIPE_TITLES, recipe

    def reset() -> None:
        for key in _form_keys(model_name):
            st.session_state.pop(key, None)

    name = st.radio("Recipe", RECIPE_NAMES, format_func=RECIPE_TITLES.get, horizontal=True,
                    key=f"{model_name}-form-recipe", on_change=reset,
                    help="The seed's settings are the course's reference code, unchanged, so a class can see what "
                         "they give in a lecture's minutes; the lecture recipe was chosen by measuring quality "
                         "against seconds on a 2-core CPU (docs/time_to_quality.md). Every field stays editable.")
    st.caption(recipe(model_name, name).why)
    return name


def _recipe_fields(model_name: str, recipe_name: str) -> list[str]:
    """The model fields a recipe names that the form has no widget for (the GAN's noise_dim...): sent as they are."""
    from genlib.presets import recipe

    shown = {f.name for f in model_fields(model_name)}
    return [n for n in recipe(model_name, recipe_name).model_config if n not in shown]


def _widget(f: Field, value: Any, key: str) -> Any:
    if f.kind == "bool":
        return st.checkbox(f.label, value=bool(value), help=f.help, key=key)
    if f.kind == "choice":
        return st.selectbox(f.label, f.options, index=list(f.options).index(value), help=f.help, key=key)
    cast = int if f.kind == "int" else float
    return st.number_input(f.label, min_value=cast(f.lo), max_value=cast(f.hi), value=cast(value),
                           step=cast(f.step), format=f.fmt, help=f.help, key=key)


def dataset_choices() -> tuple[list[str], str | None]:
    """Datasets a run can train on here (on disk, or needing no files), and a note on the ones that are missing."""
    from genlib.data import DATASETS, OFFLINE_DATASET, dataset_available, default_data_root

    # parametric datasets (ising) take options this form has no fields for: they train from their own panel
    names = [n for n, spec in DATASETS.items() if not spec.parametric and (spec.offline or dataset_available(n))]
    missing = [DATASETS[n].title for n in DATASETS if n not in names and not DATASETS[n].parametric]
    note = None
    if missing:
        note = (f"{', '.join(missing)} not found in {default_data_root().resolve()}, so not offered here; "
                f"'{OFFLINE_DATASET}' (scikit-learn's 1,797 digits, no files needed) always is. "
                "The Home page says how to add datasets.")
    names.sort(key=lambda n: (n != "mnist", DATASETS[n].offline, n))
    return names, note


def train_form(model_name: str) -> None:
    from genlib.data import DATASETS

    d = _defaults(model_name)  # the seed's values, which the help texts quote
    chosen = recipe_choice(model_name)
    v = _defaults(model_name, chosen)  # the chosen recipe's values, which the widgets start from
    k = f"{model_name}-form"
    datasets, note = dataset_choices()
    bf16 = state.get_device_info().bf16
    with st.form(key=k, border=True):
        cols = st.columns(3)
        values: dict[str, Any] = {n: v[n] for n in _recipe_fields(model_name, chosen)}  # fields with no widget
        for i, f in enumerate(model_fields(model_name)):
            with cols[i % 3]:
                values[f.name] = _widget(f, v[f.name], f"{k}-{f.name}")
        c1, c2, c3 = st.columns(3)
        with c1:
            dataset = st.selectbox("Dataset", datasets, format_func=lambda n: DATASETS[n].title, key=f"{k}-dataset",
                                   help="Images to learn from. " + "; ".join(
                                       f"{DATASETS[n].title}: {DATASETS[n].description}" for n in datasets)
                                   + (f". {note}" if note else ""))
            lr = st.number_input("Learning rate", min_value=1e-6, max_value=1.0, value=float(v["lr"]),
                                 step=float(v["lr"]) / 10, format="%.1e", key=f"{k}-lr",
                                 help="Step size of the optimiser. Too large and training diverges (NaN), too small "
                                      f"and it crawls. The seed uses {d['lr']:g}.")
            ema = st.number_input("Weight average", min_value=0.0, max_value=0.99999, value=float(v["ema"]),
                                  step=0.001, format="%.4f", key=f"{k}-ema",
                                  help="Samples, checkpoints and quality figures show a moving average of the "
                                       "weights with this decay (0.999: about the last thousand steps), which sits "
                                       "nearer the optimum than the noisy weights SGD leaves at any moment "
                                       "(Polyak averaging). 0 shows the live weights, as the seed does.")
        with c2:
            batch = st.number_input("Batch size", min_value=1, max_value=8192, value=int(v["batch_size"]), step=16,
                                    key=f"{k}-batch", help="Images per gradient step. Larger batches run faster "
                                    f"per image but take fewer steps per epoch. The seed uses {d['batch_size']}.")
            epochs = st.number_input("Epochs", min_value=1, max_value=1000, value=int(v["epochs"]), step=1,
                                     key=f"{k}-epochs", help="Passes over the training set. The seed trains "
                                     f"{d['epochs']}; one or two already show the model learning.")
        with c3:
            max_steps = st.number_input("Max steps (optional)", min_value=1, max_value=10**7, value=None, step=100,
                                        key=f"{k}-max-steps", placeholder="all epochs",
                                        help="Stop after this many steps even if the epochs are not done: a quick "
                                             "try. Leave empty to train every epoch.")
            # bf16 by default where the hardware runs it fast (the benchmark's fastest rows), fp32 elsewhere
            precision = st.selectbox("Precision", ("fp32", "bf16"), index=1 if bf16 else 0, key=f"{k}-precision",
                                     help="fp32 is exact and safe. bf16 runs matrix products in 16-bit brain floats: "
                                          "faster on GPUs and on CPUs with AMX, at a small cost in accuracy. "
                                          + ("This device supports it, so it is the default here." if bf16 else
                                             "This device has no fast bf16, so it would be slower here."))
        if note:
            st.caption(note)
        submitted = st.form_submit_button("Start training", type="primary", key=f"{k}-submit",
                                          disabled=not auth.allowed(), help=auth.why(None))
    if submitted:
        _start(model_name, values, dict(dataset=dataset, lr=float(lr), ema=float(ema), batch_size=int(batch),
                                        epochs=int(epochs),
                                        max_steps=int(max_steps) if max_steps else None, precision=precision))


@auth.guarded("start training")
def _start(model_name: str, values: dict[str, Any], train_cfg: dict[str, Any]) -> None:
    """The 'Start training' handler: checks the settings, submits the job and selects its run."""
    from genlib.data import DATASETS, DatasetUnavailable
    from genlib.training import TrainConfig

    model_cfg = dict(values)
    dataset, batch = train_cfg["dataset"], train_cfg["batch_size"]
    try:
        TrainConfig(**train_cfg)  # refuse bad values before loading any data
        n = int(state.get_dataset(dataset).x_train.shape[0])
        if batch > n:
            raise ValueError(f"Batch size {batch:,} is larger than the {n:,} training images of "
                             f"{DATASETS[dataset].title}: choose at most {n:,}.")
        run_id = state.get_manager().submit(model_name, model_cfg, train_cfg)
    except ValueError as e:
        st.error(f"Not started: {e}")
        return
    except (DatasetUnavailable, OSError) as e:
        st.error(f"Not started: {e}")
        return
    state.job_statuses.clear()
    state.select_run(run_id)
    st.rerun()
