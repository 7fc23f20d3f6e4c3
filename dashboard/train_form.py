"""The "train a new model" form of a model page: the model's fields and the training settings, checked before any
data loads; a bad value is refused with a message, a good form submits a job and selects its run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from dashboard import auth, state
from dashboard.model_text import MODEL_FIELDS, Field


def _defaults(model_name: str) -> dict[str, Any]:
    from genlib.models import model_class
    from genlib.training import SEED_DEFAULTS

    cfg = model_class(model_name).config_class
    out = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    out.update(SEED_DEFAULTS.get(model_name, {}))
    return out


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
    from genlib.data import DATASETS, DatasetUnavailable
    from genlib.training import TrainConfig

    d = _defaults(model_name)
    k = f"{model_name}-form"
    datasets, note = dataset_choices()
    bf16 = state.get_device_info().bf16
    with st.form(key=k, border=True):
        cols = st.columns(3)
        values: dict[str, Any] = {}
        for i, f in enumerate(MODEL_FIELDS[model_name]):
            with cols[i % 3]:
                values[f.name] = _widget(f, d[f.name], f"{k}-{f.name}")
        c1, c2, c3 = st.columns(3)
        with c1:
            dataset = st.selectbox("Dataset", datasets, format_func=lambda n: DATASETS[n].title, key=f"{k}-dataset",
                                   help="Images to learn from. " + "; ".join(
                                       f"{DATASETS[n].title}: {DATASETS[n].description}" for n in datasets)
                                   + (f". {note}" if note else ""))
            lr = st.number_input("Learning rate", min_value=1e-6, max_value=1.0, value=float(d["lr"]),
                                 step=float(d["lr"]) / 10, format="%.1e", key=f"{k}-lr",
                                 help="Step size of the optimiser. Too large and training diverges (NaN), too small "
                                      f"and it crawls. The seed uses {d['lr']:g}.")
        with c2:
            batch = st.number_input("Batch size", min_value=1, max_value=8192, value=int(d["batch_size"]), step=16,
                                    key=f"{k}-batch", help="Images per gradient step. Larger batches run faster "
                                    f"per image but take fewer steps per epoch. The seed uses {d['batch_size']}.")
            epochs = st.number_input("Epochs", min_value=1, max_value=1000, value=int(d["epochs"]), step=1,
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
    if not submitted or auth.refuse():
        return
    model_cfg = {name: v for name, v in values.items()}
    train_cfg = dict(dataset=dataset, lr=float(lr), batch_size=int(batch), epochs=int(epochs),
                     max_steps=int(max_steps) if max_steps else None, precision=precision)
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
