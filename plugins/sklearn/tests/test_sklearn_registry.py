"""The sklearn registry backend against a real sqlite store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import sklearn
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from mlflow_agent_core.config import Options
from mlflow_agent_core.errors import ConfigError, InvalidInputError
from mlflow_agent_sklearn import SklearnRegistry

X = np.random.default_rng(0).normal(size=(60, 4))
Y = (X[:, 0] + X[:, 1] > 0).astype(int)


def doubled(values: np.ndarray) -> np.ndarray:
    return values * 2


def plain_pipeline() -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y)


def custom_pipeline() -> Any:
    return make_pipeline(FunctionTransformer(doubled), LogisticRegression()).fit(X, Y)


def backend(agent: Any, **options: Any) -> SklearnRegistry:
    return SklearnRegistry(agent=agent, options=Options(options, section="registry"))


def model_dir(name: str, version: str) -> Path:
    return Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))


def warnings_from(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.name == "mlflow_agent_sklearn.registry" and r.levelno == logging.WARNING
    ]


def test_a_plain_estimator_is_saved_with_skops(
    registry_agent: Any,
    agent_logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = plain_pipeline()

    version = backend(registry_agent).register_model(
        model, "churn", run=None, input_example=X[:3]
    )

    files = model_dir("churn", version.version)
    assert (files / "model.skops").is_file()
    flavor = mlflow.models.Model.load(str(files / "MLmodel")).flavors["sklearn"]
    assert flavor["serialization_format"] == "skops"
    assert version.tags["mlflow_agent.serialization_format"] == "skops"
    assert warnings_from(agent_logs) == []
    assert (files / "requirements.txt").read_text().split() == [
        f"mlflow=={mlflow.__version__}",
        f"scikit-learn=={sklearn.__version__}",
        f"skops=={_version('skops')}",
    ]

    # MLflow gates every sklearn format behind this switch, skops included.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    loaded = mlflow.sklearn.load_model(f"models:/churn/{version.version}")
    assert (loaded.predict(X) == model.predict(X)).all()


def test_a_custom_function_falls_back_to_cloudpickle_with_one_warning(
    registry_agent: Any, agent_logs: pytest.LogCaptureFixture
) -> None:
    version = backend(registry_agent).register_model(
        custom_pipeline(), "churn", run=None
    )

    files = model_dir("churn", version.version)
    assert (files / "model.pkl").is_file()
    assert version.tags["mlflow_agent.serialization_format"] == "cloudpickle"
    ours = warnings_from(agent_logs)
    assert len(ours) == 1 and "doubled" in ours[0] and "cloudpickle" in ours[0]
    assert not any("exercising caution" in r.getMessage() for r in agent_logs.records)
    requirements = (files / "requirements.txt").read_text().split()
    assert f"cloudpickle=={_version('cloudpickle')}" in requirements


def test_skops_with_untrusted_types_is_refused_before_anything_is_sent(
    registry_agent: Any,
) -> None:
    with pytest.raises(InvalidInputError, match="skops would have to trust"):
        backend(registry_agent, format="skops").register_model(
            custom_pipeline(), "churn", run=None
        )
    assert MlflowClient().search_registered_models() == []


def test_trusted_types_let_skops_save_custom_parts(registry_agent: Any) -> None:
    trusted = [f"{__name__}.doubled"]

    version = backend(
        registry_agent, format="skops", skops_trusted_types=trusted
    ).register_model(custom_pipeline(), "churn", run=None)

    flavor = mlflow.models.Model.load(
        str(model_dir("churn", version.version) / "MLmodel")
    ).flavors["sklearn"]
    assert flavor["serialization_format"] == "skops"
    assert flavor["skops_trusted_types"] == trusted


def test_explicit_pickle_is_used_as_asked(registry_agent: Any) -> None:
    version = backend(registry_agent).register_model(
        plain_pipeline(), "churn", run=None, format="pickle"
    )

    assert version.tags["mlflow_agent.serialization_format"] == "pickle"
    flavor = mlflow.models.Model.load(
        str(model_dir("churn", version.version) / "MLmodel")
    ).flavors["sklearn"]
    assert flavor["serialization_format"] == "pickle"


def test_supports_estimators_only(registry_agent: Any) -> None:
    import torch

    registry = backend(registry_agent)
    assert registry.supports(LogisticRegression())
    assert registry.supports(plain_pipeline())
    assert not registry.supports(torch.nn.Linear(2, 2))
    assert not registry.supports({"weights": [1, 2]})


def test_bad_options_are_config_errors(registry_agent: Any) -> None:
    with pytest.raises(ConfigError, match="registry.format"):
        backend(registry_agent, format="joblib")
    with pytest.raises(ConfigError, match="skops_trusted_types"):
        backend(registry_agent, skops_trusted_types="mypkg.Thing")


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)
