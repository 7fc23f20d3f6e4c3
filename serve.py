"""The server entry point that `make run` starts: Streamlit's app (app.py) plus the one HTTP route the GAN explorer's
sliders fetch their grids from (dashboard/grid_route.py). `streamlit run app.py` still works: the GAN page then keeps
Streamlit's own sliders, one panel rerun per move.

    python -m streamlit run serve.py --server.port 8501
"""

import streamlit as st

from dashboard import grid_route

# `streamlit run serve.py` finds this ASGI app by its name and serves app.py through it (Streamlit 1.57+, st.App)
app = st.App("app.py", routes=grid_route.routes(), lifespan=grid_route.lifespan)
