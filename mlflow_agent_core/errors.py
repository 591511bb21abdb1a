"""Every error the agent raises on purpose derives from :class:`AgentError`.

Messages follow one rule: name the key or value, say what is wrong, and say how to
fix it. Callers that want to handle the agent's errors catch ``AgentError``; anything
else escaping the agent is a bug.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "AuthError",
    "ConfigError",
    "InvalidInputError",
    "ModelNotFoundError",
    "ParamConflictError",
    "PluginError",
    "RunStateError",
    "ServerUnavailableError",
    "UnsafeModelError",
]


class AgentError(Exception):
    """Base class of every error the agent raises deliberately."""


class ConfigError(AgentError):
    """The configuration (``agent.yaml`` or a config dict) is wrong.

    ``source`` is the file (or ``"<dict>"``), ``line`` and ``column`` are 1-based
    positions when known; ``str()`` of the error starts with ``file:line:column``.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        super().__init__(self._render())

    def _render(self) -> str:
        if self.source is None:
            return self.message
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}"


class PluginError(AgentError):
    """A plugin failed to load, or registered something the agent cannot use."""


class InvalidInputError(AgentError):
    """A value passed to the agent cannot be stored as the caller meant it."""


class ParamConflictError(InvalidInputError):
    """A param was logged again on the same run with a different value."""


class ServerUnavailableError(AgentError):
    """The tracking or registry server could not be reached in time."""


class AuthError(AgentError):
    """The server refused the configured credentials."""


class ModelNotFoundError(AgentError):
    """The requested model, version, alias or stage does not exist."""


class RunStateError(AgentError):
    """The call does not fit the run's state: no active run, or one already open."""


class UnsafeModelError(AgentError):
    """Loading the model would run code stored in the registry (pickle and the like).

    Raised before the model's files are deserialized; the message says how to allow
    it for trusted registries.
    """
