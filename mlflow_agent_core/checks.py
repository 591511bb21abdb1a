"""Checking a configuration without starting anything.

:func:`check_config` loads the plugins a configuration allows, resolves the
backend of every concern and has each backend validate its options, all without
building strategies, so nothing contacts a server, starts a thread or writes a
file. ``mlflow-agent config check`` and ``mlflow-agent doctor`` are built on it.

A strategy factory takes part in one of two ways:

* ``check_options(options)``: a callable attribute (a classmethod on a class
  factory) that validates the section the way the factory would, raises
  :class:`ConfigError` for a bad value, and may return what it resolved. One
  that accepts a keyword argument ``installed`` receives the names of every
  backend registered for its concern (``registry: auto`` checks its
  ``backends`` list against them);
* ``options_class``: the dataclass the factory parses its options with; the check
  is ``options.parse(options_class)``.

Factories offering neither are reported as not checked.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import AgentConfig, Options
from .errors import AgentError, ConfigError, PluginError
from .hookspecs import CONCERNS
from .plugins import PluginFilter, PluginHost, Registration

__all__ = ["BackendCheck", "ConfigReport", "check_config"]

logger = logging.getLogger(__name__)

CHECK_METHOD = "check_options"
INSTALLED_KEYWORD = "installed"
SCHEMA_ATTRIBUTE = "options_class"


@dataclass
class BackendCheck:
    """What checking one concern's backend found."""

    concern: str
    backend: str
    registration: Registration | None = None
    checked: bool = False
    resolved: Any = None
    error: AgentError | None = None


@dataclass
class ConfigReport:
    """Every problem found in a configuration, and what could be resolved.

    ``host`` is None when the plugins could not be loaded; ``errors`` then holds
    that :class:`PluginError`.
    """

    config: AgentConfig
    host: PluginHost | None = None
    backends: dict[str, BackendCheck] = field(default_factory=dict)
    errors: list[AgentError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def unchecked(self) -> list[BackendCheck]:
        """Backends found but unable to check their options without starting."""
        return [
            check for check in self.backends.values()
            if check.error is None and not check.checked
        ]


def check_config(
    config: AgentConfig, *, plugins: Iterable[object] = ()
) -> ConfigReport:
    """Check ``config`` as far as possible without building any strategy.

    Every concern is checked even when an earlier one failed, so one run reports
    every problem. ``plugins`` are inline plugin objects, as for the agent.
    """
    report = ConfigReport(config)
    try:
        report.host = PluginHost(
            plugin_filter=PluginFilter.from_sources(config.allow, config.block),
            extra_plugins=plugins,
        )
    except PluginError as exc:
        report.errors.append(exc)
        return report

    _check_inputs(report)
    for concern in CONCERNS:
        check = _check_backend(report.host, config, concern)
        report.backends[concern] = check
        if check.error is not None:
            report.errors.append(check.error)
    return report


def _check_inputs(report: ConfigReport) -> None:
    # The validators are loaded on demand: they are only needed when checking.
    from .validation import InputPolicy

    try:
        report.config.options("inputs").parse(InputPolicy)
    except ConfigError as exc:
        report.errors.append(exc)


def _check_backend(host: PluginHost, config: AgentConfig, concern: str) -> BackendCheck:
    backend = config.backend(concern)
    check = BackendCheck(concern, backend)
    try:
        check.registration = host.resolve(
            concern, backend, config.position((concern, "backend"))
        )
    except ConfigError as exc:
        check.error = exc
        return check

    validate = _validator(check.registration.factory, host.strategies(concern))
    if validate is None:
        logger.info(
            "The %s backend %r of %s cannot check its options without starting",
            concern, backend, check.registration.plugin.label,
        )
        return check

    try:
        check.resolved = validate(config.options(concern))
        check.checked = True
    except AgentError as exc:
        check.error = exc
    except Exception as exc:
        check.error = PluginError(
            f"the {concern} backend {backend!r} of "
            f"{check.registration.plugin.label} failed while checking its options: "
            f"{type(exc).__name__}: {exc}. Report this to the plugin's authors"
        )
        check.error.__cause__ = exc
    return check


def _validator(
    factory: object, registered: Mapping[str, object]
) -> Callable[[Options], Any] | None:
    check = getattr(factory, CHECK_METHOD, None)
    if callable(check):
        if _accepts_keyword(check, INSTALLED_KEYWORD):
            installed = sorted(registered)
            return lambda options: check(options, **{INSTALLED_KEYWORD: installed})
        return check  # type: ignore[no-any-return]
    schema = getattr(factory, SCHEMA_ATTRIBUTE, None)
    if isinstance(schema, type) and dataclasses.is_dataclass(schema):
        return lambda options: options.parse(schema)
    return None


def _accepts_keyword(function: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    parameter = parameters.get(name)
    return parameter is not None and parameter.kind in (
        inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD
    )
