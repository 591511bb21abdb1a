"""promote(): stages that hold one version, stage aliases, quiet deprecations."""

from __future__ import annotations

import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow import MlflowClient

from mlflow_agent_core import ModelNotFoundError, ServerUnavailableError
from tests.servers import MlflowServer


def unique(prefix: str) -> str:
    # The loopback server is shared by the session: each test uses its own names.
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register(agent: Any, name: str) -> str:
    model = torch.nn.Linear(4, 2)
    version = agent.register_model(model, name, input_example=torch.randn(2, 4))
    return str(version.version)


def stages(client: MlflowClient, name: str) -> dict[str, str]:
    return {
        v.version: v.current_stage
        for v in client.search_model_versions(f"name = '{name}'")
    }


def test_two_promotions_to_production_leave_one_version_there(
    server_agent_factory: Any,
) -> None:
    agent = server_agent_factory(registry={"backend": "pytorch"})
    name = unique("fraud")
    first, second = register(agent, name), register(agent, name)

    agent.promote(name, first, stage="Production")
    promoted = agent.promote(name, second, stage="production")

    client = MlflowClient(agent.configuration.tracking_uri)
    assert stages(client, name) == {first: "Archived", second: "Production"}
    assert promoted.current_stage == "Production"
    assert promoted.aliases == ["production"]
    assert client.get_model_version_by_alias(name, "production").version == second
    production = [
        v for v in client.search_model_versions(f"name = '{name}'")
        if v.current_stage == "Production"
    ]
    assert [v.version for v in production] == [second]


def test_alias_and_stage_in_one_call(server_agent_factory: Any) -> None:
    agent = server_agent_factory()
    name = unique("fraud")
    version = register(agent, name)

    promoted = agent.promote(name, version, alias="champion", stage="Staging")

    assert promoted.current_stage == "Staging"
    assert sorted(promoted.aliases) == ["champion", "staging"]


def test_a_version_leaving_a_stage_loses_that_stage_alias(
    server_agent_factory: Any,
) -> None:
    agent = server_agent_factory()
    name = unique("fraud")
    version = register(agent, name)
    agent.promote(name, version, stage="Production")

    archived = agent.promote(name, version, stage="Archived")

    assert archived.current_stage == "Archived"
    assert archived.aliases == []


def test_stage_aliases_can_be_turned_off(server_agent_factory: Any) -> None:
    agent = server_agent_factory(
        registry={"backend": "pytorch", "stage_aliases": False}
    )
    name = unique("fraud")
    version = register(agent, name)

    promoted = agent.promote(name, version, stage="Production")

    assert promoted.current_stage == "Production"
    assert promoted.aliases == []


def test_stage_deprecation_warnings_never_reach_the_caller(
    server_agent_factory: Any,
) -> None:
    agent = server_agent_factory()
    name = unique("fraud")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        version = register(agent, name)
        agent.promote(name, version, alias="champion")
        agent.promote(name, version, stage="Production")

    stage_warnings = [w for w in caught if "stage" in str(w.message).lower()]
    assert stage_warnings == []
    assert agent.promote(name, version, alias="again").current_stage == "Production"


def test_promoting_a_missing_version_names_the_existing_ones(
    server_agent_factory: Any,
) -> None:
    agent = server_agent_factory()
    name = unique("fraud")
    register(agent, name)
    register(agent, name)

    with pytest.raises(ModelNotFoundError, match="Existing versions: 1, 2"):
        agent.promote(name, 7, stage="Production")
    with pytest.raises(ModelNotFoundError, match="No model named"):
        agent.promote(unique("nobody"), 1, alias="champion")


def test_a_registry_that_is_down_is_reported_as_unavailable(
    tmp_path: Path, agent_factory: Any
) -> None:
    server = MlflowServer(tmp_path / "own-server").start()
    try:
        agent = agent_factory(configuration={"tracking_uri": server.uri})
        name = unique("fraud")
        version = register(agent, name)
    finally:
        server.stop()

    with pytest.raises(ServerUnavailableError, match=server.uri):
        agent.promote(name, version, stage="Production")
