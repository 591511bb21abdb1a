"""Log output for the command line and for hook tracing.

Library code only logs; the ``mlflow-agent`` command installs the one handler
here, and ``MLFLOW_AGENT_TRACE=1`` adds one to the trace logger.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

__all__ = ["CLI_HANDLER_NAME", "StderrHandler", "configure_cli_logging", "cli_level"]

CLI_HANDLER_NAME = "mlflow-agent-cli"
CLI_FORMAT = "%(levelname)s %(name)s: %(message)s"


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted.

    A plain StreamHandler keeps the stream it was created with, which breaks once
    a test runner or a redirect swaps ``sys.stderr`` and closes the old one.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        # Always the current sys.stderr; nothing to remember.
        pass


def cli_level(verbose: int, quiet: bool) -> int:
    """The level for ``-q`` (errors only), nothing (warnings), ``-v``, ``-vv``."""
    if quiet:
        return logging.ERROR
    return {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)


def configure_cli_logging(level: int) -> None:
    """Send log records at ``level`` and above to stderr, once per process.

    Calling it again replaces the handler it installed before, so repeated
    in-process invocations (tests) do not print every line twice.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == CLI_HANDLER_NAME:
            root.removeHandler(handler)

    handler = StderrHandler()
    handler.set_name(CLI_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(CLI_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    _quiet_mlflow(level)


def _quiet_mlflow(level: int) -> None:
    # MLflow gives its logger its own handler at INFO when it is imported and
    # reads the level from the environment then; set whichever applies.
    name = "DEBUG" if level <= logging.DEBUG else logging.getLevelName(
        max(level, logging.WARNING)
    )
    if "mlflow" in sys.modules:
        logging.getLogger("mlflow").setLevel(name)
    else:
        os.environ["MLFLOW_LOGGING_LEVEL"] = name
