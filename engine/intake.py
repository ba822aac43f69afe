"""Intake: one line of untrusted bytes in, one validated event (or a classified rejection) out.

Two decoding paths give one answer:

* the fast path decodes straight into the tagged union with a typed msgspec decoder (measured on
  a 2-vCPU dev VM: ~0.25 µs for a 110-byte tick, against ~1.0 µs for ``orjson.loads`` plus
  ``msgspec.convert`` into the right struct and ~3.5 µs for ``convert`` into the union);
* only when that fails does the slow path re-parse the line with orjson and walk it step by step,
  so every rejection gets exactly one reason from :data:`REJECT_REASONS` by structure, never by
  parsing library error messages.

Rejection is the common case under attack or a broken feed, so the slow path is kept bounded:
oversized lines are refused on their length before anything parses them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, NamedTuple

import msgspec
import orjson

from engine.core import ratelimit
from engine.core.errors import EventError
from engine.core.events import EVENT_KINDS, KIND_OF, MAX_PRIORITY, SYMBOL_RULE, DataReady, Event

__all__ = [
    "DECODE_REASONS",
    "DEFAULT_MAX_LINE_BYTES",
    "INTERNAL_EVENT_TYPES",
    "MAX_PRIORITY",
    "REJECT_REASONS",
    "EventDecoder",
    "IntakeStats",
    "RejectLog",
    "duplicate_key",
    "encode_event",
]

DEFAULT_MAX_LINE_BYTES: Final = 64 * 1024

_PRIORITY_RANGE: Final = f"priority above {MAX_PRIORITY} - at `$.priority`"

INTERNAL_EVENT_TYPES: Final = frozenset({"TASK_COMPLETED", "TASK_FAILED"})

DECODE_REASONS: Final[tuple[str, ...]] = (
    "empty",
    "oversized",
    "invalid_utf8",
    "malformed_json",
    "not_object",
    "unknown_type",
    "missing_field",
    "bad_field",
)
# Every reason an event is refused for: the decoder's, and the engine's own -- an event for a
# new symbol when the symbol table is full (engine.max_symbols), refused before it is journaled.
REJECT_REASONS: Final[tuple[str, ...]] = (*DECODE_REASONS, "symbol_limit")

_REQUIRED: Final[dict[str, frozenset[str]]] = {tag: k.required for tag, k in EVENT_KINDS.items()}

_FAST_DECODER: Final = msgspec.json.Decoder(Event)
_ENCODER: Final = msgspec.json.Encoder()

_log = logging.getLogger("tickflow.intake")


def encode_event(event: Event) -> bytes:
    """``event`` as one newline-terminated JSON line, the inverse of :meth:`EventDecoder.decode`."""
    return _ENCODER.encode(event) + b"\n"


def _terminator_len(line: bytes) -> int:
    if line.endswith(b"\r\n"):
        return 2
    # A lone trailing "\r" is what a line reader leaves of a "\r\n" after cutting at "\n":
    # it is terminator too, so CRLF and LF lines have the same limit.
    if line.endswith((b"\n", b"\r")):
        return 1
    return 0


class IntakeStats(NamedTuple):
    """A frozen snapshot of a decoder's counters; ``rejected`` has a key for every reason."""

    received: int
    accepted: int
    rejected: Mapping[str, int]

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class EventDecoder:
    """Decodes event lines and objects, counting what it accepts and why it rejects.

    ``max_line_bytes`` bounds a line without its ``\\n``/``\\r\\n`` terminator. ``default_type``
    is the ``type`` assumed when an object has none (replay files); live inputs leave it unset so
    a typeless object is a ``missing_field`` rejection. Unknown keys are ignored, so producers can
    add fields before every consumer knows them. A number too large for a float (``1e999``) is
    ``malformed_json``: JSON has no infinity, and a price or timestamp must be finite.
    """

    __slots__ = ("_accepted", "_default_type", "_max_line_bytes", "_rejected")

    def __init__(
        self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, *, default_type: str | None = None
    ) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be >= 1")
        if default_type is not None and default_type not in EVENT_KINDS:
            raise ValueError(
                f"default_type must be one of {sorted(EVENT_KINDS)}: {default_type!r}"
            )
        self._max_line_bytes = max_line_bytes
        self._default_type = default_type
        self._accepted = 0
        self._rejected = dict.fromkeys(REJECT_REASONS, 0)

    @property
    def max_line_bytes(self) -> int:
        return self._max_line_bytes

    def decode(self, line: bytes) -> Event:
        """Decode one line (terminator optional) or raise :class:`EventError`."""
        limit = self._max_line_bytes
        if len(line) > limit:
            size = len(line) - _terminator_len(line)
            if size > limit:
                message = f"line of {size} bytes exceeds the {limit}-byte limit"
                raise self.reject("oversized", message)
        try:
            event: Event = _FAST_DECODER.decode(line)
        except (msgspec.MsgspecError, ValueError, RecursionError):
            # Every failure, and a typeless object under default_type, is re-walked to classify it.
            # RecursionError: msgspec skips an ignored field recursively, so a deeply nested one
            # exhausts the stack; orjson's own depth limit turns that into malformed_json.
            event = self._decode_slow(line)
            slow = True
        else:
            slow = False
            # msgspec skips ignored fields without validating their UTF-8; the whole line must be.
            if not line.isascii():
                try:
                    bytes(line).decode("utf-8")
                except UnicodeDecodeError as exc:
                    message = f"invalid UTF-8 at byte {exc.start}"
                    raise self.reject("invalid_utf8", message) from None
            # The priority range is the annotations' (checked by the decode); what they cannot
            # express is the event kind's own rule.
            problem = KIND_OF[type(event)].problem(event)
            if problem is not None:
                raise self.reject("bad_field", problem)
        # Duplicate keys: both decoders keep the last value, so {"type":"TASK_COMPLETED",
        # "type":"DATA_READY"} would pass as a DATA_READY. Cheap gate first: JSON has a colon per
        # key (and others only inside strings), so a line with no more colons than the event
        # has fields it certainly carries cannot repeat a key; only other lines are re-parsed.
        # (The slow path's lines may lack `type`, which the count assumes: always checked.)
        if slow or line.count(b":") > _fields_present(event):
            duplicate = duplicate_key(line)
            if duplicate is not None:
                raise self.reject("malformed_json", _duplicate_message(duplicate))
        self._accepted += 1
        return event

    def decode_object(self, obj: object) -> Event:
        """Validate an already-parsed object (a CSV row, an admin request body) like a line."""
        try:
            event = self._from_object(obj)
        except EventError as exc:
            self._rejected[exc.reason] += 1
            raise
        self._accepted += 1
        return event

    def reject(self, reason: str, message: str) -> EventError:
        """Count a rejection found before decoding (e.g. by a line reader) and return its error."""
        if reason not in self._rejected:
            raise ValueError(f"unknown reject reason {reason!r}")
        self._rejected[reason] += 1
        return EventError(reason, message)

    def statistics(self) -> IntakeStats:
        rejected = dict(self._rejected)
        return IntakeStats(
            received=self._accepted + sum(rejected.values()),
            accepted=self._accepted,
            rejected=MappingProxyType(rejected),
        )

    def _decode_slow(self, line: bytes) -> Event:
        try:
            obj = self._parse(line)
            return self._from_object(obj)
        except EventError as exc:
            self._rejected[exc.reason] += 1
            raise

    @staticmethod
    def _parse(line: bytes) -> Any:
        if not line.strip():
            raise EventError("empty", "blank line")
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            # Classified by re-checking the bytes, not by orjson's wording: bad UTF-8 first, since
            # it also makes the JSON unparseable.
            try:
                bytes(line).decode("utf-8")
            except UnicodeDecodeError as uexc:
                raise EventError("invalid_utf8", f"invalid UTF-8 at byte {uexc.start}") from None
            raise EventError("malformed_json", str(exc)) from None

    def _from_object(self, obj: object) -> Event:
        if type(obj) is not dict:
            raise EventError("not_object", f"expected a JSON object, got {_json_kind(obj)}")
        kind = obj.get("type", self._default_type)
        if kind is None:
            raise EventError("missing_field", "object missing required field `type`")
        if not isinstance(kind, str):
            raise EventError("unknown_type", f"`type` must be a string, got {_json_kind(kind)}")
        event_kind = EVENT_KINDS.get(kind)
        if event_kind is None:
            if kind in INTERNAL_EVENT_TYPES:
                raise EventError("unknown_type", f"internal event type {kind!r}")
            raise EventError("unknown_type", f"unknown event type {_preview(kind)}")
        missing = _REQUIRED[kind].difference(obj)
        if missing:
            names = ", ".join(f"`{name}`" for name in sorted(missing))
            raise EventError("missing_field", f"object missing required field {names}")
        if "type" not in obj:
            obj = {**obj, "type": kind}
        try:
            event: Event = msgspec.convert(obj, event_kind.struct)
        except msgspec.ValidationError as exc:
            raise EventError("bad_field", _field_message(str(exc), obj)) from None
        problem = event_kind.problem(event)
        if problem is not None:
            raise EventError("bad_field", problem)
        return event


def _field_message(message: str, obj: dict[str, Any]) -> str:
    """msgspec's wording, made plain where it misleads: a regex for the symbol alphabet, and
    "got `float`" for an integer orjson could only parse as a float (above 2**64)."""
    if message.endswith("- at `$.symbol`") and "regex" in message:
        # ascii(): the rejected name is shown escaped, never raw (it may hold terminal controls).
        return (
            f"bad symbol {ascii(obj.get('symbol'))[:80]}: a symbol is {SYMBOL_RULE}"
            " - at `$.symbol`"
        )
    if message.endswith("`$.priority`"):
        value = obj.get("priority")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (
            value > MAX_PRIORITY
        ):
            return _PRIORITY_RANGE
    return message


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def duplicate_key(raw: bytes) -> str | None:
    """The first key that some object of the JSON document ``raw`` repeats, else None (also for
    what is not JSON: other checks reject that). orjson and msgspec keep the last value of a
    repeated key without a word; the standard library's hook sees every pair. Slow (a full
    parse in Python): only for lines the colon count could not clear, and admin bodies."""
    try:
        json.loads(raw, object_pairs_hook=_unique_pairs)
    except _DuplicateKey as exc:
        return exc.key
    except (ValueError, RecursionError):
        return None
    return None


def _duplicate_message(key: str) -> str:
    return f"duplicate key {ascii(key)[:80]}: an event's keys must be unique"


def _fields_present(event: Event) -> int:
    """How many keys ``event``'s line certainly had (``type`` and every non-default field)."""
    if type(event) is DataReady:  # the common line, counted exactly
        return (
            4 + (event.volume != 0.0) + (event.bid is not None) + (event.ask is not None)
            + (event.priority is not None)
        )
    return 1 + len(_REQUIRED[KIND_OF[type(event)].tag])  # a lower bound for any other kind


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _preview(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


class _Preview:
    """The start of a rejected line, formatted only when the line is logged (a flood's held-back
    lines cost nothing). repr() of a bounded prefix: the bytes are attacker-controlled and must
    not forge log lines."""

    __slots__ = ("line",)

    def __init__(self, line: bytes | None) -> None:
        self.line = line

    def __str__(self) -> str:
        return "" if self.line is None else f" {bytes(self.line[:120])!r}"


class RejectLog:
    """Logs rejections to ``tickflow.intake``, at most ``limit`` lines per ``interval`` per reason.

    A flood of one bad kind must neither fill the journal nor hide a different problem, hence a
    budget per reason (the project's one rate limiter,
    :class:`~engine.core.ratelimit.RateLimitedLog`).
    What is held back is counted and reported in one summary line when the reason's next window
    opens (or on :meth:`flush`).
    """

    __slots__ = ("_limited",)

    def __init__(
        self,
        limit: int = 10,
        interval: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self._limited = ratelimit.RateLimitedLog(
            logger if logger is not None else _log, limit, interval,
            clock=clock, key_field="reason", what="rejections",
        )

    def log(self, error: EventError, *, source: str = "", line: bytes | None = None) -> bool:
        """Log ``error`` unless its reason is over budget; True when a line was written."""
        where = f" from {source}" if source else ""
        return self._limited.log(
            logging.WARNING, error.reason, "rejected event%s: %s%s", where, error,
            _Preview(line), extra={"source": source},
        )

    def flush(self) -> None:
        """Write the pending suppression summaries now (e.g. when a source finishes)."""
        self._limited.flush()

    def suppressed(self) -> Mapping[str, int]:
        """Lines held back so far, by reason (cumulative)."""
        return self._limited.suppressed()
