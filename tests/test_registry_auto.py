"""registry: {backend: auto} and the bundled backends selected through agent.yaml."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from mlflow_agent_core import ConfigError, InvalidInputError, MLFlowAgent, hookimpl
from mlflow_agent_core.default_plugins.registry import (
    AutoRegistry,
    MlflowRegistry,
    SavedModel,
)

X = np.random.default_rng(1).normal(size=(40, 3))
Y = (X[:, 0] > 0).astype(int)

AUTO_LOGGER = "mlflow_agent_core.default_plugins.registry"


def auto_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.name == AUTO_LOGGER and r.getMessage().startswith("registry auto:")
    ]


def test_auto_picks_the_backend_that_supports_each_model(
    agent_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    agent = agent_factory(registry={"backend": "auto"})
    assert isinstance(agent.registry, AutoRegistry)

    with agent.start_run(run_name="both") as run:
        net = agent.register_model(
            torch.nn.Linear(3, 2), "net", input_example=torch.randn(2, 3)
        )
        first = auto_lines(caplog)
        tree = agent.register_model(LogisticRegression().fit(X, Y), "tree")

    assert net.tags["mlflow_agent.backend"] == "pytorch"
    assert net.tags["mlflow_agent.serialization_format"] == "pt2"
    assert tree.tags["mlflow_agent.backend"] == "sklearn"
    assert tree.tags["mlflow_agent.serialization_format"] == "skops"
    assert net.run_id == tree.run_id == run.run_id
    assert len(first) == 1 and "'pytorch' backend" in first[0]
    lines = auto_lines(caplog)
    assert len(lines) == 2 and "'sklearn' backend" in lines[1]


def test_auto_refuses_what_no_backend_supports_and_lists_them(
    agent_factory: Any,
) -> None:
    agent = agent_factory(registry={"backend": "auto"})

    with pytest.raises(InvalidInputError) as caught:
        agent.register_model({"weights": [1.0, 2.0]}, "dict-model")

    assert "builtins.dict" in str(caught.value)
    assert "pytorch, sklearn" in str(caught.value)
    client = MlflowClient(agent.configuration.tracking_uri)
    assert client.search_registered_models() == []


def test_auto_backends_option_restricts_and_orders(agent_factory: Any) -> None:
    agent = agent_factory(registry={"backend": "auto", "backends": ["sklearn"]})

    with pytest.raises(InvalidInputError, match="Installed registry backends: sklearn"):
        agent.register_model(torch.nn.Linear(3, 2), "net")


def test_auto_backends_option_names_installed_backends_only(
    agent_factory: Any,
) -> None:
    with pytest.raises(ConfigError, match="'onnx' not installed.*pytorch, sklearn"):
        agent_factory(registry={"backend": "auto", "backends": ["onnx"]})


def test_auto_passes_call_options_to_the_chosen_backend(agent_factory: Any) -> None:
    agent = agent_factory(registry={"backend": "auto"})

    version = agent.register_model(torch.nn.Linear(3, 2), "net", format="pickle")

    assert version.tags["mlflow_agent.serialization_format"] == "pickle"


def test_auto_promotes_with_stage_aliases(agent_factory: Any) -> None:
    agent = agent_factory(registry={"backend": "auto"})
    version = agent.register_model(LogisticRegression().fit(X, Y), "tree")

    promoted = agent.promote("tree", version.version, stage="Staging")

    assert promoted.current_stage == "Staging"
    assert promoted.aliases == ["staging"]


class LookupModel(mlflow.pyfunc.PythonModel):
    """A dict served as a model: predict maps each input to its value."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    def predict(self, context: Any, model_input: list[str]) -> list[float]:
        return [self.table[key] for key in model_input]


class LookupRegistry(MlflowRegistry):
    """A third-party backend written against the documented extension points."""

    backend_name = "lookup"

    def supports(self, model: object) -> bool:
        return isinstance(model, dict)

    def _save_model(
        self, model: Any, path: str, *, options: Any, input_example: Any
    ) -> SavedModel:
        mlflow.pyfunc.save_model(
            path,
            python_model=LookupModel(model),
            **self.requirement_kwargs(options, ["cloudpickle"]),
        )
        return SavedModel("cloudpickle")


class LookupPlugin:
    @hookimpl
    def mlflow_agent_register_strategies(self, register: Any) -> None:
        register("registry", "lookup", LookupRegistry)


def test_a_plugin_subclassing_mlflow_registry_joins_auto(
    agent_config: dict[str, Any],
) -> None:
    config = {**agent_config, "registry": {"backend": "auto"}}
    MLFlowAgent.reset()
    try:
        agent = MLFlowAgent(config=config, plugins=[LookupPlugin()])
        version = agent.register_model({"a": 1.0, "b": 2.0}, "lookup-table")

        assert version.tags["mlflow_agent.backend"] == "lookup"
        loaded = mlflow.pyfunc.load_model(f"models:/lookup-table/{version.version}")
        assert loaded.predict(["b", "a"]) == [2.0, 1.0]
    finally:
        MLFlowAgent.reset()


def test_the_sklearn_backend_is_selected_and_configured_by_agent_yaml(
    tmp_path: Path, tracking_uri: str
) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(
        "configuration:\n"
        f"  tracking_uri: {tracking_uri}\n"
        "  experiment: yaml\n"
        "registry:\n"
        "  backend: sklearn\n"
        "  format: cloudpickle\n"
        "  extra_requirements: [pandas>=2]\n"
    )
    (tmp_path / "store").mkdir(exist_ok=True)
    MLFlowAgent.reset()
    try:
        agent = MLFlowAgent.from_yaml(config)
        model = LogisticRegression().fit(X, Y)
        with agent.start_run():
            version = agent.register_model(model, "churn", input_example=X[:2])

        assert type(agent.registry).__name__ == "SklearnRegistry"
        assert version.tags["mlflow_agent.serialization_format"] == "cloudpickle"
        loaded = agent.load_model(f"models:/churn/{version.version}", allow_pickle=True)
        assert (loaded.predict(X) == model.predict(X)).all()
    finally:
        MLFlowAgent.reset()


def test_a_bad_registry_option_in_agent_yaml_points_at_the_line(
    tmp_path: Path, tracking_uri: str
) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(
        "configuration:\n"
        f"  tracking_uri: {tracking_uri}\n"
        "registry:\n"
        "  backend: pytorch\n"
        "  format: onnx\n"
    )
    MLFlowAgent.reset()
    try:
        with pytest.raises(ConfigError, match=r"agent.yaml:5:\d+: registry.format"):
            MLFlowAgent.from_yaml(config)
    finally:
        MLFlowAgent.reset()
