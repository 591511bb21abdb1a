"""``mlflow-agent models``: the registry from the terminal, on a sqlite store."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlflow_agent_core import MLFlowAgent
from mlflow_agent_core.cli import main
from tests.cli_support import CLI, restore_logging  # noqa: F401 - autouse

MODEL = "Iris_Classifier"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An agent.yaml whose store holds MODEL: version 1 (skops), 2 (pickle)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("models-cli")
    config_file = root / "agent.yaml"
    config_file.write_text(
        "configuration:\n"
        f"  tracking_uri: sqlite:///{root / 'mlflow.db'}\n"
        "  experiment: models-cli\n"
        "tracking:\n"
        f"  spool_dir: {root / 'spool'}\n"
        "registry:\n"
        "  backend: sklearn\n"
    )
    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300).fit(features, labels)

    MLFlowAgent.reset()
    # The store's artifacts go to ./mlruns: keep them in this module's folder.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        agent = MLFlowAgent.from_yaml(config_file)
        try:
            with agent.start_run(run_name="iris"):
                agent.register_model(model, MODEL, input_example=features[:2])
                agent.register_model(model, MODEL, format="pickle")
        finally:
            MLFlowAgent.reset()
    yield config_file


def run(config_file: Path, *arguments: str) -> Any:
    MLFlowAgent.reset()
    result = CliRunner().invoke(main, [*arguments, "--config", str(config_file)])
    MLFlowAgent.reset()
    return result


def test_list_json(registry: Path) -> None:
    result = run(registry, "models", "list", "--json")

    assert result.exit_code == 0, result.output
    (model,) = json.loads(result.stdout)
    assert model["name"] == MODEL
    assert max(int(v["version"]) for v in model["latest_versions"]) == 2


def test_show_json_lists_every_version(registry: Path) -> None:
    result = run(registry, "models", "show", MODEL, "--json")

    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["name"] == MODEL
    versions = {v["version"]: v for v in shown["versions"]}
    assert set(versions) == {"1", "2"}
    assert versions["1"]["status"] == "READY"
    assert versions["1"]["run_id"]


def test_show_of_a_missing_model_fails_with_one_line(registry: Path) -> None:
    result = run(registry, "models", "show", "No_Such_Model")

    assert result.exit_code == 1
    assert "No_Such_Model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_promote_then_show_and_load_by_alias(registry: Path) -> None:
    promoted = run(
        registry, "models", "promote", MODEL, "1", "--alias", "champion",
        "--stage", "production",
    )
    shown = run(registry, "models", "show", MODEL, "--json")
    listed = run(registry, "models", "list")
    loaded = run(registry, "models", "load-check", f"models:/{MODEL}@champion")

    assert promoted.exit_code == 0, promoted.output
    assert promoted.stdout.strip() == (
        f"{MODEL} version 1: alias 'champion' and stage 'Production'"
    )
    version_1 = next(v for v in json.loads(shown.stdout)["versions"]
                     if v["version"] == "1")
    assert "champion" in version_1["aliases"]
    assert version_1["stage"] == "Production"
    assert "@champion=1" in listed.stdout
    assert loaded.exit_code == 0, loaded.output
    assert "LogisticRegression" in loaded.stdout


def test_load_check_refuses_pickle_unless_allowed(registry: Path) -> None:
    refused = run(registry, "models", "load-check", f"models:/{MODEL}/2")
    allowed = run(
        registry, "models", "load-check", f"models:/{MODEL}/2", "--allow-pickle"
    )

    assert refused.exit_code == 1
    assert "pickle" in refused.stderr.lower()
    assert "Traceback" not in refused.output
    assert allowed.exit_code == 0, allowed.output
    assert "sklearn.linear_model" in allowed.stdout


def test_load_check_of_a_bad_uri_is_one_clean_line(registry: Path) -> None:
    result = run(registry, "models", "load-check", "runs:/abc/model")

    assert result.exit_code == 1
    assert "models:/" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_models_list_as_a_subprocess(registry: Path) -> None:
    result = subprocess.run(
        [CLI, "-q", "models", "list", "--json", "--config", str(registry)],
        capture_output=True, text=True, timeout=180,
    )

    assert result.returncode == 0, result.stderr
    assert [model["name"] for model in json.loads(result.stdout)] == [MODEL]
