"""The dashboard's frame: page settings, navigation, the sidebar (device and every job), then the chosen page.

Run with `make run` (or `python -m streamlit run app.py`). Nothing heavy is imported here: torch loads on first use.
"""

import streamlit as st

from dashboard import auth, share, sidebar

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
sidebar.render()
auth.render()  # teacher mode only: the token box
share.sidebar_controls()  # presenter mode (?present=true) and 'Copy link for students'
pg.run()
