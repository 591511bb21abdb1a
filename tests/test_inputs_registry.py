"""Issue 4, kind 6: registry input, checked against a real MLflow registry."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlflow_agent_core.errors import InvalidInputError, ModelNotFoundError
from tests.inputs_support import (
    store,
)

SKLEARN = {"registry": {"backend": "sklearn"}}


def tiny_model() -> Any:
    from sklearn.linear_model import LinearRegression

    return LinearRegression().fit(np.array([[0.0], [1.0]]), np.array([0.0, 1.0]))


def register(agent: Any, name: str) -> str:
    with agent.start_run(run_name=f"train-{name}"):
        version = agent.register_model(tiny_model(), name)
    return str(version.version)


def registered_names(agent: Any) -> list[str]:
    return sorted(model.name for model in store(agent).search_registered_models())


@pytest.mark.parametrize(
    "name",
    ["org/model", "model@champion", "ns:model", "a#b", "", "   ", " padded", "x" * 257,
     ".", 42],
)
def test_bad_model_names_rejected_before_registering(
    agent_factory: Any, name: object
) -> None:
    agent = agent_factory(SKLEARN)

    with agent.start_run(), pytest.raises(InvalidInputError, match="model name"):
        agent.register_model(tiny_model(), name)

    assert registered_names(agent) == []


def test_aliases_stages_and_versions(agent_factory: Any) -> None:
    agent = agent_factory(SKLEARN)
    name = "fraud detector"
    version = register(agent, name)
    client = store(agent)

    agent.promote(name, np.int64(version), alias="champion")
    assert str(client.get_model_version_by_alias(name, "champion").version) == version

    agent.promote(name, f" {version} ", stage="production")
    assert client.get_model_version(name, version).current_stage == "Production"
    for selector in (
        {"model_stage": "PRODUCTION"},
        {"alias": "champion"},
        {"version": int(version)},
        {"version": f" {version}"},
    ):
        assert str(agent.get_model(name, **selector).version) == version

    for alias in ("latest", "LATEST", "v1", "V2", "two words", "prod.eu", ""):
        with pytest.raises(InvalidInputError, match="alias"):
            agent.promote(name, version, alias=alias)
    with pytest.raises(InvalidInputError, match="None, Staging, Production, Archived"):
        agent.promote(name, version, stage="prod")
    for bad_version in (0, "1.0", True, -1, "latest"):
        with pytest.raises(InvalidInputError, match="version"):
            agent.promote(name, bad_version, alias="challenger")

    model = client.get_registered_model(name)
    assert set(model.aliases) <= {"champion", "production"}
    assert client.get_model_version(name, version).current_stage == "Production"


def test_missing_models_raise_listing_what_exists(agent_factory: Any) -> None:
    agent = agent_factory(SKLEARN)
    version = register(agent, "churn")

    with pytest.raises(ModelNotFoundError) as caught:
        agent.get_model("chrun")
    assert "churn" in str(caught.value)

    with pytest.raises(ModelNotFoundError) as caught:
        agent.get_model("churn", version=int(version) + 5)
    assert version in str(caught.value)

    with pytest.raises(ModelNotFoundError):
        agent.get_model("churn", alias="nobody")
    with pytest.raises(ModelNotFoundError):
        agent.get_model("churn", model_stage="archived")
    with pytest.raises(ModelNotFoundError):
        agent.load_model("models:/chrun/1")
    with pytest.raises(ModelNotFoundError):
        agent.load_model(f"models:/churn/{int(version) + 5}")
