"""mlflow-agent plugin: the ``sklearn`` registry backend for scikit-learn estimators.

Installed, it registers itself through the ``mlflow_agent`` entry-point group;
select it with ``registry: {backend: sklearn}`` in ``agent.yaml``, or let
``registry: {backend: auto}`` pick it for estimators. Importing this package does
not import scikit-learn.
"""

from __future__ import annotations

from mlflow_agent_core import hookimpl
from mlflow_agent_core.hookspecs import Register

from .registry import SklearnOptions, SklearnRegistry

__all__ = ["SklearnOptions", "SklearnRegistry", "mlflow_agent_register_strategies"]


@hookimpl
def mlflow_agent_register_strategies(register: Register) -> None:
    register("registry", "sklearn", SklearnRegistry)
