"""FLOP counts of a model's work by PyTorch's own formulas (torch.utils.flop_counter.flop_registry: matrix products
and convolutions, a multiply-add as two FLOPs, backward passes included), counted in the calling thread only: what a
training step costs, so that seconds to a target can be set against a core's measured peak (Williams et al.,
"Roofline", 2009, for the compute-bound case)."""

from __future__ import annotations

from typing import Any, Callable

import torch


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """(FLOPs, result) of fn(*args, **kwargs): each matrix product and convolution it dispatches, its autograd
    backward included, by flop_registry's formula; an in-place product (`W.addmm_`, the RBM's update) by its
    out-of-place formula. Elementwise work (activations, draws, optimiser updates) is not counted.

    Counted by a dispatch mode of this thread only. PyTorch's FlopCounterMode also installs process-wide module hooks
    (its ModuleTracker) that, while it counts, hook every other thread's forward passes too; a page session running
    a Langevin chain (torch.autograd.grad) at that moment then failed with "A leaf node was passed to
    _will_engine_execute_node" (seen in the load test, tests/test_work_budget.py reproduces it).
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    def formula(func: Any) -> Callable[..., int] | None:
        packet = func._overloadpacket
        found = flop_registry.get(packet)
        name = packet.__name__
        if found is None and name.endswith("_"):  # addmm_ -> addmm: the same product, written in place
            found = flop_registry.get(getattr(torch.ops.aten, name[:-1], None))
        return found

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - PyTorch's signature
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            f = formula(func)
            if f is not None:
                self.total += f(*args, **kwargs, out_val=out)
            return out

    with Count() as counter:
        result = fn(*args, **kwargs)
    return float(counter.total), result


def train_step_flops(model: Any, batch: torch.Tensor) -> float:
    """FLOPs of one training step as genlib.training's loop takes it: `train_step_uint8` on `batch` (B, C, H, W)
    uint8, then `update_average`. The model must be configured for training (`configure_training`); this trains it
    two steps and counts the second, so that buffers and lazy state made by a first step are not counted."""
    def step() -> None:
        model.train_step_uint8(batch)
        model.update_average()

    step()
    flops, _ = count_flops(step)
    return flops
