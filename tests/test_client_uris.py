"""Input checks of the client backend: URIs, selectors, options, registration.

The strategy under test points at a loopback port nobody listens on: every case
here must be rejected as bad input before anything is sent (a request would
surface as ServerUnavailableError instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlflow_agent_core.config import Options
from mlflow_agent_core.default_plugins import client as client_module
from mlflow_agent_core.default_plugins.client import (
    ClientOptions,
    MlflowClientStrategy,
    ModelRef,
    parse_model_uri,
)
from mlflow_agent_core.errors import ConfigError, InvalidInputError
from tests.client_helpers import make_client, stand_in_agent
from tests.servers import free_port

PROD = "Production"


@pytest.fixture
def offline_client() -> MlflowClientStrategy:
    return make_client(f"http://127.0.0.1:{free_port()}")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/Pytorch_Model/3", ModelRef("Pytorch_Model", version="3")),
        ("models:/Pytorch_Model/007", ModelRef("Pytorch_Model", version="7")),
        ("models:/Pytorch_Model/Production", ModelRef("Pytorch_Model", stage=PROD)),
        ("models:/Pytorch_Model/production", ModelRef("Pytorch_Model", stage=PROD)),
        ("models:/Pytorch_Model/STAGING", ModelRef("Pytorch_Model", stage="Staging")),
        ("models:/Pytorch_Model/archived", ModelRef("Pytorch_Model", stage="Archived")),
        ("models:/Pytorch_Model/latest", ModelRef("Pytorch_Model")),
        ("models:/Pytorch_Model/LATEST", ModelRef("Pytorch_Model")),
        ("models:/Pytorch_Model@champion", ModelRef("Pytorch_Model", alias="champion")),
        ("models:/my.model-v2@prod_2", ModelRef("my.model-v2", alias="prod_2")),
        ("MODELS:/m/1", ModelRef("m", version="1")),
    ],
)
def test_well_formed_uris_parse(uri: str, expected: ModelRef) -> None:
    assert parse_model_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "hint"),
    [
        ("runs:/abc/model", "only models:/"),
        ("/tmp/model", "only models:/"),
        ("models:", "names no model"),
        ("models:/", "names no model"),
        ("models://name/1", "one slash"),
        ("models:/name", "names no version"),
        ("models:/m-0123456789abcdef", "names no version"),
        ("models:/name/", "empty part"),
        ("models:/name//1", "empty part"),
        ("models:/name/1/MLmodel", "paths inside"),
        ("models:/name/0", "start at 1"),
        ("models:/name/champion", "models:/name@champion"),
        ("models:/name/v1", "not a version number"),
        ("models:/name@", "alias URI"),
        ("models:/@champion", "alias URI"),
        ("models:/name@bad alias", "alias URI"),
        ("models:/name@champion/1", "both an alias"),
        ("models:/name/1?x=1", "query"),
        (" models:/name/1", "surrounding spaces"),
    ],
)
def test_malformed_uris_are_refused_before_any_request(
    offline_client: MlflowClientStrategy, uri: str, hint: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        offline_client.load_model(uri)

    message = str(caught.value)
    assert hint in message
    assert repr(uri) in message
    assert "models:/<name>@<alias>" in message


@pytest.mark.parametrize("uri", [None, 3, b"models:/m/1"])
def test_non_string_uri_is_refused(
    offline_client: MlflowClientStrategy, uri: Any
) -> None:
    with pytest.raises(InvalidInputError, match="expected a models:/ URI string"):
        offline_client.load_model(uri)


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"version": 1, "alias": "champion"}, "not version and alias"),
        ({"alias": "a", "model_stage": "Production"}, "not alias and model_stage"),
        ({"version": "abc"}, "positive whole number"),
        ({"version": 0}, "positive whole number"),
        ({"version": -2}, "positive whole number"),
        ({"version": True}, "positive whole number"),
        ({"version": 1.5}, "positive whole number"),
        ({"alias": ""}, "not an alias name"),
        ({"alias": "has space"}, "not an alias name"),
        ({"model_stage": "champion"}, "not a registry stage"),
        ({"model_stage": ""}, "not a registry stage"),
    ],
)
def test_bad_selectors_are_refused_before_any_request(
    offline_client: MlflowClientStrategy, kwargs: dict[str, Any], hint: str
) -> None:
    with pytest.raises(InvalidInputError, match=hint):
        offline_client.get_model("Pytorch_Model", **kwargs)


@pytest.mark.parametrize("name", ["", "   ", None, 7])
def test_bad_model_names_are_refused(
    offline_client: MlflowClientStrategy, name: Any
) -> None:
    with pytest.raises(InvalidInputError, match="non-empty string"):
        offline_client.get_model(name)
    with pytest.raises(InvalidInputError, match="non-empty string"):
        offline_client.list_versions(name)


def test_allow_pickle_must_be_a_bool(offline_client: MlflowClientStrategy) -> None:
    with pytest.raises(InvalidInputError, match="allow_pickle must be True, False"):
        offline_client.load_model(
            "models:/m/1", allow_pickle="yes"  # type: ignore[arg-type]
        )


def test_options_have_documented_defaults() -> None:
    options = make_client("sqlite:///unused.db").options

    assert options == ClientOptions(
        allow_pickle=False, cache_size=8, cache_dir=None, stage_aliases=True
    )
    for field in ClientOptions.__dataclass_fields__.values():
        assert field.metadata["help"], field.name


def test_options_are_parsed_from_the_section(tmp_path: Path) -> None:
    options = make_client(
        "sqlite:///unused.db",
        allow_pickle=True,
        cache_size=2,
        cache_dir=str(tmp_path),
        stage_aliases=False,
    ).options

    assert options == ClientOptions(True, 2, str(tmp_path), False)


def test_negative_cache_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cache_size must be 0 or more, got -1"):
        make_client("sqlite:///unused.db", cache_size=-1)


def test_unknown_option_is_a_config_error_with_suggestion() -> None:
    with pytest.raises(ConfigError, match="allow_pickel") as caught:
        make_client("sqlite:///unused.db", allow_pickel=True)
    assert "allow_pickle" in str(caught.value)


def test_wrong_option_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cache_size"):
        MlflowClientStrategy(
            agent=stand_in_agent("sqlite:///unused.db"),
            options=Options({"cache_size": "many"}, section="client"),
        )


def test_the_module_registers_the_mlflow_client_backend() -> None:
    registered: list[tuple[str, str, object]] = []

    client_module.mlflow_agent_register_strategies(
        lambda concern, name, factory: registered.append((concern, name, factory))
    )

    assert registered == [("client", "mlflow", MlflowClientStrategy)]


def test_check_options_validates_without_building(tmp_path: Path) -> None:
    cache_dir = tmp_path / "never-created"
    section = Options({"cache_dir": str(cache_dir), "cache_size": 1}, section="client")

    checked = MlflowClientStrategy.check_options(section)

    assert checked == ClientOptions(cache_size=1, cache_dir=str(cache_dir))
    assert not cache_dir.exists()
    with pytest.raises(ConfigError, match="cache_size must be 0 or more"):
        MlflowClientStrategy.check_options(
            Options({"cache_size": -1}, section="client")
        )
