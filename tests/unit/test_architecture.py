"""The layer contracts of docs/architecture.md stay complete as modules are added."""

from __future__ import annotations

import tomllib
from pathlib import Path

import engine

ROOT = Path(engine.__file__).parent.parent


def test_strategies_contract_forbids_every_core_module_but_the_api() -> None:
    """A forbidden contract names modules, so a new core module would be importable by
    strategies unless it is listed: every one but the strategy API must be."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(
        c for c in config["tool"]["importlinter"]["contracts"]
        if c["name"].startswith("Strategies import only the strategy API")
    )
    core = {
        f"engine.core.{p.stem}" for p in (ROOT / "engine" / "core").glob("*.py")
        if p.stem != "__init__"
    }
    assert core - set(contract["forbidden_modules"]) == {"engine.core.strategy"}
