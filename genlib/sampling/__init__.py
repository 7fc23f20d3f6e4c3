"""Model-agnostic samplers: Gibbs chains, Langevin dynamics, Bernoulli draws, and the fused CPU kernels."""
