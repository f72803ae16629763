"""The one validation path for every configuration: engine (`EntropyConfig`, a rule's parameters), experiment
(`ExperimentConfig`, method declarations) and the CLI's ``--set key=value``.

A field is checked against its type hint and its declared bounds, written once on the field itself::

    theta_abs: float = field(default=2.0, metadata=bounds(min=0))
    combine: str = field(default="any", metadata=bounds(choices=("any", "all")))

Every failure is a `ConfigError` whose message is one line that starts with the field's name.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Mapping


class ConfigError(ValueError):
    """A configuration value is invalid; the message is one line naming the field."""


def bounds(*, min: float | None = None, max: float | None = None, choices: tuple | None = None,
           finite: bool = False) -> dict[str, Any]:
    """Field metadata: the value must lie in [min, max], be one of ``choices``, or be finite (numbers)."""
    return {"bounds": {"min": min, "max": max, "choices": choices, "finite": finite}}


def check(ok: bool, name: str, value: Any, why: str) -> None:
    """Raise ``ConfigError("name: why (got value)")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{name}: {why} (got {value!r})")


def check_value(name: str, value: Any, hint: Any, metadata: Mapping[str, Any] | None = None) -> None:
    """One field: its type (`check_type`), then its declared bounds (skipped for None)."""
    check_type(name, value, hint)
    rule = (metadata or {}).get("bounds")
    if not rule or value is None:
        return
    null = " or null" if _matches(None, hint) else ""
    if rule["choices"] is not None:
        names = [str(c) for c in rule["choices"]]
        shown = " or ".join(names) if len(names) == 2 else "one of " + ", ".join(names)
        check(value in rule["choices"], name, value, f"must be {shown}{null}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        check(not math.isnan(value), name, value, "must be a number, not NaN")
        check(not rule["finite"] or math.isfinite(value), name, value, f"must be a finite number{null}")
        lo, hi = rule["min"], rule["max"]
        if lo is not None and hi is not None:
            check(lo <= value <= hi, name, value, f"must be in [{lo}, {hi}]{null}")
        elif lo is not None:
            check(value >= lo, name, value, f"must be >= {lo}{null}")
        elif hi is not None:
            check(value <= hi, name, value, f"must be <= {hi}{null}")


def check_fields(obj: Any, prefix: str = "") -> None:
    """Every field of a dataclass instance against its type hint and bounds."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        check_value(prefix + f.name, getattr(obj, f.name), hints[f.name], f.metadata)


def check_knots(name: str, knots: Any, what: str, min_x: float | None = None, positive_y: bool = False,
                strict: bool = True) -> None:
    """A piecewise-linear curve: null or >= 1 pairs ``[x, y]`` of finite numbers, x ascending (``strict``: no
    duplicates), x >= ``min_x`` and y > 0 with ``positive_y`` (``what`` names x and y)."""
    if knots is None:
        return
    check(isinstance(knots, list) and len(knots) >= 1 and all(isinstance(k, list) and len(k) == 2 for k in knots),
          name, knots, f"must be null or a list of [{what}] knots")
    numbers = [v for k in knots for v in k]
    check(all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers),
          name, knots, f"knots must be finite numbers [{what}]")
    check(all(a[0] < b[0] or (not strict and a[0] == b[0]) for a, b in zip(knots, knots[1:])), name, knots,
          f"knots must be {'strictly ' if strict else ''}ascending in {what.split(',')[0]}"
          + (" (no duplicates)" if strict else ""))
    check(min_x is None or knots[0][0] >= min_x, name, knots, f"{what.split(',')[0]} must be >= {min_x:g}"
          if min_x is not None else "")
    check(not positive_y or all(k[1] > 0 for k in knots), name, knots,
          f"{what.split(',')[1].strip()} must be > 0")


def check_keys(name: str, value: Any, required: set[str], allowed: set[str]) -> None:
    """A mapping with exactly the allowed keys, the required ones present."""
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: must be a mapping (got {value!r})")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key (allowed: {sorted(allowed)})")
    missing = sorted(required - set(value))
    if missing:
        raise ConfigError(f"{name}.{missing[0]}: required")


def check_type(name: str, value: Any, hint: Any) -> None:
    """Check ``value`` against a simple type hint (int, float, str, bool, list[...], dict[...], X | None)."""
    if not _matches(value, hint):
        shown = str(hint) if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))
        shown = shown.replace("typing.", "")
        raise ConfigError(f"{name}: expected {shown}, got {type(value).__name__} {value!r}")


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is list:
        (arg,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_matches(v, arg) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def parse_overrides(items: list[str] | None, data: dict[str, Any]) -> dict[str, Any]:
    """Apply ``--set key=value`` strings (values parsed as YAML) on top of ``data``; returns ``data``."""
    import yaml

    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            data[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key.strip()}: not valid YAML ({str(err).splitlines()[0]})") from None
    return data


# dtype spellings -> the one name saved, compared and loaded (entspec.models.loading maps names to torch)
DTYPE_NAMES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16", "half": "float16"}


def canonical_dtype(name: Any) -> Any:
    """``bf16`` -> ``bfloat16``, ``fp32`` -> ``float32``, ...; anything else unchanged."""
    return DTYPE_NAMES.get(name, name) if isinstance(name, str) else name
