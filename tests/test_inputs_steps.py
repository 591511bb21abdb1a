"""Issue 4, kind 4: metric steps, read back from real MLflow stores."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mlflow_agent_core.errors import InvalidInputError
from tests.inputs_support import (
    PATIENT_PROBE,
    THROUGH_AGENT,
    history,
    stored_run,
)

MAX_STEP = 2**63 - 1


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (None, 0),
        (5, 5),
        (3.0, 3),
        (1e15, 10**15),
        (Decimal("12"), 12),
        (np.int32(8), 8),
        (np.uint64(9), 9),
        (np.float64(10.0), 10),
        (torch.tensor(11), 11),
        (torch.tensor([12.0]), 12),
        (MAX_STEP, MAX_STEP),
    ],
)
def test_steps_stored_as_integers(
    agent_factory: Any, step: object, expected: int
) -> None:
    agent = agent_factory()

    with agent.start_run() as run:
        agent.log_metric("loss", 0.5, step=step)
        agent.log_metrics({"acc": 0.75}, step=step)

    assert history(agent, run.run_id, "loss") == [(expected, 0.5)]
    assert history(agent, run.run_id, "acc") == [(expected, 0.75)]


@pytest.mark.parametrize(
    "step",
    [True, -1, 1.5, float("nan"), float("inf"), 2**63, "3", np.arange(2),
     torch.tensor(-4)],
)
def test_bad_steps_rejected_before_sending(agent_factory: Any, step: object) -> None:
    agent = agent_factory()

    with agent.start_run() as run:
        with pytest.raises(InvalidInputError, match="step"):
            agent.log_metric("loss", 0.5, step=step)
        with pytest.raises(InvalidInputError, match="step"):
            agent.log_metrics({"acc": 0.5, "f1": 0.1}, step=step)

    assert stored_run(agent, run.run_id).data.metrics == {}


def test_large_step_over_the_rest_server(server_agent_factory: Any) -> None:
    agent = server_agent_factory(PATIENT_PROBE)

    with agent.start_run() as run:
        agent.log_metric("loss", 1.0, step=np.int64(MAX_STEP))
        agent.log_metric("loss", 2.0, step=2.0)

    assert history(agent, run.run_id, "loss") == [(2, 2.0), (MAX_STEP, 1.0)]


steps = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(),
    st.integers(min_value=0, max_value=2**40).map(float),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(np.int64),
    st.text(max_size=3),
)


def test_property_steps_through_the_agent(agent_factory: Any) -> None:
    agent = agent_factory()

    @THROUGH_AGENT
    @given(step=steps)
    def check(step: object) -> None:
        with agent.start_run() as run:
            try:
                agent.log_metric("m", 1.0, step=step)
            except InvalidInputError:
                accepted = False
            else:
                accepted = True
        stored = history(agent, run.run_id, "m")

        if not accepted:
            assert stored == []
            return
        expected = 0 if step is None else int(step)  # type: ignore[call-overload]
        assert stored == [(expected, 1.0)]
        assert 0 <= expected <= MAX_STEP
        assert step is None or expected == step

    check()
