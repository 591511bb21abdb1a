"""The sklearn registry backend against a real sqlite store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import sklearn
import torch
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


def nothing_was_sent() -> None:
    client = MlflowClient()
    assert client.search_registered_models() == []
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_logged_models(experiment_ids=experiments) == []


COLUMNS = ["a", "b", "c", "d"]
GOOD_EXAMPLES = {
    "array": X[:2],
    "data frame": pd.DataFrame(X[:2], columns=COLUMNS),
    "list of rows": X[:2].tolist(),
    "dict of columns": {name: X[:2, i] for i, name in enumerate(COLUMNS)},
    "dict of one row": {name: float(X[0, i]) for i, name in enumerate(COLUMNS)},
    "sparse matrix": scipy.sparse.csr_matrix(X[:2]),
}


@pytest.mark.parametrize("case", sorted(GOOD_EXAMPLES))
def test_every_accepted_example_form_is_registered(
    registry_agent: Any, case: str
) -> None:
    model = make_pipeline(StandardScaler(with_mean=False), LogisticRegression())
    model.fit(pd.DataFrame(X, columns=COLUMNS) if "dict" in case else X, Y)

    version = backend(registry_agent).register_model(
        model, "churn", run=None, input_example=GOOD_EXAMPLES[case]
    )

    assert version.tags["mlflow_agent.serialization_format"] == "skops"
    assert (model_dir("churn", version.version) / "input_example.json").is_file()


BAD_EXAMPLES = {
    "tensor": (torch.randn(2, 4), "of type torch.Tensor", "example.numpy()"),
    "dict of tensors": ({"x": torch.randn(2, 4)}, "a dict whose entries ['x']", ""),
    "tuple": ((X[:2],), "of type tuple", "np.asarray(example)"),
    "set": ({1.0, 2.0}, "of type set", ""),
    "number": (3, "of type int (3)", ""),
    "text": ("rows", "of type str ('rows')", ""),
    "empty list": ([], "an empty list", ""),
    "empty dict": ({}, "an empty dict", ""),
}


@pytest.mark.parametrize("case", sorted(BAD_EXAMPLES))
def test_an_unsupported_example_is_refused_before_anything_is_sent(
    registry_agent: Any, case: str
) -> None:
    example, what, fix = BAD_EXAMPLES[case]

    with pytest.raises(InvalidInputError) as caught:
        backend(registry_agent).register_model(
            plain_pipeline(), "churn", run=None, input_example=example
        )

    message = str(caught.value)
    assert message.startswith("input_example is ")
    assert what in message and fix in message
    assert "a numpy array, a pandas DataFrame" in message
    nothing_was_sent()


BROKEN_EXAMPLES = {
    "wrong width": (plain_pipeline, np.ones((2, 7)), "ValueError: X has 7 features"),
    "not fitted": (LogisticRegression, X[:2], "NotFittedError: This Logistic"),
    "missing values": (plain_pipeline, np.full((2, 4), np.nan), "contains NaN"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_EXAMPLES))
def test_an_example_the_estimator_rejects_is_an_input_error_with_its_text(
    registry_agent: Any, case: str
) -> None:
    build, example, text = BROKEN_EXAMPLES[case]
    model = build()

    with pytest.raises(InvalidInputError) as caught:
        backend(registry_agent).register_model(
            model, "churn", run=None, input_example=example
        )

    message = str(caught.value)
    assert f"does not run through the {type(model).__name__} estimator" in message
    assert text in message
    nothing_was_sent()


def test_sklearn_selected_for_a_torch_module_names_what_it_takes(
    registry_agent: Any,
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        backend(registry_agent).register_model(
            torch.nn.Linear(4, 2), "churn", run=None, input_example=X[:2]
        )

    message = str(caught.value)
    assert "'sklearn' registry backend cannot register a torch.nn" in message
    assert "it registers scikit-learn estimators" in message
    assert "Installed registry backends: auto, pytorch, sklearn" in message
    nothing_was_sent()


def test_supports_estimators_only(registry_agent: Any) -> None:
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
