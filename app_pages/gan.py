"""The GAN page: what a generative adversarial network is, its training panel, and its exploration panel."""

import streamlit as st

from dashboard.explore.panel import render
from dashboard.training import training_panel

st.title("Generative adversarial network (GAN)")
st.markdown(
    "A GAN trains two networks against each other. The **generator** $G$ turns random noise $z$ into images; the "
    "**discriminator** $D$ outputs the probability that an image is real. $D$ learns to tell real from generated, "
    "$G$ learns to fool $D$. At the game's equilibrium $G$'s images are distributed like the data and $D$ can only "
    "guess: $D = 1/2$ everywhere. There is no likelihood to watch, so progress shows in the samples and in $D$'s "
    "outputs drifting toward $1/2$. To generate, run $G$ once on fresh noise."
)
run = training_panel("gan")
st.divider()
render("gan", run)
