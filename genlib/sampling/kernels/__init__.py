"""Hand-fused CPU passes that eager PyTorch would make many small kernels of, compiled on first use (genlib.sampling.kernels.cd)."""
