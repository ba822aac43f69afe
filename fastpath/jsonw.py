"""Chooses the JSON writer of the storage records: compiled unless missing or disabled (see
fastpath.heap)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._choose import choose

__all__ = ["JSONW_IMPLEMENTATION", "JsonWriter"]

_impl, JSONW_IMPLEMENTATION = choose("_jsonw", "_jsonw_py")

if TYPE_CHECKING:  # the twin's types; the same names at run time, from the chosen module
    from ._jsonw_py import JsonWriter
else:
    JsonWriter = _impl.JsonWriter
