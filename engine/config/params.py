"""A step's ``params`` table decoded into the struct its action declared.

An action declares its params with ``@strategy_params(MyParams)`` (``engine.core.strategy``);
the loader validates the TOML table into that ``msgspec.Struct`` at load time, field by field,
so each problem is reported at its own key path
(``$.workflows.hft.steps[1].params.z_entry: Expected `float` > 0.0, got -1``), a misspelt
name as an unknown key with a suggestion, and a cross-field check of the struct's
``__post_init__`` at the ``params`` table. An action that declares nothing gets the table as a
read-only mapping.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from engine.core.errors import ConfigError
from engine.core.strategy import params_type

__all__ = ["decode_params", "params_errors"]


def params_errors(
    fn: Callable[..., Any], raw: Mapping[str, Any], here: str
) -> Iterator[tuple[str, str]]:
    """``(key path, problem)`` for every problem of ``raw`` against ``fn``'s params struct;
    ``here`` is the key path of the params table."""
    cls = params_type(fn)
    if cls is None:
        return
    # The loader's renderings, so params read like every other config error (imported here:
    # the loader imports this module).
    from .loader import _render_key, _show, _unknown_hint

    fields = {f.name: f for f in msgspec.structs.fields(cls)}
    bad = False
    for name, value in raw.items():
        where = f"{here}{_render_key(str(name))}"
        field = fields.get(name)
        if field is None:
            bad = True
            yield where, f"unknown param `{name}` of `{cls.__name__}`{_unknown_hint(name, cls)}"
            continue
        try:
            msgspec.convert(value, field.type)
        except msgspec.ValidationError as exc:
            bad = True
            yield where, f"{exc}, got {_show(value)}"
            continue
        # TOML has inf and nan; a bound like gt=0 lets inf through, and no tunable is infinite.
        if isinstance(value, float) and not math.isfinite(value):
            bad = True
            yield where, f"must be a finite number, got {value}"
    if bad:
        return
    missing = [
        f.name for f in fields.values()
        if f.required and f.name not in raw
    ]
    for name in missing:
        yield f"{here}{_render_key(name)}", f"missing required param `{name}` of `{cls.__name__}`"
    if missing:
        return
    try:
        msgspec.convert(dict(raw), cls)
    except msgspec.ValidationError as exc:  # the struct's own cross-field checks
        yield here, f"{cls.__name__}: {exc}"


def decode_params(fn: Callable[..., Any], raw: Mapping[str, Any]) -> Any:
    """What the action receives as ``ctx.params``: its declared struct, or a read-only copy
    of the table. Raises :class:`ConfigError` (the loader has reported it with its path
    already, so this only happens to a config that skipped the loader)."""
    cls = params_type(fn)
    if cls is None:
        return MappingProxyType(dict(raw))
    for where, problem in params_errors(fn, raw, "$.params"):
        raise ConfigError(problem, key=where)
    return msgspec.convert(dict(raw), cls)
