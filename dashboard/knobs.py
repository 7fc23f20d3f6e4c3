"""Live knobs of a running job on its model page: the learning rate, the VAE's KL weight beta and the RBM's Gibbs
steps k, changed without restarting the run. The worker applies a change within a second, logs it as a knob event,
keeps it in its checkpoints, and the loss chart marks it with a labelled dotted line (dashboard.charts).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import auth, state

# knob -> (label, help, min, max, step, format); ints for k
KNOB_FIELDS: dict[str, tuple[str, str, float, float, float, str]] = {
    "lr": ("Learning rate", "The optimiser's step size, changed from the next step on. Lower it when the curves "
           "get noisy or diverge; raise it when they crawl.", 1e-6, 1.0, 1e-4, "%.1e"),
    "beta": ("beta (KL weight)", "Weight of the KL term in the loss: 1 is the true ELBO, more pulls the codes "
             "toward the prior (smoother latent space, blurrier images), less lets them spread.", 0.0, 10.0, 0.1,
             "%.2f"),
    "k": ("Gibbs steps k", "Gibbs steps of the negative phase (CD-k): more steps, a less biased gradient, each step "
          "slower.", 1, 100, 1, "%d"),
}


def knob_controls(run: Any, model_name: str) -> None:
    """A one-line form with the run's live knobs at their current values and an Apply button (model page, live run)."""
    from genlib.runs.forks import current_settings
    from genlib.models import model_class

    names = [n for n in model_class(model_name).live_knobs if n in KNOB_FIELDS]
    if not names:
        return
    current = current_settings(run)
    with st.form(key=f"knobs-{run.id}", border=False):
        cols = st.columns(len(names) + 1, vertical_alignment="bottom")
        values: dict[str, Any] = {}
        for col, name in zip(cols, names):
            label, help_text, lo, hi, step, fmt = KNOB_FIELDS[name]
            now = current.get(name, lo)
            if name == "k":
                values[name] = col.number_input(label, min_value=int(lo), max_value=int(hi), value=int(now),
                                                step=int(step), help=help_text, key=f"knob-{name}-{run.id}")
            else:
                values[name] = col.number_input(label, min_value=min(lo, float(now)), max_value=max(hi, float(now)),
                                                value=float(now), step=step, format=fmt, help=help_text,
                                                key=f"knob-{name}-{run.id}")
        go = cols[-1].form_submit_button("Apply while training", key=f"knobs-apply-{run.id}",
                                         icon=":material/tune:", disabled=not auth.allowed(),
                                         help=auth.why("Send the changed settings to the running job; the loss "
                                                       "chart marks the step where they took effect."))
    if go:
        _apply(run, values, current)


@auth.guarded("change a running job's settings")
def _apply(run: Any, values: dict[str, Any], current: dict[str, Any]) -> None:
    """The 'Apply while training' handler: sends the changed knobs to the worker."""
    changed = {n: v for n, v in values.items() if v != current.get(n)}
    if not changed:
        st.info("Nothing changed: set a new value first.")
        return
    try:
        state.get_manager().set_knobs(run.id, **changed)
    except (ValueError, FileNotFoundError) as e:
        st.error(f"Not applied: {e}")
        return
    st.toast("Sent: " + ", ".join(f"{n} = {v:g}" for n, v in changed.items()), icon=":material/tune:")
