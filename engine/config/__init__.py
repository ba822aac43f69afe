"""Configuration: typed schema, TOML loader with path-precise errors, and a text summary."""

from __future__ import annotations

from .compile import compile_workflow, compile_workflows
from .loader import (
    check_config,
    clear_action_cache,
    config_digest,
    effective_run_in,
    load_config,
    load_config_with_digest,
    loads_config,
    resolve_action,
)
from .schema import (
    AdminSettings,
    BrokerSettings,
    ClusterSettings,
    Config,
    EngineSettings,
    IntakeSettings,
    MetricsSettings,
    ReplaySettings,
    Retry,
    RiskSettings,
    Route,
    SimSettings,
    SourceSettings,
    Step,
    StorageSettings,
    StrategiesSettings,
    SymbolSeed,
    Workflow,
    topological_order,
)
from .strategy_paths import use_strategy_paths
from .summary import describe_route, summarize

__all__ = [
    "AdminSettings",
    "BrokerSettings",
    "ClusterSettings",
    "Config",
    "EngineSettings",
    "IntakeSettings",
    "MetricsSettings",
    "ReplaySettings",
    "Retry",
    "RiskSettings",
    "Route",
    "SimSettings",
    "SourceSettings",
    "Step",
    "StorageSettings",
    "StrategiesSettings",
    "SymbolSeed",
    "Workflow",
    "check_config",
    "clear_action_cache",
    "compile_workflow",
    "compile_workflows",
    "config_digest",
    "describe_route",
    "effective_run_in",
    "load_config",
    "load_config_with_digest",
    "loads_config",
    "resolve_action",
    "summarize",
    "topological_order",
    "use_strategy_paths",
]
