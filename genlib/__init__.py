"""genlib: deep generative models (RBM, VAE, GAN) for teaching, trained in the background and explored live.

Importing the package is cheap: submodules are imported where they are used.
"""

__version__ = "0.1.0"
