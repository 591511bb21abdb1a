"""Resolving model versions against a real sqlite registry and a loopback server.

The registry built once for this module holds:

* ``Pytorch_Model`` versions 1, 2, 3; version 1 in stage Production, version 2 in
  Staging and behind alias ``champion``;
* ``Stageless`` version 1 behind alias ``production`` and in no stage, which is
  what a registry without a stage API holds after the agent's promote;
* ``Empty``, a registered model without versions.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from mlflow_agent_core.errors import (
    AgentError,
    ModelNotFoundError,
    ServerUnavailableError,
)
from tests.client_helpers import (
    make_client,
    mlflow_at,
    register_torch,
    sqlite_store,
)
from tests.servers import free_port

LISTING = (
    "versions: 1, 2, 3; aliases: champion -> 2; "
    "stages: Production -> 1, Staging -> 2"
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = sqlite_store(tmp_path_factory.mktemp("client-resolution"))
    # Pickle is the fastest format to write; nothing here loads the models.
    for weight in (1.0, 2.0, 3.0):
        register_torch(uri, "Pytorch_Model", weight, fmt="pickle")
    register_torch(uri, "Stageless", 5.0, fmt="pickle")

    with mlflow_at(uri) as client, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage("Pytorch_Model", "1", "Production")
        client.transition_model_version_stage("Pytorch_Model", "2", "Staging")
        client.set_registered_model_alias("Pytorch_Model", "champion", "2")
        client.set_registered_model_alias("Stageless", "production", "1")
        client.create_registered_model("Empty")
    return uri


@pytest.mark.parametrize("version", [1, "1", 2, "3", " 3"])
def test_get_model_by_version(store: str, version: int | str) -> None:
    found = make_client(store).get_model("Pytorch_Model", version=version)

    assert found.name == "Pytorch_Model"
    assert str(found.version) == str(version).strip()


def test_get_model_by_alias(store: str) -> None:
    found = make_client(store).get_model("Pytorch_Model", alias="champion")

    assert str(found.version) == "2"
    assert "champion" in found.aliases


@pytest.mark.parametrize(
    ("stage", "version"),
    [
        ("Production", "1"),
        ("production", "1"),
        ("PRODUCTION", "1"),
        ("Staging", "2"),
        ("staging", "2"),
    ],
)
def test_get_model_by_stage_in_any_case(store: str, stage: str, version: str) -> None:
    found = make_client(store).get_model("Pytorch_Model", model_stage=stage)

    assert str(found.version) == version
    assert found.current_stage == stage.capitalize()


def test_the_original_design_call_works(store: str) -> None:
    found = make_client(store).get_model("Pytorch_Model", model_stage="Production")

    assert (found.name, str(found.version)) == ("Pytorch_Model", "1")


def test_get_model_without_selector_is_the_latest_version(store: str) -> None:
    found = make_client(store).get_model("Pytorch_Model")

    assert str(found.version) == "3"
    assert found.current_stage == "None"


def test_latest_version_carries_its_aliases(store: str) -> None:
    found = make_client(store).get_model("Stageless")

    assert found.aliases == ["production"]


def test_stage_falls_back_to_the_lower_case_alias(store: str) -> None:
    found = make_client(store).get_model("Stageless", model_stage="Production")

    assert (str(found.version), found.current_stage) == ("1", "None")


def test_stage_fallback_can_be_switched_off(store: str) -> None:
    client = make_client(store, stage_aliases=False)

    with pytest.raises(ModelNotFoundError) as caught:
        client.get_model("Stageless", model_stage="Production")

    message = str(caught.value)
    assert "has no stage 'Production';" in message
    assert "aliases: production -> 1" in message


def test_stage_lookup_shows_no_deprecation_warning(store: str) -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        make_client(store).get_model("Pytorch_Model", model_stage="Production")
        make_client(store).get_model("Stageless", model_stage="Production")

    assert [w for w in seen if issubclass(w.category, FutureWarning)] == []


def test_missing_model_lists_close_names(store: str) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        make_client(store).get_model("Pytorch_Modle", model_stage="Production")

    message = str(caught.value)
    assert "registered model 'Pytorch_Modle' does not exist" in message
    assert "close names: 'Pytorch_Model'" in message


def test_missing_model_in_other_case_is_suggested(store: str) -> None:
    with pytest.raises(ModelNotFoundError, match="close names: 'Pytorch_Model'"):
        make_client(store).get_model("pytorch_model")


def test_missing_model_without_close_names_lists_the_models(store: str) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        make_client(store).get_model("zzzzzzzz", version=1)

    assert (
        "registered models: 'Empty', 'Pytorch_Model', 'Stageless' (3 in all)"
        in str(caught.value)
    )


def test_missing_version_lists_what_exists(store: str) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        make_client(store).get_model("Pytorch_Model", version=99)

    message = str(caught.value)
    assert "model 'Pytorch_Model' has no version 99" in message
    assert LISTING in message


def test_missing_alias_lists_what_exists(store: str) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        make_client(store).get_model("Pytorch_Model", alias="challenger")

    message = str(caught.value)
    assert "has no alias 'challenger'" in message
    assert LISTING in message


def test_missing_stage_lists_what_exists(store: str) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        make_client(store).get_model("Pytorch_Model", model_stage="archived")

    message = str(caught.value)
    assert "has no stage 'Archived' (nor alias 'archived')" in message
    assert LISTING in message


def test_model_without_versions_has_no_latest(store: str) -> None:
    with pytest.raises(ModelNotFoundError, match="'Empty' has no latest version; "
                       "it has no versions yet"):
        make_client(store).get_model("Empty")


def test_list_models_is_sorted_by_name(store: str) -> None:
    names = [model.name for model in make_client(store).list_models()]

    assert names == ["Empty", "Pytorch_Model", "Stageless"]


def test_list_versions_fills_in_aliases(store: str) -> None:
    versions = make_client(store).list_versions("Pytorch_Model")

    assert [(str(v.version), v.current_stage, v.aliases) for v in versions] == [
        ("1", "Production", []),
        ("2", "Staging", ["champion"]),
        ("3", "None", []),
    ]


def test_list_versions_of_a_missing_model(store: str) -> None:
    with pytest.raises(ModelNotFoundError, match="close names: 'Stageless'"):
        make_client(store).list_versions("Stageles")


def test_uris_are_read_at_use_time(store: str, tmp_path: Path) -> None:
    client = make_client(store)
    assert str(client.get_model("Pytorch_Model").version) == "3"

    other = sqlite_store(tmp_path / "other")
    client._agent.configuration.tracking_uri = other
    client._agent.configuration.registry_uri = other

    with pytest.raises(ModelNotFoundError, match="has no registered models"):
        client.get_model("Pytorch_Model")


def test_unreachable_server_is_server_unavailable() -> None:
    uri = f"http://user:secret@127.0.0.1:{free_port()}"
    client = make_client(uri)

    for call in (
        lambda: client.get_model("Pytorch_Model", model_stage="Production"),
        lambda: client.load_model("models:/Pytorch_Model/1"),
        client.list_models,
    ):
        with pytest.raises(ServerUnavailableError) as caught:
            call()
        message = str(caught.value)
        assert "could not be reached (connection refused)" in message
        assert "secret" not in message
        assert uri.replace("user:secret@", "") in message


def test_resolution_over_the_loopback_server(mlflow_server: object) -> None:
    uri = mlflow_server.uri  # type: ignore[attr-defined]
    name = f"client-resolution-{free_port()}"
    register_torch(uri, name, 1.0, fmt="pickle")
    register_torch(uri, name, 2.0, fmt="pickle")
    with mlflow_at(uri) as mlflow_client:
        mlflow_client.set_registered_model_alias(name, "production", "2")
    client = make_client(uri)

    assert str(client.get_model(name).version) == "2"
    assert str(client.get_model(name, version=1).version) == "1"
    assert str(client.get_model(name, model_stage="production").version) == "2"
    with pytest.raises(ModelNotFoundError) as caught:
        client.get_model(name, alias="nope")
    assert "versions: 1, 2; aliases: production -> 2; stages: none" in str(caught.value)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        client.get_model(name + "-missing", version=1)


def test_no_mlflow_exception_escapes_for_missing_things(store: str) -> None:
    client = make_client(store)
    calls = [
        lambda: client.get_model("nope"),
        lambda: client.get_model("Pytorch_Model", version=1000),
        lambda: client.load_model("models:/nope@champion"),
        lambda: client.load_model("models:/Pytorch_Model/Archived"),
        lambda: client.list_versions("nope"),
    ]
    for call in calls:
        with pytest.raises(AgentError) as caught:
            call()
        assert isinstance(caught.value, ModelNotFoundError), caught.value
