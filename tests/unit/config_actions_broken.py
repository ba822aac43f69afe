"""An action module whose own import fails, as a module with a missing dependency would."""

from __future__ import annotations

import tickflow_config_test_missing_dependency  # type: ignore[import-not-found]  # noqa: F401


async def step(ctx: object) -> None:
    return None
