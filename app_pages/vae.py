"""The VAE page: what a variational autoencoder is, its training panel, and its exploration panel."""

import streamlit as st

from dashboard.explore.panel import render
from dashboard.training import training_panel

st.title("Variational autoencoder (VAE)")
st.markdown(
    "A VAE learns two networks: an **encoder** $q(z|x)$ that maps an image to a Gaussian over a small code $z$, "
    "and a **decoder** $p(x|z)$ that maps codes back to images. It maximises the evidence lower bound "
    "$\\log p(x) \\ge \\mathbb{E}_{q}[\\log p(x|z)] - \\mathrm{KL}(q(z|x)\\,\\|\\,\\mathcal{N}(0, I))$: "
    "reconstruct each image well while keeping its code close to the prior. The reparameterisation "
    "$z = \\mu + \\sigma\\,\\epsilon$ lets gradients pass through the sampling. To generate, draw "
    "$z \\sim \\mathcal{N}(0, I)$ and decode it."
)
run = training_panel("vae")
st.divider()
render("vae", run)
