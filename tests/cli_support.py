"""Helpers shared by the command-line tests."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.distributions import make_distribution

# The console script installed next to the interpreter running the tests.
CLI = str(Path(sys.executable).with_name("mlflow-agent"))

REGISTRY_PLUGIN = """
from mlflow_agent_core import hookimpl

class ListedRegistry:
    def __init__(self, *, agent, options):
        self.options = options

    def supports(self, model):
        return False

    def register_model(self, model, name, *, run, input_example=None, tags=None,
                       **kwargs):
        raise NotImplementedError

    def promote(self, name, version, *, alias=None, stage=None):
        raise NotImplementedError

@hookimpl
def mlflow_agent_register_strategies(register):
    register("registry", "listed", ListedRegistry)

@hookimpl
def mlflow_agent_run_started(run):
    pass
"""


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo the CLI's logging setup after each in-process invocation."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


def install_plugin(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    *,
    dist: str,
    entry_point: str,
) -> tuple[Path, str]:
    """A one-module distribution on ``sys.path``; returns its folder and module."""
    module = f"mlflow_agent_clitest_{uuid.uuid4().hex[:8]}"
    root = make_distribution(
        tmp_path / f"site-{module}",
        dist,
        modules={f"{module}.py": source},
        entry_points={entry_point: module},
    )
    monkeypatch.syspath_prepend(str(root))
    return root, module


class TcpRelay:
    """Forwards every connection on a loopback ``port`` to ``target_port``.

    Lets records spooled for one address reach the shared server: the spool is
    keyed by tracking URI, and the shared server cannot move to that port.
    """

    def __init__(self, port: int, target_port: int) -> None:
        self.target_port = target_port
        self._server = socket.create_server(("127.0.0.1", port))
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pipe, args=(source, sink), daemon=True
                ).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def close(self) -> None:
        self._closed.set()
        self._server.close()
