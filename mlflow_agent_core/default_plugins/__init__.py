"""The built-in backends, registered through the same hooks as any plugin.

Each module listed in :data:`DEFAULT_PLUGINS` is a pluggy plugin implementing
``mlflow_agent_register_strategies``. They are imported when an agent is built, not
when the package is imported.
"""

from __future__ import annotations

DEFAULT_PLUGINS: tuple[str, ...] = (
    "mlflow_agent_core.default_plugins.configuration",
    "mlflow_agent_core.default_plugins.tracking",
    "mlflow_agent_core.default_plugins.registry",
    "mlflow_agent_core.default_plugins.client",
)
