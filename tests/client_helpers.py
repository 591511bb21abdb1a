"""Builders shared by the client backend tests: real models in real registries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils

from mlflow_agent_core.config import Options
from mlflow_agent_core.default_plugins.client import MlflowClientStrategy

EXAMPLE = np.ones((2, 3), dtype=np.float32)
EXPERIMENT = "client-tests"


def stand_in_agent(uri: str) -> SimpleNamespace:
    """The part of an agent a client strategy reads: the configured URIs."""
    return SimpleNamespace(
        configuration=SimpleNamespace(tracking_uri=uri, registry_uri=uri)
    )


def make_client(uri: str, **options: Any) -> MlflowClientStrategy:
    """A client strategy on ``uri`` with ``options`` as its agent.yaml section."""
    return MlflowClientStrategy(
        agent=stand_in_agent(uri), options=Options(options, section="client")
    )


def sqlite_store(root: Path) -> str:
    """A fresh sqlite tracking URI under ``root`` (artifacts next to it)."""
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


@contextmanager
def mlflow_at(uri: str) -> Iterator[MlflowClient]:
    """Plain mlflow calls go to ``uri`` inside the block, then back."""
    # The registry URI too: an agent built earlier in the session may have set
    # it. MLflow keeps both in module globals and exports them to the
    # environment; all of it is put back exactly as it was.
    previous_tracking = tracking_utils._tracking_uri
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_REGISTRY_URI", uri)
        patch.setattr(registry_utils, "_registry_uri", uri)
        mlflow.set_tracking_uri(uri)
        try:
            yield MlflowClient(tracking_uri=uri, registry_uri=uri)
        finally:
            mlflow.set_tracking_uri(previous_tracking)


@contextmanager
def run_at(uri: str) -> Iterator[None]:
    """A run in the experiment ``client-tests`` of ``uri``.

    On a sqlite store the experiment's artifacts go next to the database, never
    into the current directory.
    """
    with mlflow_at(uri) as client:
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            experiment_id = client.create_experiment(
                EXPERIMENT, artifact_location=_artifacts_for(uri)
            )
        else:
            experiment_id = experiment.experiment_id
        with mlflow.start_run(experiment_id=experiment_id):
            yield


def _artifacts_for(uri: str) -> str | None:
    if not uri.startswith("sqlite:///"):
        return None  # a server decides where artifacts go
    return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()


def linear(weight: float) -> torch.nn.Module:
    """A 3 -> 1 linear model answering ``3 * weight`` for an input of ones."""
    model = torch.nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.fill_(weight)
        model.bias.zero_()
    return model


def answer(model: Any) -> float:
    """What a model from :func:`linear` says for one row of ones."""
    with torch.no_grad():
        return float(model(torch.ones(1, 3)).reshape(-1)[0])


def register_torch(uri: str, name: str, weight: float, fmt: str = "pt2") -> str:
    """Register :func:`linear` ``(weight)`` under ``name``; return the version."""
    with run_at(uri):
        kwargs: dict[str, Any] = {"serialization_format": fmt}
        if fmt == "pt2":
            kwargs["input_example"] = EXAMPLE
        info = mlflow.pytorch.log_model(
            linear(weight),
            name="model",
            pip_requirements=["torch"],
            registered_model_name=name,
            **kwargs,
        )
    return str(info.registered_model_version)


def register_sklearn(uri: str, name: str, fmt: str) -> str:
    """Register a fitted linear regression (y = sum of x) saved with ``fmt``."""
    from sklearn.linear_model import LinearRegression

    features = np.arange(12.0).reshape(4, 3)
    estimator = LinearRegression().fit(features, features.sum(axis=1))
    with run_at(uri):
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            serialization_format=fmt,
            pip_requirements=["scikit-learn"],
            registered_model_name=name,
        )
    return str(info.registered_model_version)


class EchoModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """A python_function model; MLflow stores it with cloudpickle."""

    # list[...] because MLflow warns about any other hint on predict's input.
    def predict(
        self, context: Any, model_input: list[str], params: Any = None
    ) -> list[str]:
        return model_input


def register_pyfunc(uri: str, name: str) -> str:
    with run_at(uri):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=EchoModel(),
            pip_requirements=["mlflow"],
            registered_model_name=name,
        )
    return str(info.registered_model_version)


def download_dirs(root: Path) -> list[Path]:
    """Version directories the client created under its cache_dir."""
    return sorted(path for path in root.glob("*/v*") if path.is_dir())
