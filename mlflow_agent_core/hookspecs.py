"""The hook contract: what a plugin can implement, and how results combine.

This module is the plugin author's reference. A plugin is any module or object with
functions named after the hooks below, marked with :data:`hookimpl`::

    from mlflow_agent_core import hookimpl

    @hookimpl
    def mlflow_agent_register_strategies(register):
        register("registry", "onnx", OnnxRegistry)

An implementation may accept any subset of a hook's arguments, in any order. Plugins
are found through the ``mlflow_agent`` entry-point group; the built-in strategies
register through the same hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from .agent import MLFlowAgent
    from .contracts import Run

PROJECT = "mlflow_agent"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

CONCERNS = ("configuration", "tracking", "registry", "client")


class StrategyFactory(Protocol):
    """Builds one strategy. Called as ``factory(agent=agent, options=options)``."""

    def __call__(self, *, agent: MLFlowAgent, options: Any) -> Any: ...


class Register(Protocol):
    """The callback handed to :func:`mlflow_agent_register_strategies`."""

    def __call__(self, concern: str, name: str, factory: StrategyFactory) -> None: ...


@hookspec
def mlflow_agent_register_strategies(register: Register) -> None:
    """Contribute strategies (backends) that ``agent.yaml`` can select.

    Call ``register(concern, name, factory)`` once per strategy. ``concern`` is one of
    ``configuration``, ``tracking``, ``registry`` or ``client``; ``name`` is what
    ``backend:`` names in that section of ``agent.yaml``. When the backend is
    selected, the agent calls ``factory(agent=agent, options=options)``, where
    ``options`` is an :class:`~mlflow_agent_core.config.Options` mapping holding the
    section without its ``backend`` key; call ``options.parse(SomeDataclass)`` to
    validate it with file, line and column in every error.

    Every plugin's implementation is called, once, when an agent is built. Two
    plugins registering the same concern and name is a :class:`PluginError`. The
    return value is ignored.
    """


@hookspec
def mlflow_agent_run_started(agent: MLFlowAgent, run: Run) -> None:
    """A run was started through the agent (``run.run_id`` is set).

    Called on the caller's thread after the run exists and its initial params and
    tags were accepted. Every implementation is called; return values are ignored.
    An exception raised here ends the run FAILED and reaches the caller of
    ``start_run`` as a :class:`PluginError` naming the plugin.
    """


@hookspec
def mlflow_agent_run_finished(agent: MLFlowAgent, run: Run, status: str) -> None:
    """A run was ended with ``status`` (``FINISHED``, ``FAILED`` or ``KILLED``).

    Called after the run's queued data was flushed and the run was ended. Every
    implementation is called; return values are ignored. An exception raised here
    reaches the caller as a :class:`PluginError` naming the plugin.
    """


@hookspec
def mlflow_agent_model_registered(
    agent: MLFlowAgent, model_version: ModelVersion
) -> None:
    """A model version was registered through the agent.

    ``model_version`` has at least ``.name`` and ``.version``. Every implementation
    is called after the registry backend returned; return values are ignored. An
    exception raised here reaches the caller as a :class:`PluginError` naming the
    plugin; the version stays registered.
    """
