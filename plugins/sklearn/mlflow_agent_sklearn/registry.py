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
