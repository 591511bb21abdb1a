"""The client backend as the agent uses it: selected and configured by agent.yaml,
working on models the agent's own registry backend registered and promoted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlflow_agent_core.default_plugins.client import MlflowClientStrategy
from mlflow_agent_core.errors import ConfigError, UnsafeModelError
from tests.client_helpers import answer, linear

EXAMPLE = np.ones((2, 3), dtype=np.float32)


def register_and_promote(agent: Any, weight: float, **kwargs: Any) -> str:
    with agent.start_run():
        version = agent.register_model(linear(weight), "Pytorch_Model", **kwargs)
    agent.promote("Pytorch_Model", str(version.version), stage="Production")
    return str(version.version)


def test_agent_yaml_options_reach_the_backend(agent_factory: Any) -> None:
    agent = agent_factory(client={"backend": "mlflow", "cache_size": 2})

    assert isinstance(agent.client, MlflowClientStrategy)
    assert agent.client.options.cache_size == 2
    assert agent.client.options.allow_pickle is False


def test_a_bad_client_option_is_a_config_error(agent_factory: Any) -> None:
    with pytest.raises(ConfigError, match="cache_size must be 0 or more"):
        agent_factory(client={"backend": "mlflow", "cache_size": -3})


def test_promotion_through_the_agent_is_seen_by_the_next_load(
    agent_factory: Any,
) -> None:
    agent = agent_factory()
    register_and_promote(agent, 1.0, input_example=EXAMPLE)
    first = agent.load_model("models:/Pytorch_Model/production")

    second_version = register_and_promote(agent, 2.0, input_example=EXAMPLE)
    second = agent.load_model("models:/Pytorch_Model/Production")

    assert answer(first) == pytest.approx(3.0)
    assert answer(second) == pytest.approx(6.0)
    found = agent.get_model("Pytorch_Model", model_stage="PRODUCTION")
    assert str(found.version) == second_version
    assert "production" in found.aliases


def test_the_original_design_names_resolve_the_promoted_version(
    agent_factory: Any,
) -> None:
    import mlflow_agent_core.client as mlflow_client

    agent = agent_factory()
    version = register_and_promote(agent, 1.0, input_example=EXAMPLE)

    found = mlflow_client.MLFlowClient().get_model(
        "Pytorch_Model", model_stage="Production"
    )

    assert (found.name, str(found.version)) == ("Pytorch_Model", version)


def test_pickle_allowed_through_agent_yaml(agent_factory: Any) -> None:
    agent = agent_factory(registry={"backend": "pytorch", "format": "pickle"})
    register_and_promote(agent, 1.0)

    with pytest.raises(UnsafeModelError, match="allow_pickle: true"):
        agent.load_model("models:/Pytorch_Model/Production")
    assert answer(
        agent.load_model("models:/Pytorch_Model/Production", allow_pickle=True)
    ) == pytest.approx(3.0)

    type(agent).reset()
    allowing = agent_factory(
        registry={"backend": "pytorch", "format": "pickle"},
        client={"backend": "mlflow", "allow_pickle": True},
    )
    assert answer(allowing.load_model("models:/Pytorch_Model/1")) == pytest.approx(3.0)
