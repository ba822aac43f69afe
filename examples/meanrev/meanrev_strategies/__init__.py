"""An example strategy package kept beside its config (examples/meanrev/tickflow.toml).

The config's ``[strategies] paths = ["."]`` puts the config's folder on the import path, so
the workflow names its actions ``meanrev_strategies.steps:snapshot`` and the daemon finds them
from any working directory. It imports nothing of tickflow but ``engine.core.strategy``.
"""
