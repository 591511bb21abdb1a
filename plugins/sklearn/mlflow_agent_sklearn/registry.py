"""The ``sklearn`` registry backend: scikit-learn estimators, skops by default.

Formats (option ``format``):

* ``skops``: a data-only archive; loading it builds only types skops trusts
  (scikit-learn's and numpy's by default), so it runs no code from the registry.
* ``cloudpickle`` / ``pickle``: any estimator, including custom classes and
  functions, but loading runs code from the registry, so the agent's
  ``load_model`` refuses them unless allowed.
* ``auto`` (default): ``skops`` when the estimator needs no extra trusted types,
  else ``cloudpickle`` with one log line saying why.
"""

from __future__ import annotations

import logging
import reprlib
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from mlflow_agent_core.default_plugins.registry import (
    MlflowRegistry,
    RegistryOptions,
    SavedModel,
    quiet_pickle_caution,
)
from mlflow_agent_core.errors import InvalidInputError

__all__ = ["SklearnOptions", "SklearnRegistry"]

logger = logging.getLogger(__name__)

Format = Literal["auto", "skops", "cloudpickle", "pickle"]

_FORMAT_DISTRIBUTIONS = {
    "skops": ["scikit-learn", "skops"],
    "cloudpickle": ["scikit-learn", "cloudpickle"],
    "pickle": ["scikit-learn"],
}
_MESSAGE_LIMIT = 400
_EXAMPLE_FORMS = (
    "a numpy array, a pandas DataFrame, a non-empty list of rows, a dict of column "
    "name to values, or a scipy.sparse csr/csc matrix"
)


@dataclass
class SklearnOptions(RegistryOptions):
    """Options of ``registry: {backend: sklearn}`` (and of ``register_model`` calls)."""

    format: Format = field(
        default="auto",
        metadata={"help": "'skops', 'cloudpickle', 'pickle', or 'auto': skops when "
                  "the estimator needs no extra trusted types, else cloudpickle"},
    )
    skops_trusted_types: list[str] = field(
        default_factory=list,
        metadata={"help": "extra types skops may build when loading, e.g. "
                  "'mypackage.MyTransformer'; loaders must trust them too"},
    )


class SklearnRegistry(MlflowRegistry):
    """Registers scikit-learn estimators with MLflow's ``sklearn`` flavor."""

    backend_name = "sklearn"
    options_class = SklearnOptions
    supported_models = "scikit-learn estimators (sklearn.base.BaseEstimator)"

    def supports(self, model: object) -> bool:
        # Without scikit-learn imported, nothing can be an estimator: no import.
        base = sys.modules.get("sklearn.base")
        return base is not None and isinstance(model, base.BaseEstimator)

    def _save_model(
        self,
        model: Any,
        path: str,
        *,
        options: SklearnOptions,
        input_example: Any,
    ) -> SavedModel:
        import mlflow.sklearn

        if input_example is not None:
            _check_example(model, input_example)
        serialization_format = self._choose_format(model, options)
        # Every format rebuilds the estimator's classes, so their packages count.
        requirements = self.requirement_kwargs(
            options,
            _FORMAT_DISTRIBUTIONS[serialization_format],
            _estimator_parts(model),
        )
        skops = serialization_format == "skops"
        trusted = (options.skops_trusted_types or None) if skops else None
        with quiet_pickle_caution("mlflow.sklearn"):
            mlflow.sklearn.save_model(
                model,
                path,
                serialization_format=serialization_format,
                input_example=input_example,
                skops_trusted_types=trusted,
                **requirements,
            )
        return SavedModel(serialization_format)

    def _choose_format(self, model: Any, options: SklearnOptions) -> str:
        if options.format in ("cloudpickle", "pickle"):
            return options.format

        problem = _skops_problem(model, options.skops_trusted_types)
        if options.format == "skops":
            if problem is not None:
                raise InvalidInputError(
                    f"format 'skops' cannot be used for the {type(model).__name__} "
                    f"estimator: {problem}. List trusted types in "
                    "skops_trusted_types, or choose format='cloudpickle'"
                )
            return "skops"
        if problem is None:
            return "skops"

        logger.warning(
            "Registering the %s estimator in the cloudpickle format because %s; "
            "cloudpickle models run code when loaded, so load_model refuses them "
            "unless allowed. To choose cloudpickle knowingly set registry: "
            "{format: cloudpickle}",
            type(model).__name__,
            problem,
        )
        return "cloudpickle"


def _check_example(model: Any, input_example: Any) -> None:
    """Refuse an example MLflow cannot store or the estimator cannot take."""
    problem = _example_problem(input_example)
    if problem is not None:
        raise InvalidInputError(
            f"input_example is {problem}; the sklearn backend takes {_EXAMPLE_FORMS}"
        )

    # MLflow's pyfunc calls predict; a transformer-only pipeline is served by
    # transform. Estimators with neither are not run.
    method = getattr(model, "predict", None) or getattr(model, "transform", None)
    if method is None:
        return
    try:
        method(_as_estimator_input(input_example))
    except Exception as exc:
        text = " ".join(str(exc).split())[:_MESSAGE_LIMIT].rstrip(".")
        raise InvalidInputError(
            f"input_example does not run through the {type(model).__name__} "
            f"estimator: {type(exc).__name__}: {text}. Pass a fitted estimator and "
            "rows shaped like its training data"
        ) from exc


def _example_problem(value: Any) -> str | None:
    """What is wrong with the form of an input example, or None when it is fine."""
    import numpy as np

    if isinstance(value, np.ndarray) or _is_dataframe(value) or _is_sparse(value):
        return None
    if isinstance(value, list):
        return None if value else "an empty list"
    if isinstance(value, dict):
        if not value:
            return "an empty dict"
        bad = [key for key, item in value.items() if not _is_column(item)]
        if bad or not all(isinstance(key, str) for key in value):
            return (
                f"a dict whose entries {reprlib.repr(bad or list(value))} are not "
                "column name (str) to a numpy array, list or number"
            )
        return None
    return f"of type {_qualified(value)} ({reprlib.repr(value)}){_example_hint(value)}"


def _example_hint(value: Any) -> str:
    if _qualified(value) == "torch.Tensor":
        return ": convert it with example.numpy()"
    if isinstance(value, tuple):
        return ": pass it as a list or np.asarray(example)"
    return ""


def _is_column(value: Any) -> bool:
    import numpy as np

    return isinstance(value, (np.ndarray, list, str, int, float, bool, np.generic))


def _is_dataframe(value: Any) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _is_sparse(value: Any) -> bool:
    sparse = sys.modules.get("scipy.sparse")
    if sparse is None or not sparse.issparse(value):
        return False
    return getattr(value, "format", None) in ("csr", "csc")


def _as_estimator_input(example: Any) -> Any:
    # MLflow stores a dict as a table: one row when every value is a scalar.
    if not isinstance(example, dict):
        return example
    import pandas

    if all(not isinstance(item, (list, tuple)) and getattr(item, "ndim", 0) == 0
           for item in example.values()):
        return pandas.DataFrame([example])
    return pandas.DataFrame(example)


def _qualified(value: Any) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _skops_problem(model: Any, trusted: list[str]) -> str | None:
    """Why skops cannot save and reload ``model`` safely, or None when it can."""
    try:
        import skops.io
    except ImportError:
        return "skops is not installed (pip install skops)"

    try:
        data = skops.io.dumps(model)
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:
        text = " ".join(str(exc).split())[:_MESSAGE_LIMIT]
        return f"skops cannot serialize it ({type(exc).__name__}: {text})"
    missing = [name for name in untrusted if name not in trusted]
    if missing:
        return f"skops would have to trust {', '.join(missing)} to load it"
    return None


def _estimator_parts(model: Any) -> list[object]:
    """The estimator, the estimators and functions among its params, recursively."""
    return list(_walk(model, set()))


def _walk(value: Any, seen: set[int]) -> Iterator[object]:
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, types.FunctionType):
        yield value
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item, seen)
        return
    get_params = getattr(value, "get_params", None)
    if get_params is None or isinstance(value, type):
        return
    yield value
    try:
        params = get_params(deep=False)
    except Exception:
        return
    for param in params.values():
        yield from _walk(param, seen)
