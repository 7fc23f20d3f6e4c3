"""The one way genlib checks a config's values: every frozen config dataclass calls these in its `__post_init__`,
and a model config declares its fields' bounds once (`whole`, `number`, `flag`, `choice`, `whole_tuple`) for its own
check, for the dashboard's form and for the command line's flags (with the flag's name and help, `Option`).

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


OPTION_KEY = "genlib.option"  # the metadata key of a field's command-line flag (genlib.cli builds its parser from it)


@dataclass(frozen=True)
class Bounds:
    """What one config field accepts: "int" in [lo, hi], "number" in [lo, hi] with either end open, "bool",
    "choice" among options, or "ints", a tuple of `length` ints in [lo, hi]. The config's __post_init__ checks it
    (check_declared), the dashboard's form and the command line's parser read it."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    options: tuple = ()
    length: int = 0  # of an "ints" tuple

    def check(self, name: str, value: Any) -> None:
        if self.kind == "int":
            check_int(name, value, int(self.lo), None if self.hi is None else int(self.hi))  # type: ignore[arg-type]
        elif self.kind == "number":
            check_number(name, value, self.lo, self.hi, lo_open=self.lo_open, hi_open=self.hi_open)  # type: ignore
        elif self.kind == "bool":
            check_bool(name, value)
        elif self.kind == "ints":
            check_ints(name, value, self.length, int(self.lo),  # type: ignore[arg-type]
                       None if self.hi is None else int(self.hi))
        else:
            check_choice(name, value, self.options)

    def closed(self, step: float) -> tuple[float | None, float | None]:
        """The inclusive range a widget with this step may offer: an open end moves in by one step."""
        lo = None if self.lo is None else self.lo + (step if self.lo_open else 0)
        hi = None if self.hi is None else self.hi - (step if self.hi_open else 0)
        return lo, hi


@dataclass(frozen=True)
class Option:
    """A config field's command-line flag: `--<flag>` (None: the field's name, dashes for underscores) and its help,
    which says what the field does for this model (genlib.cli prefixes the model's title)."""

    flag: str | None = None
    help: str | None = None


def _meta(declared: Bounds, cli: str | None, help: str | None) -> dict[str, Any]:
    return {BOUNDS_KEY: declared, OPTION_KEY: Option(cli, help)}


def whole(default: int, lo: int, hi: int | None = None, *, cli: str | None = None, help: str | None = None) -> Any:
    """A config field holding an int in [lo, hi]; `cli` renames its command-line flag, `help` explains it there."""
    return field(default=default, metadata=_meta(Bounds("int", lo, hi), cli, help))


def number(default: float, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False,
           cli: str | None = None, help: str | None = None) -> Any:
    """A config field holding a finite number in [lo, hi] (either end open on request)."""
    return field(default=default, metadata=_meta(Bounds("number", lo, hi, lo_open, hi_open), cli, help))


def flag(default: bool, *, cli: str | None = None, help: str | None = None) -> Any:
    """A config field holding True or False."""
    return field(default=default, metadata=_meta(Bounds("bool"), cli, help))


def choice(default: str, options: Iterable[str], *, cli: str | None = None, help: str | None = None) -> Any:
    """A config field holding one of `options`."""
    return field(default=default, metadata=_meta(Bounds("choice", options=tuple(options)), cli, help))


def whole_tuple(default: tuple[int, ...], lo: int, hi: int | None = None, *, cli: str | None = None,
                help: str | None = None) -> Any:
    """A config field holding a tuple of len(default) ints in [lo, hi] (channel widths); no form widget draws it."""
    return field(default=default, metadata=_meta(Bounds("ints", lo, hi, length=len(default)), cli, help))


def declared(config: Any) -> list[tuple[str, Bounds, Option]]:
    """(field name, Bounds, Option) of each field of a config dataclass that declares its bounds, in field order: the
    settings a user may set (an image shape, which the dataset decides, declares none)."""
    return [(f.name, f.metadata[BOUNDS_KEY], f.metadata.get(OPTION_KEY) or Option()) for f in fields(config)
            if BOUNDS_KEY in f.metadata]


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
            value = getattr(config, f.name)
            declared.check(f.name, value)
            if declared.kind == "number" and isinstance(value, int) and not isinstance(value, bool):
                # a whole number for a real field (0 for Adam's beta1): stored as the float it means, so the
                # libraries it reaches get one type (torch's Adam refuses betas mixing int and float)
                object.__setattr__(config, f.name, float(value))
