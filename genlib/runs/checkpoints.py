"""Self-describing, code-free checkpoints in the safetensors format (nanoGPT's idea of a checkpoint that rebuilds its model).

A checkpoint holds the model's name and config, the training config, the step, the parameters and (optionally) the
optimiser state, all as tensors plus a JSON header. Loading never unpickles anything: pickle files (torch.save's
format included) are refused, because unpickling can run arbitrary code.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genlib.runs.io import atomic_write_bytes

FORMAT = "genlib-checkpoint"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 100 * 2**20  # a safetensors header larger than this is not one of ours
MAX_NESTING = 32  # levels of nesting in a training state (an optimiser's is 4); deeper is not one of ours


class CheckpointError(ValueError):
    """A file that is not a loadable genlib checkpoint; the message says why and what to do."""


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """What a checkpoint file holds, loaded onto a device."""

    model_name: str
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    progress: dict[str, Any]  # step, epoch, images, seconds
    model_state: dict[str, torch.Tensor]
    training_state: dict[str, Any] | None
    extra: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.progress.get("step", 0))


# ---- nested state <-> flat tensors + JSON skeleton ----

def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensors in a nested structure by references, collecting them in `tensors`.

    Dicts become {"__dict__": [[key, value], ...]} so integer keys (optimiser state ids) survive JSON.
    """
    if isinstance(obj, torch.Tensor):
        key = prefix
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _flatten(v, f"{prefix}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor], device: torch.device, depth: int = 0) -> Any:
    """The nested state `_flatten` stored, every entry checked: a hand-made or damaged header gives a CheckpointError
    naming the fault, never a TypeError or a RecursionError."""
    if depth > MAX_NESTING:
        raise CheckpointError(f"the checkpoint's training state is nested deeper than {MAX_NESTING} levels; "
                              "genlib never writes that")
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            key = obj["__tensor__"]
            if not isinstance(key, str) or key not in tensors:
                raise CheckpointError(f"the checkpoint's header names a tensor {str(key)[:80]!r} that the file does "
                                      "not hold")
            return tensors[key].to(device)
        if "__dict__" in obj:
            items = obj["__dict__"]
            if not isinstance(items, list) or not all(
                    isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], (str, int, float, bool, type(None)))
                    for kv in items):
                raise CheckpointError("the checkpoint's training state has a damaged entry (a mapping that is not a "
                                      "list of [key, value] pairs)")
            return {k: _unflatten(v, tensors, device, depth + 1) for k, v in items}
        raise CheckpointError("the checkpoint's header has an unknown entry")
    if isinstance(obj, list):
        return [_unflatten(v, tensors, device, depth + 1) for v in obj]
    return obj


# ---- save ----

def checkpoint_bytes(model: Any, *, train_config: dict[str, Any], progress: dict[str, Any],
                     with_training_state: bool = True, half: bool = False,
                     extra: dict[str, Any] | None = None) -> bytes:
    """Serialise a model (and its optimiser state) to safetensors bytes.

    `half` stores floating parameters in float16 (for small shipped checkpoints); training state is then omitted.
    """
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    # a model with a weight average is saved averaged, what every reader shows; its live weights, which resuming
    # needs, are in its training state
    averaged = getattr(model, "averaged_weights", contextlib.nullcontext)
    with averaged():
        for k, v in model.state_dict().items():
            v = v.detach().to("cpu")
            if half and v.is_floating_point():
                v = v.half()
            tensors[f"model/{k}"] = v.contiguous().clone()
    skeleton = None
    if with_training_state and not half:
        skeleton = _flatten(model.training_state(), "train", tensors)
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model": model.name,
        "model_config": json.dumps(model.config_dict()),
        "train_config": json.dumps(train_config),
        "progress": json.dumps(progress),
        "training_state": json.dumps(skeleton),
        "extra": json.dumps(extra or {}),
    }
    return save(tensors, metadata=header)


def save_checkpoint(path: Path | str, model: Any, **kwargs: Any) -> None:
    """Write a checkpoint atomically: a crash leaves the previous file intact."""
    atomic_write_bytes(path, checkpoint_bytes(model, **kwargs))


# ---- load ----

def _refuse_pickles(data: bytes, where: str) -> None:
    """Refuse anything but a well-formed safetensors file, naming pickles (torch.save's format) as such.

    A safetensors file starts with its header's length (8 bytes, little-endian) and then '{'; that is checked
    first, because a valid length may begin with any byte, 0x80 (pickle's protocol marker) included.
    """
    if len(data) >= 9:
        n = int.from_bytes(data[:8], "little")
        if 0 < n <= MAX_HEADER_BYTES and data[8:9] == b"{":
            if 8 + n > len(data):
                raise CheckpointError(f"{where} is truncated: its header says {8 + n} bytes at least, "
                                      f"the file has {len(data)}.")
            return
    if data[:4] == b"PK\x03\x04":
        raise CheckpointError(f"{where} is a zip archive (torch.save's format), which holds a pickle. genlib never "
                              "unpickles files, because unpickling can run arbitrary code; save it with genlib instead.")
    if data[:1] == b"\x80" or data[:2] in (b"(d", b"(l", b"}q", b"]q", b"cc"):
        raise CheckpointError(f"{where} is a Python pickle. genlib never unpickles files, because unpickling can run "
                              "arbitrary code; only genlib's safetensors checkpoints can be loaded.")
    if len(data) < 10:
        raise CheckpointError(f"{where} is too short to be a checkpoint ({len(data)} bytes); it may be truncated.")
    raise CheckpointError(f"{where} is not a safetensors checkpoint (no valid header).")


def read_checkpoint(data: bytes, *, device: torch.device | str = "cpu", where: str = "the file") -> Checkpoint:
    """Parse checkpoint bytes without running any code from them; raise CheckpointError for anything else."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    _refuse_pickles(data, where)
    device = torch.device(device)
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{where} could not be read as safetensors ({e}); it may be truncated or damaged.") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{where} is a safetensors file but not a genlib checkpoint (no '{FORMAT}' header).")
    try:
        version = int(meta.get("format_version", "0"))
    except ValueError:
        version = -1
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{where} has checkpoint format version {meta.get('format_version')!r}; this genlib "
                              f"reads version {FORMAT_VERSION}.")
    try:
        model_config = json.loads(meta["model_config"])
        train_config = json.loads(meta.get("train_config", "{}"))
        progress = json.loads(meta.get("progress", "{}"))
        skeleton = json.loads(meta.get("training_state", "null"))
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where} has a damaged header ({e}).") from e
    except RecursionError:
        raise CheckpointError(f"{where} has a header nested too deeply to be a genlib checkpoint.") from None
    for name, value in (("model_config", model_config), ("train_config", train_config), ("progress", progress),
                        ("extra", extra)):
        if not isinstance(value, dict):
            raise CheckpointError(f"{where} has a damaged header: its {name} is not a JSON object.")
    if skeleton is not None and not isinstance(skeleton, dict):
        raise CheckpointError(f"{where} has a damaged header: its training state is not a JSON object.")
    model_state = {k[len("model/"):]: v.to(device) for k, v in tensors.items() if k.startswith("model/")}
    try:
        training_state = _unflatten(skeleton, tensors, device) if skeleton is not None else None
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}.") from None
    return Checkpoint(model_name=str(meta.get("model")), model_config=model_config, train_config=train_config,
                      progress=progress, model_state=model_state, training_state=training_state, extra=extra)


def read_header(path: Path | str) -> dict[str, Any]:
    """The JSON fields of a checkpoint's header (progress, extra, train_config, model_config) without loading its
    tensors; ValueError when the file has no safetensors header."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 0 < n <= MAX_HEADER_BYTES:
            raise ValueError(f"{Path(path).name} has no safetensors header")
        try:
            meta = json.loads(f.read(n)).get("__metadata__") or {}
            return {k: json.loads(v) for k, v in meta.items()
                    if k in ("progress", "extra", "train_config", "model_config")}
        except (AttributeError, TypeError, RecursionError) as e:
            raise ValueError(f"{Path(path).name} has a damaged header ({type(e).__name__})") from None


def load_checkpoint(path: Path | str, *, device: torch.device | str = "cpu", max_bytes: int | None = None) -> Checkpoint:
    path = Path(path)
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise CheckpointError(f"{path.name} is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB limit.")
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from e
    return read_checkpoint(data, device=device, where=path.name)


def model_from_checkpoint(ckpt: Checkpoint, *, device: torch.device | str = "cpu", expect: str | None = None):
    """Rebuild the model a checkpoint describes, with its weights, on `device` (float32, eval-ready)."""
    from genlib.models import build_model, model_class

    if expect is not None and ckpt.model_name != expect:
        raise CheckpointError(f"this is a {ckpt.model_name.upper()} checkpoint, not a {expect.upper()} one.")
    try:
        model_class(ckpt.model_name)
        model = build_model(ckpt.model_name, ckpt.model_config)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"the checkpoint's model description is not valid: {e}") from e
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in ckpt.model_state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"the checkpoint's weights do not fit a {ckpt.model_name.upper()} with its config: "
                              f"{str(e).splitlines()[0]}") from e
    return model.to(device)
