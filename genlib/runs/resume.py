"""What a resumed run trains to: the one rule for `epochs` and `max_steps` on resume, used by the CLI
(`python -m genlib train --resume RUN --epochs N`), JobManager.resume and the dashboard's "Continue training".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


def resumed_train_config(train_config: Mapping[str, Any], *, epochs: int | None = None,
                         max_steps: int | None = None) -> dict[str, Any]:
    """The training config a resumed run continues with (checked by TrainConfig: ValueError for a bad value).

    The rule: `epochs` and `max_steps` are totals counted from the run's start, as when the run was made, never
    "this many more" (the run carries on from its checkpoint's step towards that end).
    - Neither given: the planned end is kept, so the run finishes what it planned.
    - `max_steps` given: the step cap becomes it (with `epochs` given too, both change).
    - `epochs` given alone: the epochs become it and an earlier step cap is dropped: a new total of epochs asks to
      train to it, and the first plan's cap would otherwise end the run before it, often at once.
    """
    from genlib.training import TrainConfig

    tc = dict(train_config)
    if epochs is not None:
        tc["epochs"] = epochs
        if max_steps is None:
            tc["max_steps"] = None
    if max_steps is not None:
        tc["max_steps"] = max_steps
    try:
        return dataclasses.asdict(TrainConfig(**tc))
    except TypeError as e:  # an unknown or missing setting in an old run.json
        raise ValueError(f"the run's training settings are not understood: {e}") from e


def epochs_added(train_config: Mapping[str, Any], more: int, *, step: int, epoch: int,
                 steps_per_epoch: int | None) -> tuple[int | None, int | None]:
    """The totals (epochs, max_steps) for "train `more` epochs beyond the planned end" (the dashboard's Epochs to
    add), to pass to `resumed_train_config`: the epochs become max(planned, reached) + more and a step cap, when the
    run has one and its epoch length is known, moves by `more` epochs of steps from max(cap, step). `more` 0 gives
    (None, None): finish the planned training."""
    if more < 0:
        raise ValueError(f"epochs to add must be 0 or more, got {more}")
    if not more:
        return None, None
    epochs = max(int(train_config.get("epochs") or 1), epoch) + more
    cap = train_config.get("max_steps")
    if cap is not None and steps_per_epoch:
        return epochs, max(int(cap), step) + more * steps_per_epoch
    return epochs, None
