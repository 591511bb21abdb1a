"""Issue 4, kind 3: metric, param and tag keys, read back from real MLflow stores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlflow_agent_core.errors import InvalidInputError
from mlflow_agent_core.validation import InputPolicy, InputValidator
from tests.inputs_support import (
    PATIENT_PROBE,
    THROUGH_AGENT,
    stored_run,
)

USER_TAG_PREFIX = "mlflow."

PORTABLE = ["val loss", "train/loss", "a.b-c_d", "x" * 250, ".hidden", "a..b"]
BAD = [
    "",
    "eval:loss",
    "précision",
    "/abs",
    "trailing/",
    "a//b",
    "a/./b",
    "a/../b",
    "..up",
    " padded",
    "x" * 251,
    "tab\tkey",
]


def user_tags(run: Any) -> dict[str, str]:
    return {
        k: v for k, v in run.data.tags.items() if not k.startswith(USER_TAG_PREFIX)
    }


@pytest.mark.parametrize("key", PORTABLE)
def test_portable_keys_stored_unchanged(agent_factory: Any, key: str) -> None:
    agent = agent_factory()

    with agent.start_run() as run:
        agent.log_metric(key, 1.0)
        agent.log_param(key, "v")
        agent.set_tag(key, "t")

    stored = stored_run(agent, run.run_id)
    assert stored.data.metrics == {key: 1.0}
    assert stored.data.params == {key: "v"}
    assert user_tags(stored) == {key: "t"}


@pytest.mark.parametrize("key", BAD)
def test_strict_mode_rejects_before_sending(agent_factory: Any, key: str) -> None:
    agent = agent_factory()
    calls: list[Callable[[], object]] = [
        lambda: agent.log_metric(key, 1.0),
        lambda: agent.log_metrics({"fine": 1.0, key: 2.0}),
        lambda: agent.log_params({"fine": 1, key: 2}),
        lambda: agent.set_tags({"fine": "t", key: "t"}),
    ]

    with agent.start_run() as run:
        for call in calls:
            with pytest.raises(InvalidInputError) as caught:
                call()
            assert "keys: sanitize" in str(caught.value)

    stored = stored_run(agent, run.run_id)
    assert stored.data.metrics == {} and stored.data.params == {}
    assert user_tags(stored) == {}


def test_strict_mode_rejects_bad_keys_at_start_run(agent_factory: Any) -> None:
    agent = agent_factory()

    with pytest.raises(InvalidInputError, match="'a:b'"):
        agent.start_run(params={"a:b": 1})
    with pytest.raises(InvalidInputError, match="'é'"):
        agent.start_run(tags={"é": 1})

    assert agent.active_run is None


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("eval:loss", "eval_loss"),
        ("précision", "precision"),
        ("/abs//path/", "abs/path"),
        ("a/./b/../c", "a/_/b/__/c"),
        ("..up", "__up"),
    ],
)
def test_sanitize_mode_stores_the_mapped_key(
    agent_factory: Any, key: str, expected: str
) -> None:
    agent = agent_factory(inputs={"keys": "sanitize"})

    with agent.start_run() as run:
        agent.log_metric(key, 1.0)
        agent.log_param(key, "v")
        agent.set_tag(key, "t")

    stored = stored_run(agent, run.run_id)
    assert stored.data.metrics == {expected: 1.0}
    assert stored.data.params == {expected: "v"}
    assert user_tags(stored) == {expected: "t"}


def test_sanitize_collisions_raise_and_store_nothing_new(agent_factory: Any) -> None:
    agent = agent_factory(inputs={"keys": "sanitize"})

    with agent.start_run() as run:
        with pytest.raises(InvalidInputError, match="'a:b' and 'a_b'"):
            agent.log_metrics({"a:b": 1.0, "a_b": 2.0})
        agent.log_metric("x:y", 3.0)
        with pytest.raises(InvalidInputError, match="'x:y' and 'x_y'"):
            agent.log_metric("x_y", 4.0)

    assert stored_run(agent, run.run_id).data.metrics == {"x_y": 3.0}


def test_colon_rejected_even_where_the_server_would_take_it(
    server_agent_factory: Any,
) -> None:
    agent = server_agent_factory(PATIENT_PROBE)

    with agent.start_run() as run:
        with pytest.raises(InvalidInputError, match="operating system"):
            agent.log_metric("eval:loss", 1.0)

    assert stored_run(agent, run.run_id).data.metrics == {}


def test_sanitized_keys_over_the_rest_server(server_agent_factory: Any) -> None:
    agent = server_agent_factory(PATIENT_PROBE, inputs={"keys": "sanitize"})

    with agent.start_run() as run:
        agent.log_metrics({"eval:f1": 0.5, "ünïcode": 0.25})

    assert stored_run(agent, run.run_id).data.metrics == {
        "eval_f1": 0.5,
        "unicode": 0.25,
    }


keys = st.one_of(
    st.text(max_size=10),
    st.text(alphabet="ab/. :_é", min_size=1, max_size=10),
)


@pytest.mark.parametrize("mode", ["strict", "sanitize"])
def test_property_keys_through_the_agent(agent_factory: Any, mode: str) -> None:
    agent = agent_factory(inputs={"keys": mode})

    @THROUGH_AGENT
    @given(key=keys)
    def check(key: str) -> None:
        rule = InputValidator(InputPolicy(keys=mode))  # type: ignore[arg-type]
        with agent.start_run() as run:
            try:
                agent.log_metric(key, 1.0)
                agent.log_param(key, "v")
            except InvalidInputError:
                accepted = False
            else:
                accepted = True
        stored = stored_run(agent, run.run_id)

        if not accepted:
            assert stored.data.metrics == {} and stored.data.params == {}
            return
        point = rule.metric(key, 1.0, 0, 0)
        assert point is not None
        assert stored.data.metrics == {point.key: 1.0}
        assert stored.data.params == {point.key: "v"}
        assert mode == "sanitize" or point.key == key

    check()
