"""The RBM page: what a restricted Boltzmann machine is, its training panel, and its exploration panel."""

import streamlit as st

from dashboard.ising_view import render as render_ising
from dashboard.explore.panel import render
from dashboard.training import training_panel

st.title("Restricted Boltzmann machine (RBM)")
st.markdown(
    "An RBM is an **energy-based model**: it gives every pair of a binary image $v$ and binary hidden features $h$ "
    "an energy $E(v,h) = -b^\\top v - c^\\top h - h^\\top W v$, and a probability $p(v,h) \\propto e^{-E(v,h)}$, "
    "so low energy means likely. Training lowers the energy of the data and raises that of the model's own "
    "samples; those samples are intractable, so **contrastive divergence** (CD-k) takes them from just $k$ steps "
    "of Gibbs sampling, $h \\sim p(h|v)$ then $v \\sim p(v|h)$, both easy because units within a layer are not "
    "connected. To generate, run that Gibbs chain for many steps from random pixels."
)
run = training_panel("rbm")
st.divider()
render("rbm", run)
st.divider()
render_ising()  # Torlai & Melko's experiment: RBMs trained on 2-D Ising configurations, thermodynamics vs Monte Carlo
