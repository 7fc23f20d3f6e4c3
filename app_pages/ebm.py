"""The EBM page: what an energy-based model is, its training panel, and its exploration panel (Langevin chains)."""

import streamlit as st

from dashboard.explore.panel import render
from dashboard.training import training_panel

st.title("Energy-based model (EBM)")
st.markdown(
    "An energy-based model is one neural network $E_\\theta(x)$ that gives every image $x$ a single number, its "
    "**energy**, and the probability $p_\\theta(x) = e^{-E_\\theta(x)}/Z_\\theta$: **low energy means likely**. "
    "There is no decoder and no latent code, and the normaliser $Z_\\theta$ is intractable, so samples come from "
    "**Langevin dynamics**: start from noise and repeatedly step downhill on the energy, "
    "$x \\leftarrow x - \\eta\\, \\nabla_x E_\\theta(x) + \\sigma\\,\\xi$, with a little Gaussian noise $\\xi$. "
    "Training (**contrastive divergence**, after Du & Mordatch 2019 and Foster's chapter 7) lowers the energy of "
    "real images and raises the energy of the model's own Langevin samples, until the two look alike. To keep "
    "training cheap, the samples continue from a **replay buffer** of earlier samples instead of starting from "
    "noise each time, and a small penalty $\\alpha(E_{\\text{data}}^2 + E_{\\text{samples}}^2)$ keeps the energies "
    "near zero. The lecture recipe also divides every layer's weights by their largest singular value "
    "(**spectral normalisation**), so the energy's slopes stay bounded and training can take larger steps. An RBM "
    "is an energy-based model too: the last tab below runs the same Langevin chain on its free energy, beside its "
    "own Gibbs sampler."
)
run = training_panel("ebm")
st.divider()
render("ebm", run)
