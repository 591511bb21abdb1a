"""Issue 4, kind 2: param values, read back from real MLflow stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mlflow_agent_core.errors import InvalidInputError, ParamConflictError
from mlflow_agent_core.validation import (
    MAX_PARAM_VALUE_LENGTH,
    InputPolicy,
    InputValidator,
)
from tests.inputs_support import (
    PATIENT_PROBE,
    THROUGH_AGENT,
    store,
    stored_run,
)


def artifact_text(agent: Any, run_id: str, path: str, tmp_path: Path) -> str:
    local = store(agent).download_artifacts(run_id, path, str(tmp_path))
    return Path(local).read_text(encoding="utf-8")


def test_nested_params_are_flattened_and_canonical(agent_factory: Any) -> None:
    agent = agent_factory()
    params = {
        "optimizer": {"name": "adam", "lr": np.float32(0.001), "betas": (0.9, 0.99)},
        "layers": [64, torch.tensor(32)],
        "dropout": None,
        "augment": True,
        "classes": {"b", "a"},
        "schedule": {},
    }

    with agent.start_run() as run:
        agent.log_params(params)

    assert stored_run(agent, run.run_id).data.params == {
        "optimizer.name": "adam",
        "optimizer.lr": "0.001",
        "optimizer.betas.0": "0.9",
        "optimizer.betas.1": "0.99",
        "layers.0": "64",
        "layers.1": "32",
        "dropout": "None",
        "augment": "True",
        "classes.0": "a",
        "classes.1": "b",
        "schedule": "{}",
    }


def test_params_given_to_start_run_are_stored(agent_factory: Any) -> None:
    agent = agent_factory()

    with agent.start_run(params={"seed": np.int64(7), "data": {"split": 0.2}}) as run:
        pass

    assert stored_run(agent, run.run_id).data.params == {
        "seed": "7",
        "data.split": "0.2",
    }


def test_separator_comes_from_agent_yaml(agent_factory: Any) -> None:
    agent = agent_factory(inputs={"param_separator": "__"})

    with agent.start_run() as run:
        agent.log_params({"model": {"depth": 3}})

    assert stored_run(agent, run.run_id).data.params == {"model__depth": "3"}


def test_same_value_again_is_a_quiet_no_op(agent_factory: Any) -> None:
    agent = agent_factory()

    with agent.start_run() as run:
        agent.log_param("lr", 0.1)
        agent.log_param("lr", np.float64(0.1))
        agent.log_params({"lr": torch.tensor(0.1), "seed": 1})

    assert stored_run(agent, run.run_id).data.params == {"lr": "0.1", "seed": "1"}


def test_changed_value_raises_and_keeps_the_first(agent_factory: Any) -> None:
    agent = agent_factory()

    with agent.start_run() as run:
        agent.log_param("lr", 0.1)
        with pytest.raises(ParamConflictError) as caught:
            agent.log_params({"lr": 0.2, "seed": 5})

    message = str(caught.value)
    assert "'lr'" in message and "'0.1'" in message and "'0.2'" in message
    assert stored_run(agent, run.run_id).data.params == {"lr": "0.1"}


def test_long_param_truncated_with_marker_and_full_artifact(
    agent_factory: Any, tmp_path: Path
) -> None:
    agent = agent_factory()
    prompt = "token " * 2000

    with agent.start_run() as run:
        agent.log_param("prompt", prompt)

    stored = stored_run(agent, run.run_id).data.params["prompt"]
    assert len(stored) == MAX_PARAM_VALUE_LENGTH
    assert stored.startswith(prompt[:5000])
    assert "full value in artifact params/prompt.txt" in stored
    assert artifact_text(agent, run.run_id, "params/prompt.txt", tmp_path) == prompt


def test_long_param_again_is_a_no_op_and_different_one_conflicts(
    agent_factory: Any,
) -> None:
    agent = agent_factory()
    long_value = "a" * 7000

    with agent.start_run():
        agent.log_param("blob", long_value)
        agent.log_param("blob", long_value)
        with pytest.raises(ParamConflictError, match="'blob'"):
            agent.log_param("blob", long_value + "b")


def test_long_param_error_policy_stores_nothing(agent_factory: Any) -> None:
    agent = agent_factory(inputs={"long_params": "error"})

    with agent.start_run() as run:
        with pytest.raises(InvalidInputError, match="'config'"):
            agent.log_params({"config": "x" * 6001, "seed": 1})

    assert stored_run(agent, run.run_id).data.params == {}


@pytest.mark.parametrize(
    "params",
    [
        {"fn": lambda: 0},
        {"raw": b"bytes"},
        {"a.b": 1, "a": {"b": 2}},
        {"text": "nul\x00inside"},
    ],
)
def test_rejected_params_store_nothing(
    agent_factory: Any, params: dict[str, Any]
) -> None:
    agent = agent_factory()

    with agent.start_run() as run, pytest.raises(InvalidInputError):
        agent.log_params({"seed": 1, **params})

    assert stored_run(agent, run.run_id).data.params == {}


def test_long_param_over_the_rest_server(
    server_agent_factory: Any, tmp_path: Path
) -> None:
    agent = server_agent_factory(PATIENT_PROBE)
    # More params than MLflow takes in one batch request (100).
    value = {"vocab": ["word"] * 250}

    with agent.start_run() as run:
        agent.log_params({"cfg": {"text": "é" * 6500}, **value})

    params = stored_run(agent, run.run_id).data.params
    assert len(params["cfg.text"]) == MAX_PARAM_VALUE_LENGTH
    assert params["vocab.249"] == "word"
    assert len(params) == 251
    full = artifact_text(agent, run.run_id, "params/cfg.text.txt", tmp_path)
    assert full == "é" * 6500


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.text(min_size=6001, max_size=6100, alphabet="xy"),
    st.binary(max_size=3),
    st.floats(width=32).map(np.float32),
)
param_trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(alphabet="abc_", min_size=1, max_size=4), children,
                        max_size=3),
    ),
    max_leaves=8,
)


@pytest.mark.parametrize("long_params", ["truncate", "error"])
def test_property_params_through_the_agent(
    agent_factory: Any, long_params: str
) -> None:
    agent = agent_factory(inputs={"long_params": long_params})
    rule = InputValidator(InputPolicy(long_params=long_params))

    @THROUGH_AGENT
    @given(params=st.dictionaries(st.sampled_from(["p", "q", "cfg"]), param_trees,
                                  max_size=3))
    def check(params: dict[str, Any]) -> None:
        with agent.start_run() as run:
            try:
                agent.log_params(params)
            except InvalidInputError:
                accepted = False
            else:
                accepted = True
        stored = stored_run(agent, run.run_id).data.params

        if not accepted:
            assert stored == {}
            return
        assert stored == rule.params(params).values
        assert all(len(text) <= MAX_PARAM_VALUE_LENGTH for text in stored.values())

    check()
