"""The main job and the original design's example, each run as a user runs them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.servers import MlflowServer, quiet_mlflow_env

MLFLOW_AGENT = Path(sys.executable).with_name("mlflow-agent")


def clean_env() -> dict[str, str]:
    """This process's environment without the URIs earlier tests pointed MLflow at.

    MLflow exports ``set_tracking_uri`` to the environment, and the quickstart
    honours ``MLFLOW_TRACKING_URI`` as a user's would.
    """
    env = quiet_mlflow_env()
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_AGENT_CONFIG"):
        env.pop(name, None)
    return env


def test_quickstart_trains_registers_promotes_and_loads_back(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(MLFLOW_AGENT), "quickstart"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 12
    store = tmp_path / "mlflow.db"
    assert f"mlflow ui --backend-store-uri sqlite:///{store}" in lines[-1]

    uri = f"sqlite:///{store}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    [run] = client.search_runs(
        [client.get_experiment_by_name("quickstart").experiment_id]
    )
    assert run.info.status == "FINISHED"
    assert run.data.params["model.hidden_units"] == "64"
    assert run.data.params["epochs"] == "12"
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert [point.step for point in losses] == list(range(len(losses)))
    assert len(losses) == 12 * 39  # 1221 training images in batches of 32
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 12

    version = client.get_model_version_by_alias("Pytorch_Model", "champion")
    assert version.current_stage == "Production"
    assert version.run_id == run.info.run_id
    accuracy = run.data.metrics["test_accuracy"]
    assert f"test accuracy {accuracy:.4f} from the registry, {accuracy:.4f}" in (
        result.stdout
    )


SEED_EXAMPLE = """
import mlflow
import mlflow_agent_core.client as mlflow_client

mlflow_client.MLFlowConfiguration.set_tracking_uri("{uri}")
client = mlflow_client.MLFlowClient()
client.get_model("Pytorch_Model", model_stage="Production")
model = mlflow.pytorch.load_model("models:/Pytorch_Model/Production")
"""

REGISTER_WITH_ORIGINAL_NAMES = """
import torch
import mlflow_agent_core.client as mlflow_client

mlflow_client.MLFlowConfiguration.set_tracking_uri("{uri}")
torch.manual_seed(0)
model = torch.nn.Linear(4, 2)
tracking = mlflow_client.MLFlowTracking()
with tracking.start_run(run_name="seed"):
    tracking.log_params({{"layers": 1}})
    version = mlflow_client.MLFlowModelRegistry().register_model(
        model, "Pytorch_Model", input_example=torch.ones(1, 4)
    )
mlflow_client.MLFlowModelRegistry().promote(
    "Pytorch_Model", version.version, stage="Production"
)
torch.save(model.state_dict(), "weights.pt")
"""

CHECK = """
import torch
weights = torch.load("weights.pt")
inputs = torch.rand(5, 4)
expected = inputs @ weights["weight"].T + weights["bias"]
assert torch.allclose(model(inputs), expected), "loaded model differs"
print("seed example ok", client.get_model("Pytorch_Model", model_stage="Production")
      .version)
"""


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A server of this test alone: the example names a fixed model."""
    server = MlflowServer(tmp_path / "server").start()
    yield server
    server.stop()


def run_script(source: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = cwd / "script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_original_designs_example_runs_against_a_loopback_server(
    tmp_path: Path, own_server: MlflowServer
) -> None:
    register = REGISTER_WITH_ORIGINAL_NAMES.format(uri=own_server.uri)
    registered = run_script(register, tmp_path)
    assert registered.returncode == 0, registered.stderr

    seed = run_script(SEED_EXAMPLE.format(uri=own_server.uri) + CHECK, tmp_path)

    assert seed.returncode == 0, seed.stderr
    assert seed.stdout.strip() == "seed example ok 1"
