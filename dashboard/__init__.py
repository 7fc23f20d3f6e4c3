"""The Streamlit side of the product: layout and polling only; every computation is one call into genlib."""
