"""genlib: deep generative models (RBM, VAE, GAN, EBM) for teaching, trained in the background and explored live.

Importing the package is cheap: submodules are imported where they are used, and the notebook API
(`genlib.train`, `genlib.sample`, `genlib.evaluate`, see genlib/api.py) is imported on first use.
"""

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["train", "sample", "evaluate", "__version__"]

_API = ("train", "sample", "evaluate")


def __getattr__(name: str) -> Any:
    # PEP 562: `genlib.train` imports genlib.api (and torch) only when first asked for, not on `import genlib`
    if name in _API:
        return getattr(importlib.import_module("genlib.api"), name)
    raise AttributeError(f"module 'genlib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))
