"""The 2D Ising model: Monte Carlo sampling, observables, the training dataset, and the RBM-vs-Monte-Carlo comparison."""
