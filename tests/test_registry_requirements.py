"""Pip requirements computed from installed distributions, and per-call options."""

from __future__ import annotations

import json
import logging
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pluggy
import pytest
from sklearn.linear_model import LogisticRegression

from mlflow_agent_core.config import Options
from mlflow_agent_core.default_plugins.registry import (
    MlflowRegistry,
    RegistryOptions,
    distributions_of,
    mlflow_requirement,
    pinned_requirement,
)
from mlflow_agent_core.errors import InvalidInputError


class LocalThing:
    """A class from this test module, which no installed distribution provides."""


def test_distributions_of_finds_the_owners_of_classes_and_functions() -> None:
    objects = [
        LogisticRegression(),
        np.float32(1.0),
        pluggy.PluginManager,
        pluggy.HookimplMarker("x"),
        json.dumps,
        Path("."),
        LocalThing(),
    ]

    owners, unowned = distributions_of(objects)

    assert owners == ["scikit-learn", "numpy", "pluggy"]
    assert unowned == [LocalThing.__module__.partition(".")[0]]


def test_pins_drop_local_version_labels_and_skip_missing_distributions() -> None:
    torch_version = metadata.version("torch")

    assert pinned_requirement("torch") == f"torch=={torch_version.split('+')[0]}"
    assert pinned_requirement("surely-not-installed-dist") is None
    assert mlflow_requirement() == f"mlflow=={metadata.version('mlflow')}"


class RecordingRegistry(MlflowRegistry):
    """A backend with no I/O, to look at what the base class hands it."""

    backend_name = "recording"

    def supports(self, model: object) -> bool:
        return True


def test_requirement_kwargs_pin_mlflow_first_and_warn_once_per_unowned_module(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = RecordingRegistry(agent=None, options={"extra_requirements": ["a>=1"]})
    caplog.set_level(logging.WARNING)

    first = registry.requirement_kwargs(
        registry.options, ["scikit-learn", "mlflow-skinny"], [LocalThing(), np.ones(1)]
    )
    registry.requirement_kwargs(registry.options, [], [LocalThing()])

    assert first == {
        "pip_requirements": [
            mlflow_requirement(),
            pinned_requirement("scikit-learn"),
            pinned_requirement("numpy"),
            "a>=1",
        ]
    }
    unowned = [r for r in caplog.records if "no installed distribution" in r.message]
    assert len(unowned) == 1


def test_infer_requirements_leaves_them_to_mlflow() -> None:
    registry = RecordingRegistry(
        agent=None, options={"infer_requirements": True, "extra_requirements": ["b"]}
    )

    assert registry.requirement_kwargs(registry.options, ["torch"]) == {
        "extra_pip_requirements": ["b"]
    }


def test_call_options_merge_over_configured_ones() -> None:
    registry = RecordingRegistry(
        agent=None,
        options=Options({"extra_requirements": ["a"]}, section="registry"),
    )

    merged: Any = registry._call_options({"await_registration": 5})

    assert merged == RegistryOptions(extra_requirements=["a"], await_registration=5.0)
    assert registry._call_options({}) is registry.options
    with pytest.raises(InvalidInputError, match="await_registration"):
        registry._call_options({"await_registration": -1})
    with pytest.raises(InvalidInputError, match="unknown key 'stage_alias'"):
        registry._call_options({"stage_alias": False})
