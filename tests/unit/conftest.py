"""Unit-test fixtures shared by the whole folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit import gates


@pytest.fixture(autouse=True)
def _fresh_gates() -> Iterator[None]:
    """Every test starts with closed gates and an empty call log, and leaves none behind."""
    gates.reset()
    yield
    gates.reset()
