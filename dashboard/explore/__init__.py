"""The "Exploring the latent space" panels: one module per model plus the shared widgets and in-browser components."""
