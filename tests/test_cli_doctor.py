"""``mlflow-agent doctor`` against real servers, a closed port and sqlite stores."""

from __future__ import annotations

import http.server
import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
from click.testing import CliRunner

from mlflow_agent_core.cli import main
from mlflow_agent_core.testing import free_port
from tests.cli_support import CLI, restore_logging  # noqa: F401 - autouse

TOKEN = "doctor-token-5e1d"


def write_config(tmp_path: Path, tracking_uri: str, **extra: str) -> Path:
    lines = [
        "configuration:",
        f"  tracking_uri: {tracking_uri}",
        *(f"  {key}: {value}" for key, value in extra.items()),
        "tracking:",
        f"  spool_dir: {tmp_path / 'spool'}",
    ]
    path = tmp_path / "agent.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def doctor(config_file: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        main, ["doctor", "--json", "--config", str(config_file), *extra]
    )
    return result.exit_code, json.loads(result.stdout)


def checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["check"]: check for check in report["checks"]}


def test_a_closed_port_fails_fast(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    config_file = write_config(tmp_path, uri)

    started = time.monotonic()
    code, report = doctor(config_file)
    elapsed = time.monotonic() - started

    assert code == 1
    assert elapsed < 5
    tracking = checks(report)["tracking"]
    assert tracking["status"] == "fail"
    assert tracking["detail"].startswith(f"ServerUnavailableError: {uri} could not")
    assert checks(report)["registry"]["status"] == "fail"
    assert checks(report)["config"]["status"] == "ok"


def test_a_closed_port_as_a_subprocess(tmp_path: Path) -> None:
    config_file = write_config(tmp_path, f"http://127.0.0.1:{free_port()}")

    result = subprocess.run(
        [CLI, "doctor", "--config", str(config_file)],
        capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 1
    assert "FAIL  tracking  ServerUnavailableError" in result.stdout
    assert "Traceback" not in result.stderr


def test_a_running_server_passes(tmp_path: Path, mlflow_server: Any) -> None:
    config_file = write_config(tmp_path, mlflow_server.uri)

    code, report = doctor(config_file)

    assert code == 0, report
    found = checks(report)
    assert found["tracking"]["facts"]["server_version"] == mlflow.__version__
    assert found["registry"]["status"] == "ok"
    assert "model registry ok" in found["registry"]["detail"]


def test_a_broken_config_fails_and_names_the_line(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.yaml"
    config_file.write_text("configuration:\n  experiment: [x]\n")

    code, report = doctor(config_file)

    assert code == 1
    assert checks(report)["config"]["detail"].startswith(f"{config_file}:2:")
    assert checks(report)["tracking"]["status"] == "fail"


def test_a_new_sqlite_store_is_fine(tmp_path: Path) -> None:
    store = tmp_path / "new" / "mlflow.db"
    config_file = write_config(tmp_path, f"sqlite:///{store}")

    code, report = doctor(config_file)

    assert code == 0, report
    assert "created at first use" in checks(report)["tracking"]["detail"]
    assert not store.exists()


def test_a_sqlite_file_that_is_not_an_mlflow_store_fails(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE inventory (item TEXT)")
    config_file = write_config(
        tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}",
        registry_uri=f"sqlite:///{other}",
    )

    code, report = doctor(config_file)

    assert code == 1
    assert checks(report)["registry"]["status"] == "fail"
    assert "not an MLflow store" in checks(report)["registry"]["detail"]


# Credentials: a real MLflow server behind a token-checking reverse proxy, the
# way servers are commonly deployed.


class _AuthProxy(http.server.BaseHTTPRequestHandler):
    upstream = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._reply(401, b'{"error_code": "UNAUTHENTICATED"}')
            return
        answer = requests.get(self.upstream + self.path, timeout=10)
        self._reply(answer.status_code, answer.content)

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def auth_proxy(mlflow_server: Any) -> Iterator[str]:
    handler = type("Proxy", (_AuthProxy,), {"upstream": mlflow_server.uri})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_refused_credentials_are_an_auth_error(
    tmp_path: Path, auth_proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCTOR_TOKEN", "wrong-token-value")
    config_file = write_config(tmp_path, auth_proxy, token="${DOCTOR_TOKEN}")

    code, report = doctor(config_file)

    assert code == 1
    tracking = checks(report)["tracking"]
    assert tracking["detail"].startswith("AuthError: ")
    assert "HTTP 401" in tracking["detail"]
    assert "wrong-token-value" not in json.dumps(report)


def test_accepted_credentials_pass(
    tmp_path: Path, auth_proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCTOR_TOKEN", TOKEN)
    config_file = write_config(tmp_path, auth_proxy, token="${DOCTOR_TOKEN}")

    code, report = doctor(config_file)

    assert code == 0, report
    assert checks(report)["tracking"]["facts"]["server_version"] == mlflow.__version__



def test_an_unreadable_config_is_still_a_json_report(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.yaml"
    config_file.write_text("configuration: [\n")

    code, report = doctor(config_file)

    assert code == 1
    assert report["ok"] is False
    assert checks(report)["config"]["detail"].startswith(f"{config_file}:")
