"""The one way genlib checks a config's values: every frozen config dataclass calls these in its `__post_init__`,
and a model config declares its fields' bounds once (`whole`, `number`, `flag`, `choice`) for its own check and for
the dashboard's form.

Each check raises ValueError("<name> must be <what>, got <value>"), which the dashboard shows and the CLI prints,
never a TypeError from a comparison. A bool is never a number here: JSON's `true` passes isinstance(True, int), and a
checkbox must not become a batch size of 1 or an Adam beta of 0. Numbers must be finite (NaN passes no bound).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any


def check(condition: bool, message: str) -> None:
    """Raise ValueError(message) unless `condition`: configs refuse bad values instead of fixing them silently."""
    if not condition:
        raise ValueError(message)


def is_int(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> None:
    """An int in [lo, hi] (hi None: no upper bound)."""
    ok = is_int(value) and value >= lo and (hi is None or value <= hi)
    what = (f"an int in [{lo:,}, {hi:,}]" if hi is not None else
            {0: "a non-negative int", 1: "a positive int"}.get(lo, f"an int of at least {lo:,}"))
    check(ok, f"{name} must be {what}, got {value!r}")


def check_number(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
                 hi_open: bool = False) -> None:
    """A finite number in [lo, hi], with either end open on request: (lo, hi], [lo, hi), (lo, hi)."""
    ok = is_number(value) and (lo < value if lo_open else lo <= value) and (value < hi if hi_open else value <= hi)
    check(ok, f"{name} must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}, "
              f"got {value!r}")


def check_bool(name: str, value: Any) -> None:
    """True or False (not 0 or 1, not a string)."""
    check(isinstance(value, bool), f"{name} must be true or false, got {value!r}")


def check_choice(name: str, value: Any, options: Iterable[Any]) -> None:
    """One of `options` (compared only after a type check, so a list or dict from JSON cannot raise TypeError)."""
    options = tuple(options)
    ok = isinstance(value, (str, int, float)) and not isinstance(value, bool) and value in options
    check(ok, f"{name} must be one of {', '.join(map(str, options))}, got {value!r}")


def check_ints(name: str, value: Any, length: int, lo: int, hi: int | None = None) -> None:
    """A tuple of `length` ints, each in [lo, hi] (hi None: no upper bound): image shapes, channel widths."""
    ok = isinstance(value, tuple) and len(value) == length and all(
        is_int(v) and v >= lo and (hi is None or v <= hi) for v in value)
    what = f"in [{lo:,}, {hi:,}]" if hi is not None else f"of at least {lo:,}"
    check(ok, f"{name} must be {length} ints {what}, got {value!r}")


# ---- bounds declared on a config's fields: one source for the config's check and for a form's widgets ----

BOUNDS_KEY = "genlib.bounds"  # the dataclasses.field metadata key


@dataclass(frozen=True)
class Bounds:
    """What one config field accepts: "int" in [lo, hi], "number" in [lo, hi] with either end open, "bool", or
    "choice" among options. The config's __post_init__ checks it (check_declared) and the dashboard's form reads it."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    options: tuple = ()

    def check(self, name: str, value: Any) -> None:
        if self.kind == "int":
            check_int(name, value, int(self.lo), None if self.hi is None else int(self.hi))  # type: ignore[arg-type]
        elif self.kind == "number":
            check_number(name, value, self.lo, self.hi, lo_open=self.lo_open, hi_open=self.hi_open)  # type: ignore
        elif self.kind == "bool":
            check_bool(name, value)
        else:
            check_choice(name, value, self.options)

    def closed(self, step: float) -> tuple[float | None, float | None]:
        """The inclusive range a widget with this step may offer: an open end moves in by one step."""
        lo = None if self.lo is None else self.lo + (step if self.lo_open else 0)
        hi = None if self.hi is None else self.hi - (step if self.hi_open else 0)
        return lo, hi


def whole(default: int, lo: int, hi: int | None = None) -> Any:
    """A config field holding an int in [lo, hi]."""
    return field(default=default, metadata={BOUNDS_KEY: Bounds("int", lo, hi)})


def number(default: float, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Any:
    """A config field holding a finite number in [lo, hi] (either end open on request)."""
    return field(default=default, metadata={BOUNDS_KEY: Bounds("number", lo, hi, lo_open, hi_open)})


def flag(default: bool) -> Any:
    """A config field holding True or False."""
    return field(default=default, metadata={BOUNDS_KEY: Bounds("bool")})


def choice(default: str, options: Iterable[str]) -> Any:
    """A config field holding one of `options`."""
    return field(default=default, metadata={BOUNDS_KEY: Bounds("choice", options=tuple(options))})


def bounds(config: Any, name: str) -> Bounds | None:
    """The Bounds declared on field `name` of a config dataclass (or instance); None when it declares none."""
    for f in fields(config):
        if f.name == name:
            return f.metadata.get(BOUNDS_KEY)
    raise ValueError(f"{getattr(config, '__name__', type(config).__name__)} has no field {name!r}")


def check_declared(config: Any) -> None:
    """Check every field of `config` that declares its Bounds (call it from __post_init__)."""
    for f in fields(config):
        declared = f.metadata.get(BOUNDS_KEY)
        if declared is not None:
            declared.check(f.name, getattr(config, f.name))
