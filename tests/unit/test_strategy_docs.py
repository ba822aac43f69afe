"""The Python examples of docs/strategies.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "strategies.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_guide_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_each_example_runs(index: int) -> None:
    namespace: dict[str, object] = {"__name__": f"strategies_doc_{index}"}
    exec(compile(BLOCKS[index], f"{DOC}:python block {index}", "exec"), namespace)
