"""Test helpers for the agent and its plugins: a real ``mlflow server`` on loopback.

Used by the pytest plugin's ``mlflow_agent_server`` fixture, by this project's own
tests and by the benchmarks. Importing this module is cheap; the server runs in a
child process started from the current interpreter.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["STARTUP_TIMEOUT", "MlflowServer", "free_port", "quiet_mlflow_env"]

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT = 90.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def quiet_mlflow_env(**extra: str) -> dict[str, str]:
    """The environment for MLflow processes: no telemetry, short HTTP retries."""
    env = dict(os.environ)
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="10",
    )
    env.update(extra)
    return env


class MlflowServer:
    """An ``mlflow server`` process with a sqlite store under ``root``.

    ``stop()`` kills the process; ``start()`` brings it back on the same port and
    store, which is how tests simulate an outage.
    """

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store_uri(self) -> str:
        """The server's own backend store, for checking what reached it."""
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def start(self) -> MlflowServer:
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--backend-store-uri", self.store_uri,
            "--artifacts-destination", str(self.root / "artifacts"),
            "--workers", "2",
        ]
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=quiet_mlflow_env(),
            start_new_session=True,  # so stop() can kill the workers with it
        )
        log.close()
        self._wait_until_healthy()
        logger.info("mlflow server up at %s (store under %s)", self.uri, self.root)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None
        self._wait_until_port_free()

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_until_healthy(self) -> None:
        # requests comes with MLflow; imported here to keep this module cheap.
        import requests

        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited; see {self.root}/server.log")
            try:
                if requests.get(f"{self.uri}/health", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {STARTUP_TIMEOUT} s")

    def _wait_until_port_free(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.1)
