"""The Ising panel of the RBM page: train one RBM per temperature on Monte Carlo spin configurations and watch the
thermodynamics of its samples approach the Monte Carlo curves (Torlai & Melko, PRB 94, 165134, 2016, Figs. 2-3).

Layout only: sampling, observables and the sweep plan are genlib.ising.monte_carlo*, runs are started by the JobManager, and the
live part is a fragment that re-reads run folders every few seconds while a run of the sweep trains.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from dashboard import auth, state

LIVE_REFRESH_S = 5.0
LIVE_CHAINS, LIVE_STEPS = 1000, 300  # Gibbs chains x steps per RBM on the page (the study script uses 4,000 x 1,000)
N_SHOWN = 16  # lattices per side in the sample comparison

# the default recipe and its cost, measured by scripts/ising_study.py (docs/ising.md) on a 2-core CPU
RECIPE_NOTE = (
    "Defaults: the recipe of the Ising study in docs/ising.md (L = 8): 256 hidden units, centred gradient, CD-10, 200 "
    "epochs of 50,000 configurations in batches of 500 (20,000 updates), lr 0.1 with momentum 0.9 decaying linearly "
    "to 0, initial weights of std 0.1. Its RBMs match Monte Carlo's energy and |m| within error bars at all 9 "
    "temperatures from 1.5 to 3.5 (|z| <= 1.6). Time: about 6 min per temperature on one core of a 2-core CPU; the 9 "
    "temperatures took 28 min with two runs at a time. Fewer epochs or hidden units give a quicker look, with the "
    "energy above Monte Carlo's (128 hidden units without centring: 0.005 to 0.018 per spin too high)."
)

EXPLANATION = r"""
**What you are looking at.** The 2-D Ising model puts a spin $s_i = \pm 1$ on every site of an $L \times L$ lattice
(wrapped around at the edges) with energy $E(s) = -\sum_{\langle ij \rangle} s_i s_j$ over neighbouring pairs:
aligned neighbours lower it. In equilibrium at temperature $T$ a configuration has the **Boltzmann probability**
$p(s) = e^{-E(s)/T} / Z$. At low $T$ almost every spin points the same way (ordered, $|m| \approx 1$); at high $T$
they are random ($|m| \approx 0$). In between lies a phase transition at Onsager's exact
$T_c = 2 / \ln(1 + \sqrt 2) \approx 2.269$, where domains of every size appear, and the specific heat $C$ and the
susceptibility $\chi$ (the energy and magnetisation fluctuations) peak. On a small lattice the peaks are rounded
and shifted: there is no true singularity at finite $L$.

**The experiment.** A Monte Carlo simulation (Metropolis, plus Wolff cluster flips near $T_c$) draws spin
configurations from $p(s)$ at each temperature. An RBM sees only those configurations, as 0/1 images, and learns its
own Boltzmann distribution $p(v) = \sum_h e^{-E(v,h)} / Z$ over the visible units, which is the same kind of object:
an energy-based model. If training succeeds, $p(v)$ is close to the Ising $p(s)$, so configurations sampled from the
RBM by Gibbs chains must have the **same thermodynamics**: the same mean energy and $|m|$, and even the same
fluctuations $C$ and $\chi$, although the RBM was never told the energy function or the temperature. Points with
error bars: Monte Carlo (truth) and RBM samples; dashed lines: the infinite lattice (Onsager, Yang). Expect the
largest gaps near $T_c$, where the distribution is hardest to learn.
"""


# ---- cached computations (shared by every viewer) ----

@st.cache_data(ttl=2.0, show_spinner=False)
def _sweeps(runs_root: str) -> dict[str, list[tuple[float, str]]]:
    """sweep id -> [(T, run id)] sorted by T, newest sweep first (read from the run folders)."""
    from genlib.ising.compare import sweep_of

    out: dict[str, list[tuple[float, str]]] = {}
    for run in state.get_store().list():
        found = sweep_of(run.info())
        if found:
            out.setdefault(found[0], []).append((found[1], run.id))
    return {k: sorted(v) for k, v in out.items()}


@st.cache_data(max_entries=64, show_spinner=False)
def _mc(dataset: str, root: str | None, T: float) -> dict[str, Any]:
    """Monte Carlo thermodynamics and a few lattices of one cached temperature."""
    import torch

    from genlib.data import load_dataset
    from genlib.ising.dataset import spins_of
    from genlib.ising.observables import correlation_function, thermodynamics

    data = load_dataset(dataset, root=root, device="cpu")
    spins = spins_of(torch.cat([data.x_train, data.x_test]))
    lattices = data.x_test[:N_SHOWN, 0].numpy() // 255  # (16, L, L) in {0, 1}
    return {"thermo": thermodynamics(spins, T).as_dict(), "lattices": lattices,
            "corr": correlation_function(spins).tolist()}  # G(r), r = 0..L/2


@st.cache_data(max_entries=128, show_spinner=False)
def _rbm(path: str, mtime_ns: int, T: float) -> dict[str, Any]:
    """The RBM's thermodynamics from its weights file at `path` (keyed by mtime: a new snapshot recomputes)."""
    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint
    from genlib.ising.compare import live_spins
    from genlib.ising.observables import correlation_function, thermodynamics

    model = model_from_checkpoint(load_checkpoint(path), device="cpu").eval()
    # within genlib.work_budget's cap per snapshot: fewer chains for big RBMs, none (and a note) when too big
    spins, plan = live_spins(model, chains=LIVE_CHAINS, steps=LIVE_STEPS, seed=1)
    if spins is None:
        return {"note": plan.note}
    lattices = ((spins[:N_SHOWN] + 1) / 2).to("cpu").numpy().astype("uint8")
    return {"thermo": thermodynamics(spins, T).as_dict(), "lattices": lattices,
            "corr": correlation_function(spins).tolist()}


# ---- the form ----

def _form() -> None:
    from genlib.ising.observables import T_C

    k = "ising-form"
    with st.form(key=k, border=True):
        c1, c2, c3 = st.columns(3)
        L = c1.selectbox("Lattice side L", (8, 16, 32, 64), key=f"{k}-L",
                         help="L x L spins = visible units. Torlai & Melko use L = 8 (64 spins); larger lattices "
                              "show a sharper transition but need more hidden units and time.")
        sweep = c1.toggle("One RBM per temperature (sweep)", value=True, key=f"{k}-sweep",
                          help="On: one RBM for each temperature of the range, as in the paper. Off: one RBM at the "
                               "single temperature below.")
        t_range = c2.slider("Temperature range", 0.5, 5.0, (1.5, 3.5), 0.05, key=f"{k}-range",
                            help=f"Evenly spaced temperatures; T_c = {T_C:.3f} lies between 1.5 and 3.5.")
        count = c2.number_input("Temperatures", 2, 16, 9, key=f"{k}-count", help="How many RBMs the sweep trains.")
        t_one = c2.number_input("Single temperature", 0.5, 5.0, round(T_C, 3), 0.05, key=f"{k}-T", format="%.3f",
                                help="Used when the sweep is off. The default is T_c.")
        n = c3.number_input("Configurations per temperature", 1000, 100_000, 50_000, 1000, key=f"{k}-n",
                            help="Monte Carlo samples the RBM learns from (one in ten more is kept for testing). "
                                 "They are simulated on first use, then cached.")
        hidden = c3.number_input("Hidden units", 4, 4096, 256, 8, key=f"{k}-hidden",
                                 help="Four per spin (256 for L = 8). One hidden unit per nearest-neighbour bond (128) "
                                      "can represent the Ising Boltzmann weight exactly, but trained RBMs of that size "
                                      "leave the energy slightly too high; fewer learn faster and match |m| first.")
        c4, c5, c6, c7 = st.columns(4)
        cd_k = c4.number_input("CD-k", 1, 100, 10, key=f"{k}-k", help="Gibbs steps of the negative phase. Ordered "
                               "phases need more than CD-1 to learn both magnetised states.")
        epochs = c5.number_input("Epochs", 1, 2000, 200, key=f"{k}-epochs",
                                 help="Passes over the configurations. The step size falls linearly to 0 over the "
                                      "run, so the last epochs polish the model instead of shaking it.")
        lr = c6.number_input("Learning rate", 1e-4, 1.0, 0.1, format="%.3f", key=f"{k}-lr",
                             help="The starting step size (momentum 0.9); it decays linearly to 0.")
        batch = c7.number_input("Batch size", 10, 1000, 500, 10, key=f"{k}-batch")
        centering = st.toggle("Centred gradient", value=True, key=f"{k}-centering",
                              help="Steps in coordinates centred on the mean spin and mean hidden activity (Melchior "
                                   "et al. 2016): the same RBM, a better-conditioned gradient. Spins coded 0/1 are "
                                   "symmetric about 1/2, and without centring the energy stays too high.")
        st.caption(RECIPE_NOTE)
        go = st.form_submit_button("Train on Ising data", type="primary", key=f"{k}-submit",
                                   disabled=not auth.allowed(), help=auth.why(None))
    if go:
        _start_sweep(L, sweep, t_range, count, t_one, n, hidden, cd_k, epochs, lr, batch, centering)


@auth.guarded("train on Ising data")
def _start_sweep(L: int, sweep: bool, t_range: tuple[float, float], count: int, t_one: float, n: int, hidden: int,
                 cd_k: int, epochs: int, lr: float, batch: int, centering: bool) -> None:
    """The 'Train on Ising data' handler: one run per temperature of the plan, queued; the sweep is then shown."""
    from genlib.ising.compare import SweepPlan
    from genlib.ising.dataset import temperature_grid

    temps = temperature_grid(t_range[0], t_range[1], int(count)) if sweep else temperature_grid(t_one, t_one, 1)
    plan = SweepPlan(sweep_id=f"sweep-{int(time.time() * 1000)}", L=int(L), temperatures=temps, n=int(n),
                     n_hidden=int(hidden), k=int(cd_k), lr=float(lr), batch_size=int(batch), epochs=int(epochs),
                     centering=bool(centering))
    try:
        mgr = state.get_manager()
        for job in plan.jobs():
            mgr.submit(**job)
    except (ValueError, OSError) as e:
        st.error(f"Not started: {e}")
        return
    state.job_statuses.clear()
    _sweeps.clear()
    st.session_state["ising-sweep-select"] = plan.sweep_id
    st.rerun()


# ---- the live view ----

def _figure(rows: list[dict[str, Any]]):
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from genlib.ising.observables import T_C, onsager_energy, onsager_magnetisation

    panels = (("energy", "energy per spin E/N"), ("abs_m", "magnetisation |m|"),
              ("heat", "specific heat C"), ("chi", "susceptibility χ"))
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in panels], horizontal_spacing=0.1,
                        vertical_spacing=0.14)
    grid_t = np.linspace(min(r["T"] for r in rows) - 0.1, max(r["T"] for r in rows) + 0.1, 200)
    for i, (name, _) in enumerate(panels):
        row, col = i // 2 + 1, i % 2 + 1
        if name in ("energy", "abs_m"):
            f = onsager_energy if name == "energy" else onsager_magnetisation
            fig.add_trace(go.Scatter(x=grid_t, y=[f(t) for t in grid_t], mode="lines", name="L = ∞ (exact)",
                                     line=dict(dash="dash", color="grey"), showlegend=i == 0), row=row, col=col)
        for who, color, symbol in (("mc", "#1f77b4", "circle"), ("rbm", "#d62728", "diamond")):
            pts = [r for r in rows if r.get(who)]
            fig.add_trace(go.Scatter(
                x=[r["T"] for r in pts], y=[r[who][name] for r in pts], mode="markers+lines",
                error_y=dict(type="data", array=[r[who][name + "_err"] for r in pts], visible=True),
                marker=dict(color=color, symbol=symbol, size=8), line=dict(width=1, color=color),
                name="Monte Carlo" if who == "mc" else "RBM samples", showlegend=i == 0), row=row, col=col)
        fig.add_vline(x=T_C, line=dict(dash="dot", color="black", width=1), row=row, col=col)
        if row == 2:  # the top row's axis titles would collide with the titles of the panels below
            fig.update_xaxes(title_text="temperature T", row=row, col=col)
    fig.update_layout(height=620, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.1),
                      uirevision="ising")
    return fig


def _corr_figure(mc: list[float], rbm: list[float], T: float):
    """G(r) of the Monte Carlo lattices and of the RBM's samples at one temperature, r = 0..L/2."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, values, color, symbol in (("Monte Carlo", mc, "#1f77b4", "circle"),
                                        ("RBM samples", rbm, "#d62728", "diamond")):
        fig.add_trace(go.Scatter(x=list(range(len(values))), y=values, mode="markers+lines", name=name,
                                 marker=dict(color=color, symbol=symbol, size=8), line=dict(width=1, color=color)))
    fig.update_layout(title=f"spin-spin correlation G(r) at T = {T:.3f}", height=320, xaxis_title="distance r",
                      xaxis_dtick=1, yaxis_title="G(r)", yaxis_range=[0, 1.05], margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.25), uirevision="ising-corr")
    return fig


def _lattice_png(lattices: Any) -> bytes:
    import torch

    from genlib.images import grid, png_bytes, upscale

    x = torch.as_tensor(lattices, dtype=torch.float32).unsqueeze(1)  # (n, 1, L, L) in {0, 1}
    tiles = grid(x, nrow=4, pad=1, pad_value=128)  # grey gaps: down spins (black) must not merge with the border
    return png_bytes(upscale(tiles, max(1, 320 // tiles.shape[1])))


def _sweep_view(sweep_id: str, members: list[tuple[float, str]], shown_live: tuple[str, ...]) -> None:
    """Fragment body: status, curves, table and lattices of one sweep; reruns the page when a run starts or stops."""
    from genlib.ising.compare import Comparison
    from genlib.ising.dataset import is_cached
    from genlib.ising.observables import Thermo

    store, mgr = state.get_store(), state.get_manager()
    rows, live = [], []
    for T, run_id in members:
        try:
            run, status = store.get(run_id), mgr.status(run_id)
        except (ValueError, FileNotFoundError):
            continue
        if status.live:
            live.append(run_id)
        tc = run.info().get("train_config") or {}
        row: dict[str, Any] = {"T": T, "run": run_id, "state": status.state, "epoch": status.epoch}
        root = tc.get("data_root")
        if is_cached(root or str(_data_root()), tc["dataset"]):
            mc = _mc(tc["dataset"], root, T)
            row["mc"], row["mc_lattices"], row["mc_corr"] = mc["thermo"], mc["lattices"], mc["corr"]
        weights = run.latest_weights()
        if weights is not None:
            try:
                rbm = _rbm(str(weights), weights.stat().st_mtime_ns, T)
                if "note" in rbm:  # too large for the page's sampling cap (genlib.work_budget)
                    row["cap"] = rbm["note"]
                else:
                    row["rbm"], row["rbm_lattices"], row["rbm_corr"] = rbm["thermo"], rbm["lattices"], rbm["corr"]
            except Exception as e:  # noqa: BLE001 - a snapshot being replaced: show the rest, retry next tick
                row["note"] = f"weights unreadable right now ({type(e).__name__})"
        rows.append(row)
    if tuple(live) != shown_live:
        st.rerun()  # a run started or ended: the whole page, so the refresh timer follows
    done = sum(r["state"] == "finished" for r in rows)
    st.caption(f"{len(rows)} temperature(s): {done} finished, {len(live)} training or queued. "
               + ("Refreshing every few seconds while they train; " if live else "")
               + f"RBM values from up to {LIVE_CHAINS:,} Gibbs chains of {LIVE_STEPS} steps each (more in "
                 "scripts/ising_study.py).")
    capped = next((r["cap"] for r in rows if r.get("cap")), None)
    if capped:
        st.info(capped, icon=":material/speed:")
    if not any(r.get("mc") or r.get("rbm") for r in rows):
        st.info("The Monte Carlo data are being simulated; curves appear when the first run starts training.")
        return
    st.plotly_chart(_figure(rows), key=f"ising-curves-{sweep_id}", config={"displaylogo": False})
    table = []
    for r in rows:
        line = {"T": round(r["T"], 3), "state": r["state"], "epoch": r["epoch"]}
        for who in ("mc", "rbm"):
            for name, label in (("energy", "E/N"), ("abs_m", "|m|")):
                th = r.get(who)
                line[f"{label} {who.upper()}"] = f"{th[name]:.4f} ± {th[name + '_err']:.4f}" if th else "…"
        if r.get("mc") and r.get("rbm"):
            c = Comparison(T=r["T"], mc=Thermo(**r["mc"]), rbm=Thermo(**r["rbm"]))
            line["z E"], line["z |m|"] = round(c.z("energy"), 1), round(c.z("abs_m"), 1)
        table.append(line)
    st.dataframe(table, hide_index=True, key=f"ising-table-{sweep_id}")
    st.caption("z = (RBM − Monte Carlo) / combined standard error: |z| ≲ 2 means the two agree within error bars.")
    both = [r for r in rows if r.get("mc_lattices") is not None and r.get("rbm_lattices") is not None]
    if both:
        temps = [r["T"] for r in both]
        T = st.select_slider("Temperature of the lattices", options=temps, value=temps[len(temps) // 2],
                             format_func=lambda t: f"{t:.3f}", key=f"ising-lattice-T-{sweep_id}")
        r = both[temps.index(T)]
        left, right = st.columns(2)
        left.image(_lattice_png(r["mc_lattices"]), caption=f"Monte Carlo at T = {T:.3f} (white: up)")
        right.image(_lattice_png(r["rbm_lattices"]), caption=f"RBM samples at T = {T:.3f}")
        st.plotly_chart(_corr_figure(r["mc_corr"], r["rbm_corr"], T), key=f"ising-corr-{sweep_id}",
                        config={"displaylogo": False})
        st.caption("G(r) = ⟨s_i s_(i+r)⟩: how far the spins' alignment reaches. It decays fast above T_c, slowly "
                   "near it, and stays near |m|² below it; the RBM was never shown this curve, only lattices.")


def _data_root():
    from genlib.data import default_data_root

    return default_data_root()


def render() -> None:
    """The Ising section of the RBM page."""
    st.subheader("Physics: the 2-D Ising model")
    with st.expander("What an RBM has to do with the Ising model", expanded=False, icon=":material/science:"):
        st.markdown(EXPLANATION)
    sweeps = _sweeps(str(state.get_store().root))
    with st.expander("Train RBMs on Ising configurations", expanded=not sweeps, icon=":material/thermostat:"):
        _form()
    if not sweeps:
        st.info("No Ising runs yet: choose a lattice and temperatures above and press **Train on Ising data**.")
        return
    ids = list(sweeps)
    key = "ising-sweep-select"
    if st.session_state.get(key) not in ids:
        st.session_state[key] = ids[0]

    def label(i: str) -> str:
        temps = [t for t, _ in sweeps[i]]
        return f"{i} · {len(temps)} temperature(s), T = {min(temps):.2f}…{max(temps):.2f}"

    sweep_id = st.selectbox("Ising experiment", ids, format_func=label, key=key)
    members = sweeps[sweep_id]
    mgr = state.get_manager()
    live = []
    for _, run_id in members:
        try:
            if mgr.status(run_id).live:
                live.append(run_id)
        except (ValueError, FileNotFoundError):
            pass
    st.fragment(_sweep_view, run_every=LIVE_REFRESH_S if live else None)(sweep_id, members, tuple(live))
