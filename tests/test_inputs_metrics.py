"""Issue 4, kind 1: metric values, read back from real MLflow stores."""

from __future__ import annotations

import logging
import math
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mlflow_agent_core.errors import InvalidInputError
from mlflow_agent_core.validation import InputPolicy, InputValidator
from tests.inputs_support import (
    PATIENT_PROBE,
    THROUGH_AGENT,
    history,
    same_float,
    stored_run,
)

MAX_DOUBLE = 1.7976931348623157e308


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3.0),
        (0.1, 0.1),
        (True, 1.0),
        (2**60, float(2**60)),
        (Decimal("0.25"), 0.25),
        (" 1e-3 ", 0.001),
        (MAX_DOUBLE, MAX_DOUBLE),
        (5e-324, 5e-324),
        (-0.0, 0.0),
        (np.float32(0.1), float(np.float32(0.1))),
        (np.int64(7), 7.0),
        (np.array([[2.5]]), 2.5),
        (torch.tensor(1.25), 1.25),
        (torch.tensor([3.0], requires_grad=True) * 2, 6.0),
        (torch.tensor(4, dtype=torch.int16), 4.0),
    ],
)
def test_metric_values_stored_as_the_rule_says(
    agent_factory: Any, value: object, expected: float
) -> None:
    agent = agent_factory()

    with agent.start_run() as run:
        agent.log_metric("loss", value, step=2)

    assert history(agent, run.run_id, "loss") == [(2, expected)]


@pytest.mark.parametrize(
    "value",
    [None, "abc", [1.0], np.zeros(3), torch.ones(2, 2), 1j, 2**53 + 1, b"1"],
)
def test_rejected_metric_values_store_nothing(
    agent_factory: Any, value: object
) -> None:
    agent = agent_factory()

    with agent.start_run() as run:
        with pytest.raises(InvalidInputError, match="'loss'"):
            agent.log_metric("loss", value)
        agent.log_metric("other", 1.0)

    assert stored_run(agent, run.run_id).data.metrics == {"other": 1.0}


def test_batch_with_one_bad_value_stores_none_of_it(agent_factory: Any) -> None:
    agent = agent_factory()

    with agent.start_run() as run, pytest.raises(InvalidInputError, match="'b'"):
        agent.log_metrics({"a": 1.0, "b": np.ones(4), "c": 2.0}, step=1)

    assert stored_run(agent, run.run_id).data.metrics == {}


def test_nonfinite_skip_is_the_default(
    agent_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    agent = agent_factory()

    with caplog.at_level(logging.WARNING), agent.start_run() as run:
        agent.log_metric("loss", 1.0, step=0)
        agent.log_metric("loss", float("nan"), step=1)
        agent.log_metric("loss", float("inf"), step=2)
        agent.log_metrics({"loss": torch.tensor(float("-inf")), "acc": 0.5}, step=3)

    assert history(agent, run.run_id, "loss") == [(0, 1.0)]
    assert history(agent, run.run_id, "acc") == [(3, 0.5)]
    skipped = [r for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(skipped) == 1 and "'loss'" in skipped[0].getMessage()


def test_nonfinite_keep_stores_nan_and_refuses_infinity(agent_factory: Any) -> None:
    agent = agent_factory(inputs={"nonfinite": "keep"})

    with agent.start_run() as run:
        agent.log_metric("loss", float("nan"), step=1)
        with pytest.raises(InvalidInputError, match="1.7976931348623157e308"):
            agent.log_metric("loss", float("inf"), step=2)

    points = history(agent, run.run_id, "loss")
    assert len(points) == 1 and points[0][0] == 1 and math.isnan(points[0][1])


def test_nonfinite_error_raises_and_stores_nothing(agent_factory: Any) -> None:
    agent = agent_factory(inputs={"nonfinite": "error"})

    with agent.start_run() as run, pytest.raises(InvalidInputError, match="'loss'"):
        agent.log_metrics({"acc": 0.9, "loss": np.float32("nan")})

    assert stored_run(agent, run.run_id).data.metrics == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("nan"), float("nan")),
        (torch.tensor(0.5), 0.5),
        (MAX_DOUBLE, MAX_DOUBLE),
        ("-2.5", -2.5),
    ],
)
def test_metric_values_over_the_rest_server(
    server_agent_factory: Any, value: object, expected: float
) -> None:
    agent = server_agent_factory(PATIENT_PROBE, inputs={"nonfinite": "keep"})

    with agent.start_run() as run:
        agent.log_metric("loss", value, step=4)

    ((step, stored),) = history(agent, run.run_id, "loss")
    assert step == 4 and same_float(stored, expected)


def test_infinity_refused_before_reaching_the_server(server_agent_factory: Any) -> None:
    agent = server_agent_factory(PATIENT_PROBE, inputs={"nonfinite": "keep"})

    with agent.start_run() as run, pytest.raises(InvalidInputError):
        agent.log_metric("loss", float("-inf"))

    assert stored_run(agent, run.run_id).data.metrics == {}


metric_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.decimals(),
    st.text(max_size=12),
    st.text(alphabet="0123456789.e-+ nailf", max_size=8),
    st.floats(width=32).map(np.float32),
    st.lists(st.floats(), max_size=3).map(np.array),
    st.floats(allow_nan=False).map(lambda f: torch.tensor(f, dtype=torch.float64)),
)


@pytest.mark.parametrize("policy", ["skip", "keep", "error"])
def test_property_metric_values_through_the_agent(
    agent_factory: Any, policy: str
) -> None:
    agent = agent_factory(inputs={"nonfinite": policy})
    rule = InputValidator(InputPolicy(nonfinite=policy))  # type: ignore[arg-type]

    @THROUGH_AGENT
    @given(value=metric_values)
    def check(value: object) -> None:
        with agent.start_run() as run:
            try:
                agent.log_metric("m", value, step=1)
            except InvalidInputError:
                accepted = False
            else:
                accepted = True
        stored = history(agent, run.run_id, "m")

        if not accepted:
            assert stored == []
            return
        expected = rule.metric("m", value, 1, 0)
        if expected is None:
            assert stored == [] and policy == "skip"
            return
        assert len(stored) == 1 and stored[0][0] == 1
        assert same_float(stored[0][1], expected.value)
        assert not math.isinf(stored[0][1])
        if isinstance(value, float) and math.isfinite(value):
            assert stored[0][1] == value

    check()
