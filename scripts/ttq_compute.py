"""What scripts/time_to_quality.py's runs cost against their core's measured peak, the issue's "by how much and why":
the FLOPs of one training step of each recipe (genlib.flops: PyTorch's formulas for its matrix products and
convolutions); the FLOPs of the steps to a target (to its first reach if met, else to where it holds to the run's
end, else a lower bound) and their seconds at the one-thread `torch.mm` peak measured before the run (a compute-bound
roofline, Williams et al. 2009). A target whose FLOPs need more than its deadline at the peak is out of reach on that
core by compute as dense products, whatever the worker's other work costs. The RBM's steps are counted as its
reference step computes them, every product dense: on a CPU its fused step sums rows instead where an operand is
binary and sparse (genlib.models.rbm_fast), doing less arithmetic, so its steps' rate can pass the dense peak."""

from __future__ import annotations

from typing import Any

from genlib.work_budget import human_flops


def step_flops(model_name: str, model_config: dict[str, Any], train_config: dict[str, Any], data: Any) -> float:
    """FLOPs of one training step of this recipe on a batch of `data`'s training images (a fresh model, on the CPU:
    the count does not depend on the device or the threads; the RBM's as dense products)."""
    import torch

    from genlib.flops import train_step_flops
    from genlib.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name, dict(model_config))
    model.configure_training(lr=float(train_config["lr"]), precision=train_config.get("precision", "fp32"),
                             ema=float(train_config.get("ema") or 0.0))
    model.init_from_data(data.x_train)
    if hasattr(model, "fused_cpu"):  # the RBM: its reference step, whose products are all dense (the docstring)
        model.fused_cpu = False
    batch = data.x_train[: int(train_config["batch_size"])].cpu()  # (B, 1, 28, 28) uint8, as the loop feeds it
    return train_step_flops(model, batch)


def run_compute(run: dict[str, Any]) -> dict[str, Any] | None:
    """The run's steps against the peak: the FLOPs of a step, the steps' own rate (training seconds only) and the share
    of the peak they got over the run's wall clock (start-up, grids, checkpoints and evaluations took the rest).
    None without the step's FLOPs or the host's peak (runs recorded before either was kept)."""
    f, peak = run.get("step_flops"), run.get("host_mm_gflops")
    steps, train_s, wall_s = run.get("steps"), run.get("train_seconds"), run.get("budget_s")
    if not f or not peak or not steps:
        return None
    out = {"step_flops": f, "peak_gflops": peak, "steps": steps, "flops": steps * f}
    if train_s:
        out["steps_gflops"] = steps * f / train_s / 1e9
    if wall_s:
        out["share_of_peak"] = steps * f / (wall_s * peak * 1e9)  # of what the core could do in the run's seconds
    return out


def target_compute(run: dict[str, Any], target: dict[str, Any]) -> dict[str, Any] | None:
    """One target's FLOPs (a report of time_to_quality.target_report) and their seconds at the peak: met, the steps to
    where it was first reached; missed, the steps until it held to the curve's end (a figure judged on samples can
    cross a threshold once and fall back), or, where the last point misses it, a lower bound: the last measured
    step. `basis` says which ("reached", "holds", "last"); `fits_deadline` whether those seconds at the peak fit the
    deadline (None for a lower bound that does: more steps might have reached it in time)."""
    f, peak = run.get("step_flops"), run.get("host_mm_gflops")
    if not f or not peak:
        return None
    if target["met"]:
        basis, step = "reached", target.get("step")
    elif target.get("holds_from_step") is not None:
        basis, step = "holds", target["holds_from_step"]
    else:
        basis, step = "last", target.get("last_step")
    if step is None:
        return None
    flops = step * f
    at_peak = flops / (peak * 1e9)
    fits = at_peak <= target["deadline_s"]
    return {"basis": basis, "step": step, "flops": flops, "seconds_at_peak": at_peak,
            "deadline_flops_at_peak": target["deadline_s"] * peak * 1e9,
            "fits_deadline": None if basis == "last" and fits else fits}


def why(run: dict[str, Any], target: dict[str, Any]) -> str:
    """The table's sentence: the FLOPs a target took (or at least needs) and their seconds at this core's peak."""
    c = target.get("compute")
    if c is None:
        return "-"
    peak = run["host_mm_gflops"]
    where = {"reached": f"reached at step {c['step']:,}:", "holds": f"holds from step {c['step']:,}:",
             "last": f"not at step {c['step']:,}, the last: more than"}[c["basis"]]
    text = f"{where} {human_flops(c['flops'])} = {c['seconds_at_peak']:.0f} s at {peak:.0f} GFLOP/s"
    if c["fits_deadline"] is False:
        text += f" (> {target['deadline_s']:.0f} s: out of reach on this core)"
    elif c["fits_deadline"] and c["basis"] == "holds":
        text += f" (within {target['deadline_s']:.0f} s at the peak: late by the run's other work)"
    return text
