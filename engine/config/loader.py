"""Load, validate and resolve a TOML configuration.

Loading runs in three stages, each failing with a :class:`~engine.core.errors.ConfigError` whose
``str()`` is ``<file>: at <key path>: <problem>``:

1. read and parse the TOML (unreadable file, not UTF-8, syntax error with line and column);
2. decode into the frozen structs of :mod:`engine.config.schema` with ``msgspec.convert``
   (types, ranges, unknown and missing keys);
3. semantic checks that span fields or need imports (:func:`check_config`).

Decoding stops at the first error (msgspec does); the semantic stage collects every problem it
finds, :func:`check_config` returns all of them and the loaders raise the first, in file
order, so a user fixing errors one by one always sees the earliest one next.
"""

from __future__ import annotations

import difflib
import graphlib
import hashlib
import importlib
import inspect
import json
import math
import os
import re
import tomllib
import types
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import msgspec

from engine.core.errors import ConfigError
from engine.core.events import SYMBOL_PATTERN, SYMBOL_RULE
from engine.core.strategy import is_cheap, sends_orders_flag
from engine.core.workflow import ExecKind

from .params import params_errors
from .schema import ACTION_PATTERN, NAME_PATTERN, Config, Step, Workflow
from .strategy_paths import folder_errors, resolve_folders, search_hint, use_strategy_paths

__all__ = [
    "check_config",
    "clear_action_cache",
    "config_digest",
    "effective_run_in",
    "load_config",
    "load_config_with_digest",
    "loads_config",
    "resolve_action",
]


_ACTION_RE = re.compile(ACTION_PATTERN)
_NAME_RE = re.compile(NAME_PATTERN)
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Resolved actions by spec. Only successes are cached: a failed import may succeed after the
# user fixes the module and sends SIGHUP.
_action_cache: dict[str, Callable[..., Any]] = {}


# --------------------------------------------------------------------------------------------
# Public entry points


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, decode and validate the config file at ``path``."""
    return load_config_with_digest(path)[0]


def load_config_with_digest(path: str | os.PathLike[str]) -> tuple[Config, str]:
    """Like :func:`load_config`, plus :func:`config_digest` of the very bytes that were parsed.

    Reading once matters on reload: hashing the file separately could pair a config with the
    digest of a newer edit that landed in between.
    """
    shown = os.fspath(path)
    data = _read_bytes(shown)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file is not valid UTF-8 (byte offset {exc.start})", path=shown
        ) from None
    config = _load_text(text, shown, base_dir=Path(os.path.abspath(shown)).parent)
    return config, hashlib.sha256(data).hexdigest()


def loads_config(text: str, *, path: str = "<string>") -> Config:
    """Decode and validate config ``text``; ``path`` is only used in error messages and, when it
    names a real file rather than ``<...>``, as the base for relative paths in the config (the
    current directory otherwise)."""
    if path.startswith("<") and path.endswith(">"):
        base_dir = Path.cwd()
    else:
        base_dir = Path(os.path.abspath(path)).parent
    return _load_text(text, path, base_dir=base_dir)


def config_digest(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of the file's bytes: the config version recorded with every run."""
    return hashlib.sha256(_read_bytes(os.fspath(path))).hexdigest()


def resolve_action(spec: str, *, searched: tuple[str, ...] | None = None) -> Callable[..., Any]:
    """Import and return the callable named by ``spec`` (``package.module:function``).

    Raises :class:`ConfigError` (without file or key: the loader adds those) naming the module
    or attribute that failed; ``searched``, the config's strategy folders, are named when the
    module is not found. Successful resolutions are cached for the life of the process.
    """
    cached = _action_cache.get(spec)
    if cached is not None:
        return cached
    if not _ACTION_RE.match(spec):
        raise ConfigError(f"invalid action {spec!r}: expected `package.module:function`")
    module_name, _, attr_path = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise ConfigError(
                f"cannot import module `{module_name}` of action `{spec}`: "
                f"no module named `{missing}`{search_hint(searched)}"
            ) from None
        # The module exists but one of its own imports does not: name both.
        raise ConfigError(
            f"cannot import module `{module_name}` of action `{spec}`: "
            f"it imports `{missing}`, which is not installed"
        ) from exc
    except BaseException as exc:
        # An action module may fail at import time in any way, sys.exit() and
        # KeyboardInterrupt included: user code must never stop the daemon from here.
        raise ConfigError(
            f"cannot import module `{module_name}` of action `{spec}`: {type(exc).__name__}: {exc}"
        ) from exc
    walked = module_name
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise ConfigError(f"`{walked}` has no attribute `{attr}` (action `{spec}`)") from None
        walked = f"{walked}:{attr}" if walked == module_name else f"{walked}.{attr}"
    if not callable(target):
        raise ConfigError(f"action `{spec}` is not callable (it is {type(target).__name__})")
    fn: Callable[..., Any] = target
    _action_cache[spec] = fn
    return fn


def clear_action_cache() -> None:
    """Forget resolved actions (tests that swap action modules in and out use this)."""
    _action_cache.clear()


def effective_run_in(step: Step, fn: Callable[..., Any]) -> ExecKind:
    """Where ``step`` runs with action ``fn``: ``ASYNC`` (a task on the loop, cancellable),
    ``INLINE`` (called on the loop, never suspends) or ``THREAD`` (the thread pool).

    ``run_in = "auto"`` resolves to ``"async"`` for coroutine functions, to ``"inline"`` for
    plain functions marked :func:`engine.core.strategy.cheap`, and to ``"thread"`` otherwise.
    Raises :class:`ConfigError` for an async action forced into a thread.
    """
    if _is_async(fn):
        if step.run_in == "thread":
            raise ConfigError(
                f'action `{step.action}` is async and runs on the event loop: run_in = "thread" '
                'does not apply to it; use run_in = "auto"'
            )
        return ExecKind.ASYNC
    if step.run_in == "inline":
        return ExecKind.INLINE
    if step.run_in == "thread":
        return ExecKind.THREAD
    return ExecKind.INLINE if is_cheap(fn) else ExecKind.THREAD


def check_config(config: Config, *, path: str = "<string>") -> tuple[ConfigError, ...]:
    """Every semantic problem of an already decoded ``config``, in file order.

    The loaders run this and raise the first problem; code that builds a :class:`Config` by
    hand (tests, tools) can run it too. Imports every step's action.
    """
    return tuple(_semantic_errors(config, path))


# --------------------------------------------------------------------------------------------
# Reading and decoding


def _read_bytes(shown: str) -> bytes:
    try:
        with open(shown, "rb") as fh:
            return fh.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot read config file: {reason}", path=shown) from None


_TOML_WHERE_RE = re.compile(r"^(?P<msg>.*) \(at (?P<where>line \d+, column \d+|end of document)\)$")


_TOO_DEEP = "invalid TOML: arrays or tables nested too deeply"


def _load_text(text: str, shown: str, *, base_dir: Path) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        detail = str(exc)
        match = _TOML_WHERE_RE.match(detail)
        if match:
            problem = f"invalid TOML at {match['where']}: {match['msg']}"
        else:
            problem = f"invalid TOML: {detail}"
        raise ConfigError(problem, path=shown) from None
    except RecursionError:
        # tomllib parses arrays and inline tables recursively: `x = [[[...]]]` a few hundred
        # deep exhausts the stack. No config needs more than a handful of levels.
        raise ConfigError(_TOO_DEEP, path=shown) from None
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        try:
            raise _from_validation_error(exc, raw, shown) from None
        except RecursionError:
            raise ConfigError(_TOO_DEEP, path=shown) from None
    except RecursionError:
        raise ConfigError(_TOO_DEEP, path=shown) from None
    config = _resolve_paths(config, base_dir)
    for error in _semantic_errors(config, shown):
        raise error
    return config


def _resolve_paths(config: Config, base_dir: Path) -> Config:
    folders = resolve_folders(config.strategies.paths, base_dir)
    if folders != config.strategies.paths:
        config = msgspec.structs.replace(
            config, strategies=msgspec.structs.replace(config.strategies, paths=folders)
        )
    replay = config.source.replay
    if replay is None:
        return config
    resolved = os.path.abspath(os.path.join(base_dir, os.path.expanduser(replay.path)))
    if resolved == replay.path:
        return config
    source = msgspec.structs.replace(
        config.source, replay=msgspec.structs.replace(replay, path=resolved)
    )
    return msgspec.structs.replace(config, source=source)


# --------------------------------------------------------------------------------------------
# msgspec.ValidationError -> ConfigError
#
# msgspec reports ``<problem> - at `$.a.b[0].c` `` but renders dict keys as ``[...]``, speaks
# JSON (``object``) rather than TOML (``table``) and does not show the offending value. The
# raw TOML data and the schema's type hints are enough to fix all three.

_AT_RE = re.compile(r"^(?P<msg>.*) - at `(?P<loc>\$[^`]*)`$", re.S)
_AT_KEY_RE = re.compile(r"^(?P<msg>.*) - at `key` in `(?P<loc>\$[^`]*)`$", re.S)
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>.*)`$", re.S)
_MISSING_RE = re.compile(r"^Object missing required field `(?P<field>.*)`$", re.S)
# msgspec shows the pattern as its ``repr``.
_REGEX_RE = re.compile(r"^Expected `str` matching regex (?P<pattern>'.*')$", re.S)
_TOKEN_RE = re.compile(r"\.(?P<field>[A-Za-z_][A-Za-z0-9_]*)|\[(?P<index>\d+|\.\.\.)\]")

_PATTERN_HINTS = {
    repr(ACTION_PATTERN): "an action of the form `package.module:function`",
    repr(NAME_PATTERN): "a name of letters, digits and `_`, not starting with a digit, "
    "at most 64 characters",
    repr(SYMBOL_PATTERN): f"a symbol: {SYMBOL_RULE}",
}
_TOML_TYPE_NAMES = {"`object`": "`table`", "`null`": "`nothing`"}


def _from_validation_error(exc: msgspec.ValidationError, raw: Any, shown: str) -> ConfigError:
    text = str(exc)
    key_error = _AT_KEY_RE.match(text)
    match = key_error or _AT_RE.match(text)
    message, loc = (match["msg"], match["loc"]) if match else (text, "$")
    key, tp, value, found = _locate(loc, raw)
    if key_error:
        message = f"invalid key: {message}"
    elif unknown := _UNKNOWN_RE.match(message):
        field = unknown["field"]
        key += _render_key(field)
        message = f"unknown key `{field}`{_unknown_hint(field, tp)}"
    elif missing := _MISSING_RE.match(message):
        field = missing["field"]
        key += _render_key(field)
        message = f"missing required key `{field}`"
    elif regex := _REGEX_RE.match(message):
        hint = _PATTERN_HINTS.get(regex["pattern"], f"a string matching {regex['pattern']}")
        message = f"expected {hint}"
        if found:
            message += f", got {_show(value)}"
    else:
        if message.startswith("Invalid enum value"):
            allowed = _literal_values(tp)
            if allowed:
                message = f"{message}; expected one of {', '.join(map(_show, allowed))}"
        elif found and message.startswith("Expected") and ", got " not in message:
            message += f", got {_show(value)}"
        for json_name, toml_name in _TOML_TYPE_NAMES.items():
            message = message.replace(json_name, toml_name)
    return ConfigError(message, path=shown, key=key)


def _locate(loc: str, raw: Any) -> tuple[str, Any, Any, bool]:
    """Walk msgspec's error location through the raw data and the schema together.

    Returns the location with dict keys filled in, the schema type found there, and the raw
    value there (with whether it exists, since ``None`` never appears in TOML data).
    """
    key = "$"
    tp: Any = Config
    value: Any = raw
    found = True
    for token in _TOKEN_RE.finditer(loc[1:]):
        tp = _unwrap(tp)
        field, index = token["field"], token["index"]
        if field is not None:
            key += f".{field}"
            tp = _struct_hints(tp).get(field, Any) if _is_struct(tp) else Any
            found = found and isinstance(value, dict) and field in value
            value = value[field] if found else None
        elif index == "...":
            value_type = get_args(tp)[1] if get_origin(tp) is dict else Any
            culprit = _failing_entry(value, value_type) if found else None
            if culprit is None:
                key += "[...]"
                found, value = False, None
            else:
                key += _render_key(culprit)
                value = value[culprit]
            tp = value_type
        else:
            position = int(index)
            key += f"[{position}]"
            args = get_args(tp)
            tp = args[0] if get_origin(tp) is tuple and args else Any
            found = found and isinstance(value, list) and position < len(value)
            value = value[position] if found else None
    return key, _unwrap(tp), value, found


def _failing_entry(table: Any, value_type: Any) -> str | None:
    # msgspec converts a dict's entries in order and stops at the first failure, so the first
    # entry that fails on its own is the one the error is about.
    if not isinstance(table, dict):
        return None
    for name, entry in table.items():
        try:
            msgspec.convert(entry, value_type)
        except msgspec.ValidationError:
            return str(name)
    return None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is Union or origin is types.UnionType:
            members = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


@cache
def _struct_hints(cls: type[msgspec.Struct]) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _unknown_hint(field: str, tp: Any) -> str:
    if not _is_struct(tp):
        return ""
    allowed = list(tp.__struct_fields__)
    close = [name for name in allowed if _similar(field, name)]
    if close:
        return f" (did you mean `{close[0]}`?)"
    return f" (expected one of: {', '.join(allowed)})"


def _similar(a: str, b: str) -> bool:
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio() >= 0.75


def _literal_values(tp: Any) -> tuple[Any, ...]:
    return get_args(tp) if get_origin(tp) is Literal else ()


def _show(value: Any) -> str:
    """A value as it would be written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _render_key(name: str) -> str:
    return f".{name}" if _IDENT_RE.match(name) else f"[{json.dumps(name)}]"


# --------------------------------------------------------------------------------------------
# Semantic checks


def _semantic_errors(config: Config, shown: str) -> Iterator[ConfigError]:
    def error(key: str, message: str) -> ConfigError:
        return ConfigError(message, path=shown, key=key)

    yield from (error(key, message) for key, message in _non_finite(config, "$"))

    # Strategy folders go on the import path before any action resolves (a Config built by
    # hand, not loaded from a file, may leave them unset: none then).
    folders = config.strategies.paths or ()
    broken = dict(folder_errors(folders))
    for index, problem in broken.items():
        yield error(f"$.strategies.paths[{index}]", problem)
    searched = use_strategy_paths(f for i, f in enumerate(folders) if i not in broken)

    source = config.source
    if source.kind == "replay" and source.replay is None:
        yield error(
            "$.source.replay",
            'source.kind = "replay" needs a [source.replay] table with at least `path`',
        )
    if source.sim.hot_symbols > source.sim.symbols:
        yield error(
            "$.source.sim.hot_symbols",
            f"hot_symbols ({source.sim.hot_symbols}) must be <= symbols ({source.sim.symbols})",
        )

    seen_symbols: dict[str, int] = {}
    for index, seed in enumerate(config.symbols):
        first = seen_symbols.setdefault(seed.name, index)
        if first != index:
            yield error(
                f"$.symbols[{index}].name",
                f"duplicate symbol {_show(seed.name)} (already seeded at $.symbols[{first}])",
            )

    for name, workflow in config.workflows.items():
        base = f"$.workflows{_render_key(name)}"
        if not _NAME_RE.match(name):
            hint = _PATTERN_HINTS[repr(NAME_PATTERN)]
            yield error(base, f"invalid workflow name {_show(name)}: expected {hint}")
        yield from (
            error(key, message) for key, message in _workflow_errors(workflow, base, searched)
        )


def _non_finite(obj: msgspec.Struct, key: str) -> Iterator[tuple[str, str]]:
    # Every float of the schema is bounded, which already rejects NaN, but not infinity;
    # an infinite timeout or cash balance is a typo, not a setting. ``params`` hold user data
    # and are left alone (they are dicts of plain values, not structs, so the walk skips them).
    for field in obj.__struct_fields__:
        value = getattr(obj, field)
        here = f"{key}.{field}"
        if isinstance(value, float) and not math.isfinite(value):
            yield here, f"must be a finite number, got {value}"
        elif isinstance(value, msgspec.Struct):
            yield from _non_finite(value, here)
        elif isinstance(value, tuple):
            for index, item in enumerate(value):
                if isinstance(item, msgspec.Struct):
                    yield from _non_finite(item, f"{here}[{index}]")
        elif isinstance(value, dict):
            for name, item in value.items():
                if isinstance(item, msgspec.Struct):
                    yield from _non_finite(item, f"{here}{_render_key(str(name))}")


def _workflow_errors(
    workflow: Workflow, base: str, searched: tuple[str, ...]
) -> Iterator[tuple[str, str]]:
    route = workflow.route
    if route.max_priority is not None and route.max_priority < route.min_priority:
        yield (
            f"{base}.route.max_priority",
            f"max_priority ({route.max_priority}) is below min_priority ({route.min_priority}):"
            " the route would match no symbol",
        )

    first_index: dict[str, int] = {}
    for index, step in enumerate(workflow.steps):
        first = first_index.setdefault(step.name, index)
        if first != index:
            yield (
                f"{base}.steps[{index}].name",
                f"duplicate step name `{step.name}` (first defined at steps[{first}])",
            )

    for index, step in enumerate(workflow.steps):
        here = f"{base}.steps[{index}]"
        listed: set[str] = set()
        for dep_index, dep in enumerate(step.depends_on):
            dep_key = f"{here}.depends_on[{dep_index}]"
            if dep == step.name:
                yield dep_key, f"step `{step.name}` depends on itself"
            elif dep not in first_index:
                known = ", ".join(f"`{name}`" for name in first_index)
                yield dep_key, f"unknown step `{dep}` (this workflow's steps: {known})"
            elif dep in listed:
                yield dep_key, f"`{dep}` is listed twice"
            listed.add(dep)
        yield from _action_errors(step, here, searched)

    cycle = _find_cycle(workflow)
    if cycle:
        yield (
            f"{base}.steps[{first_index[cycle[0]]}].depends_on",
            f"dependency cycle {' -> '.join(cycle)} (each step depends on the next)",
        )


def _action_errors(step: Step, here: str, searched: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    try:
        fn = resolve_action(step.action, searched=searched)
    except ConfigError as exc:
        yield f"{here}.action", exc.problem
        return
    yield from params_errors(fn, step.params, f"{here}.params")
    try:
        mode = effective_run_in(step, fn)
    except ConfigError as exc:
        yield f"{here}.run_in", exc.problem
        return
    if mode is ExecKind.THREAD and sends_orders_flag(fn):
        yield (
            f"{here}.run_in",
            f"action `{step.action}` sends orders and would run in a thread; the broker is "
            "touched only from the event loop: mark it @cheap or make it async",
        )
        return
    if not step.preemptible:
        return
    if sends_orders_flag(fn):
        yield (
            f"{here}.preemptible",
            f"action `{step.action}` sends orders, and an order once sent is never cancelled "
            "half-way: set preemptible = false",
        )
    elif mode is ExecKind.THREAD:
        why = (
            'run_in = "thread"'
            if step.run_in == "thread"
            else 'run_in = "auto" on a plain function not marked @cheap'
        )
        yield (
            f"{here}.preemptible",
            f"action `{step.action}` runs in a thread ({why}); a thread cannot be interrupted, "
            "so a preempted thread step would keep running: set preemptible = false "
            "(or make the action async)",
        )


def _find_cycle(workflow: Workflow) -> list[str] | None:
    """A dependency cycle, closed and in "depends on" order (``[a, c, b, a]``: a depends on c,
    c on b, b on a), or ``None``. Self-dependencies and unknown names are reported elsewhere
    and skipped here."""
    sorter = graphlib.TopologicalSorter(
        {step.name: [d for d in step.depends_on if d != step.name] for step in workflow.steps}
    )
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        # graphlib walks from a step to the steps that depend on it: reversed, each step
        # depends on the next.
        return list(reversed(exc.args[1]))
    return None


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    # A callable object whose ``__call__`` is ``async def``.
    if inspect.isfunction(fn) or inspect.ismethod(fn) or isinstance(fn, type):
        return False
    return inspect.iscoroutinefunction(type(fn).__call__)
