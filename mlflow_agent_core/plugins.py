"""Finding plugins, loading them loudly, and remembering who registered what.

Each agent owns one :class:`PluginHost`: a pluggy manager holding the built-in
plugins, the installed ones (entry-point group ``mlflow_agent``) that the allow and
block lists let through, and any plugin objects handed to the agent directly.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .config import DEFAULTS_SOURCE
from .errors import ConfigError, PluginError
from .hookspecs import CONCERNS, PROJECT, StrategyFactory
from .logs import StderrHandler

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from .agent import MLFlowAgent
    from .contracts import Run

logger = logging.getLogger(__name__)
trace_logger = logging.getLogger("mlflow_agent_core.trace")

ENTRY_POINT_GROUP = PROJECT
BUILTIN = "mlflow-agent-core (built-in)"
TRACE_ENV = "MLFLOW_AGENT_TRACE"
ALLOW_ENV = "MLFLOW_AGENT_PLUGINS_ALLOW"
BLOCK_ENV = "MLFLOW_AGENT_PLUGINS_BLOCK"


@dataclass(frozen=True)
class PluginInfo:
    """One plugin known to the agent, for listings and error messages."""

    name: str
    distribution: str
    version: str | None = None
    entry_point: str | None = None
    hooks: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        if self.distribution == BUILTIN:
            return f"{self.name} ({BUILTIN})"
        version = f" {self.version}" if self.version else ""
        return f"{self.name} (distribution {self.distribution}{version})"


@dataclass(frozen=True)
class Registration:
    """A strategy factory and the plugin that registered it."""

    concern: str
    name: str
    factory: StrategyFactory
    plugin: PluginInfo


@dataclass
class PluginFilter:
    """Allow and block lists; names match entry points or distributions."""

    allow: frozenset[str] | None = None
    block: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_sources(
        cls, allow: Sequence[str] | None, block: Sequence[str]
    ) -> PluginFilter:
        """Combine agent.yaml's lists with the environment's (both apply)."""
        env_allow = _env_list(ALLOW_ENV)
        merged_allow: set[str] | None = None
        if allow is not None or env_allow is not None:
            merged_allow = set(allow or ()) | set(env_allow or ())
        env_block = _env_list(BLOCK_ENV) or []
        return cls(
            allow=None if merged_allow is None else frozenset(merged_allow),
            block=frozenset(block) | frozenset(env_block),
        )

    def admits(self, *names: str) -> bool:
        if self.block.intersection(names):
            return False
        return self.allow is None or bool(self.allow.intersection(names))


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [item.strip() for item in raw.split(",") if item.strip()]


class PluginHost:
    """The plugin manager of one agent, and the typed facade over its hooks."""

    def __init__(
        self,
        *,
        plugin_filter: PluginFilter | None = None,
        extra_plugins: Iterable[object] = (),
    ) -> None:
        self.manager = pluggy.PluginManager(PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.filter = plugin_filter or PluginFilter()
        self._info: dict[str, PluginInfo] = {}
        self._registrations: dict[tuple[str, str], Registration] = {}
        self.skipped: list[PluginInfo] = []
        self._tracing = os.environ.get(TRACE_ENV, "").strip() not in ("", "0")
        if self._tracing:
            self._enable_tracing()

        self._load_builtins()
        self._load_entry_points()
        for plugin in extra_plugins:
            self._register(plugin, PluginInfo(_object_name(plugin), "<inline>"))
        self._check_unknown_hooks()
        self._collect_strategies()

    # Loading

    def _load_builtins(self) -> None:
        from .default_plugins import DEFAULT_PLUGINS

        for module_name in DEFAULT_PLUGINS:
            module = importlib.import_module(module_name)
            short = module_name.rsplit(".", 1)[-1]
            self._register(module, PluginInfo(f"builtin.{short}", BUILTIN))

    def _load_entry_points(self) -> None:
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = entry_point.dist
            info = PluginInfo(
                name=entry_point.name,
                distribution=dist.name if dist else "<unknown distribution>",
                version=dist.version if dist else None,
                entry_point=f"{entry_point.name} = {entry_point.value}",
            )
            if not self.filter.admits(info.name, info.distribution):
                logger.info("Plugin %s not loaded: allow/block lists", info.label)
                self.skipped.append(info)
                continue
            try:
                plugin = entry_point.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {info.label} failed to import from entry point "
                    f"'{info.entry_point}': {type(exc).__name__}: {exc}. Fix or "
                    f"upgrade the plugin, uninstall it, or block it with "
                    f"plugins: {{block: [{info.name}]}} in agent.yaml"
                ) from exc
            self._register(plugin, info)

    def _register(self, plugin: object, info: PluginInfo) -> None:
        if info.name in self._info:
            other = self._info[info.name]
            raise PluginError(
                f"two plugins are named {info.name!r}: {other.label} and "
                f"{info.label}. Uninstall one of them, or block one by distribution"
            )
        try:
            self.manager.register(plugin, name=info.name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {info.label} has an invalid hook implementation: {exc}. "
                "Compare its signature with mlflow_agent_core.hookspecs"
            ) from exc
        hooks = tuple(
            sorted(caller.name for caller in self.manager.get_hookcallers(plugin) or [])
        )
        self._info[info.name] = PluginInfo(
            info.name, info.distribution, info.version, info.entry_point, hooks
        )

    def _check_unknown_hooks(self) -> None:
        for name, caller in self.manager.hook.__dict__.items():
            if not name.startswith(f"{PROJECT}_") or caller.spec is not None:
                continue
            owners = ", ".join(
                self._info[impl.plugin_name].label for impl in caller.get_hookimpls()
            )
            known = ", ".join(
                n for n, c in self.manager.hook.__dict__.items()
                if getattr(c, "spec", None) is not None
            )
            raise PluginError(
                f"plugin {owners} implements {name!r}, which is not a hook of this "
                f"version of mlflow-agent-core. Known hooks: {known}"
            )

    # Strategies

    def _collect_strategies(self) -> None:
        caller = self.manager.hook.mlflow_agent_register_strategies
        for impl in reversed(caller.get_hookimpls()):
            plugin = self._info[impl.plugin_name]
            register = self._register_callback(plugin)
            kwargs = {"register": register}
            self._trace_call("mlflow_agent_register_strategies", plugin.name, kwargs)
            try:
                result = impl.function(*[kwargs[arg] for arg in impl.argnames])
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {plugin.label} failed in "
                    f"mlflow_agent_register_strategies: {type(exc).__name__}: {exc}"
                ) from exc
            self._trace("mlflow_agent_register_strategies returned %r", result)

    def _register_callback(self, plugin: PluginInfo) -> Callable[..., None]:
        def register(concern: str, name: str, factory: StrategyFactory) -> None:
            self._add_registration(plugin, concern, name, factory)

        return register

    def _add_registration(
        self, plugin: PluginInfo, concern: Any, name: Any, factory: Any
    ) -> None:
        where = f"plugin {plugin.label} called register({concern!r}, {name!r}, ...)"
        if concern not in CONCERNS:
            raise PluginError(
                f"{where}: concern must be one of {', '.join(CONCERNS)}"
            )
        if not isinstance(name, str) or not name.strip():
            raise PluginError(f"{where}: the backend name must be a non-empty string")
        if not callable(factory):
            raise PluginError(
                f"{where}: the factory must be callable as "
                f"factory(agent=..., options=...), got {type(factory).__name__}"
            )
        key = (concern, name)
        if key in self._registrations:
            first = self._registrations[key].plugin
            raise PluginError(
                f"both {first.label} and {plugin.label} register the {concern} "
                f"backend {name!r}. Uninstall or block one of them"
            )
        self._registrations[key] = Registration(concern, name, factory, plugin)
        self._trace(
            "%s registered %s backend %r: %r", plugin.name, concern, name, factory
        )

    def strategies(self, concern: str) -> Mapping[str, Registration]:
        """Every backend registered for ``concern``, by name."""
        return {
            name: reg for (kind, name), reg in self._registrations.items()
            if kind == concern
        }

    def resolve(
        self, concern: str, name: str, position: tuple[str, int | None, int | None]
    ) -> Registration:
        """The selected registration, or a ConfigError listing the others."""
        registration = self._registrations.get((concern, name))
        if registration is not None:
            return registration
        available = self.strategies(concern)
        listing = "; ".join(
            f"{option!r} from {reg.plugin.label}"
            for option, reg in sorted(available.items())
        ) or "none"
        hint = ""
        if any(name in (info.name, info.distribution) for info in self.skipped):
            hint = " A plugin of that name is installed but not allowed by the plugins"
            hint += " allow/block lists."
        elif self.filter.allow is not None:
            allowed = ", ".join(sorted(self.filter.allow)) or "nothing"
            hint = f" The plugins allow list ({allowed}) loads only those plugins."
        where: tuple[str | None, int | None, int | None] = position
        chosen = repr(name)
        if position[0] == DEFAULTS_SOURCE:
            # No file to point at: the backend is the built-in default.
            where = (None, None, None)
            chosen += " (the built-in default)"
        source, line, column = where
        raise ConfigError(
            f"{concern}.backend: no installed plugin provides {chosen}. "
            f"Available {concern} backends: {listing}.{hint} Install the plugin "
            f"that provides it, or pick one of the available backends",
            source=source,
            line=line,
            column=column,
        )

    def plugins(self) -> list[PluginInfo]:
        """Every loaded plugin, built-ins first."""
        return list(self._info.values())

    def registrations(self) -> list[Registration]:
        return list(self._registrations.values())

    # The fan-out hooks, typed

    def run_started(self, agent: MLFlowAgent, run: Run) -> None:
        self._fan_out("mlflow_agent_run_started", agent=agent, run=run)

    def run_finished(self, agent: MLFlowAgent, run: Run, status: str) -> None:
        self._fan_out("mlflow_agent_run_finished", agent=agent, run=run, status=status)

    def model_registered(self, agent: MLFlowAgent, model_version: ModelVersion) -> None:
        self._fan_out(
            "mlflow_agent_model_registered", agent=agent, model_version=model_version
        )

    def _fan_out(self, hook_name: str, **kwargs: Any) -> None:
        caller = getattr(self.manager.hook, hook_name)
        try:
            caller(**kwargs)
        except Exception as exc:
            raise PluginError(
                f"plugin {self._culprit(caller, exc)} failed in {hook_name}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _culprit(self, caller: Any, exc: BaseException) -> str:
        """The plugin whose hook implementation raised ``exc``, from its traceback."""
        owners = {
            impl.function.__code__: impl.plugin_name
            for impl in caller.get_hookimpls()
            if hasattr(impl.function, "__code__")
        }
        traceback = exc.__traceback__
        while traceback is not None:
            name = owners.get(traceback.tb_frame.f_code)
            if name is not None:
                return self._info[name].label
            traceback = traceback.tb_next
        return "(unknown)"

    # Tracing

    def _enable_tracing(self) -> None:
        if not trace_logger.handlers:
            handler = StderrHandler()
            handler.setFormatter(logging.Formatter("mlflow-agent trace: %(message)s"))
            trace_logger.addHandler(handler)
            trace_logger.setLevel(logging.DEBUG)
            trace_logger.propagate = False

        def before(
            hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]
        ) -> None:
            names = ", ".join(impl.plugin_name for impl in impls)
            trace_logger.debug("call %s(%s) -> [%s]", hook_name, _args(kwargs), names)

        def after(outcome: Any, hook_name: str, impls: Any, kwargs: Any) -> None:
            exception = outcome.exception
            if exception is not None:
                trace_logger.debug("%s raised %r", hook_name, exception)
            else:
                trace_logger.debug("%s returned %r", hook_name, outcome.get_result())

        self.manager.add_hookcall_monitoring(before, after)

    def _trace_call(self, hook: str, plugin: str, kwargs: Mapping[str, Any]) -> None:
        self._trace("call %s(%s) -> [%s]", hook, _args(kwargs), plugin)

    def _trace(self, message: str, *args: Any) -> None:
        if self._tracing:
            trace_logger.debug(message, *args)


def _args(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in kwargs.items())


def _object_name(plugin: object) -> str:
    name = getattr(plugin, "__name__", None) or type(plugin).__name__
    return f"inline.{name}"
