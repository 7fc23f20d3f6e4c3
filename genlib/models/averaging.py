"""An exponential moving average of a model's weights: the copy its samples, checkpoints and evaluations show, while
the optimiser goes on moving the live weights (Polyak & Juditsky 1992; for GANs Yazici et al., ICLR 2019).

With a constant step size, SGD's weights wander around the optimum by an amount set by the step size; their average
over the last few thousand updates sits closer to it. So the shown model improves at any moment of a run, without a
decaying schedule that needs to know the run's length (the lecture's "good digits whenever the teacher looks").
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from genlib.config import check_number


class WeightAverage:
    """avg_t = d_t avg_(t-1) + (1 - d_t) w_t over named tensors, with d_t = min(decay, (1 + t) / (10 + t)): the
    warm-up of TensorFlow's ExponentialMovingAverage(num_updates=t), so the first averages are not held near the
    random initial weights for the ~1 / (1 - decay) updates a plain average would take to forget them."""

    def __init__(self, decay: float) -> None:
        check_number("weight average decay", decay, 0.0, 1.0, lo_open=True, hi_open=True)
        self.decay = float(decay)
        self.updates = 0
        self.average: dict[str, torch.Tensor] | None = None  # name -> a tensor like the live one (device, dtype)
        self._own: dict[str, torch.Tensor] | None = None  # inside `shown`: the live weights, set aside

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, live: dict[str, torch.Tensor]) -> None:
        """Fold the live weights in, after an optimiser step; the first call starts the average at them."""
        if self._own is not None:
            raise RuntimeError("the weights are being shown averaged: a training step must not run inside `shown`")
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in live.items()}
        elif self.average.keys() != live.keys():
            raise ValueError(f"the model's averaged weights changed from {sorted(self.average)} to {sorted(live)}")
        self.updates += 1
        keys = list(live)
        torch._foreach_lerp_([self.average[k] for k in keys], [live[k] for k in keys], 1.0 - self.current_decay())

    @contextlib.contextmanager
    def shown(self, live: dict[str, torch.Tensor]) -> Iterator[None]:
        """Within the block the live tensors hold the average (for sampling, saving, evaluating); after it, their
        own values again. Nested use is a no-op; before the first update there is no average and nothing changes."""
        if self._own is not None or self.average is None:
            yield
            return
        with torch.no_grad():
            own = {k: v.clone() for k, v in live.items()}
            for k, v in live.items():
                v.copy_(self.average[k])
        self._own = own
        try:
            yield
        finally:
            self._own = None
            with torch.no_grad():
                for k, v in live.items():
                    v.copy_(own[k])

    def state(self, live: dict[str, torch.Tensor]) -> dict[str, object]:
        """What resuming needs besides the average (which a checkpoint stores as the model's weights): the live
        weights the optimiser was moving (set aside while `shown`), and the update count of the warm-up."""
        own = self._own if self._own is not None else live
        return {"updates": self.updates, "live": {k: v.detach().clone() for k, v in own.items()}}

    @torch.no_grad()
    def restore(self, state: dict[str, object], live: dict[str, torch.Tensor]) -> None:
        """Resume from a checkpoint whose weights (now in `live`) are the average: they become the average again,
        and the saved live weights go back into the model."""
        average = {k: v.detach().clone() for k, v in live.items()}
        self.updates = restore_live_weights(state, live)
        self.average = average


@torch.no_grad()
def restore_live_weights(state: dict[str, object], live: dict[str, torch.Tensor]) -> int:
    """Copy the live weights that `WeightAverage.state` saved back into the model's tensors `live`; returns the
    update count. A model resumed without an average of its own needs only this."""
    saved = state.get("live")
    if not isinstance(saved, dict) or saved.keys() != live.keys():
        raise ValueError("the checkpoint's averaged-weights state does not match this model's weights; "
                         "start a new run or train without a weight average")
    for k, v in live.items():
        v.copy_(saved[k].to(v.device, v.dtype))
    return int(state.get("updates", 0))
