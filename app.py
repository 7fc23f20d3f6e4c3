"""The dashboard's frame: page settings, navigation, the sidebar (device and every job), then the chosen page.

Run with `make run` (`python -m streamlit run serve.py`: this app plus the GAN grid route; `streamlit run app.py` works
too, with Streamlit's sliders on the GAN page). Nothing heavy is imported here: torch loads on first use.
"""

import streamlit as st

from dashboard import auth, share, sidebar
from dashboard.preload import preload_lazy_modules

preload_lazy_modules()  # before any chart: plotly's encoder must never see a half-imported pandas (30 sessions at once)

st.set_page_config(page_title="Generative models lab", page_icon=":material/blur_on:", layout="wide")

pg = st.navigation({
    "": [st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Models": [
        st.Page("app_pages/rbm.py", title="RBM", icon=":material/grid_on:"),
        st.Page("app_pages/vae.py", title="VAE", icon=":material/compress:"),
        st.Page("app_pages/gan.py", title="GAN", icon=":material/sports_kabaddi:"),
        st.Page("app_pages/ebm.py", title="EBM", icon=":material/landscape:"),
    ],
    "Runs": [st.Page("app_pages/runs.py", title="All runs", icon=":material/list:")],
})
auth.stop_if_misconfigured()  # a teacher token too short to hold: its error on every page, and nothing else
sidebar.render()
auth.render()  # teacher mode only: the token box
share.sidebar_controls()  # presenter mode (?present=true) and 'Copy link for students'
pg.run()
