"""mlflow-agent plugin: the ``pytorch`` registry backend for ``torch.nn.Module``.

Installed, it registers itself through the ``mlflow_agent`` entry-point group;
select it with ``registry: {backend: pytorch}`` in ``agent.yaml`` (the default).
Importing this package does not import torch.
"""

from __future__ import annotations

from mlflow_agent_core import hookimpl
from mlflow_agent_core.hookspecs import Register

from .registry import PytorchOptions, PytorchRegistry

__all__ = ["PytorchOptions", "PytorchRegistry", "mlflow_agent_register_strategies"]


@hookimpl
def mlflow_agent_register_strategies(register: Register) -> None:
    register("registry", "pytorch", PytorchRegistry)
