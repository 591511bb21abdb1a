"""Deciding whether a registered model is safe to load, then loading it.

The client backend downloads a version's ``MLmodel`` file first and asks
:func:`assess` what loading would involve. Formats that run code stored in the
registry when deserialized (pickle, cloudpickle, bundled code directories,
``python_function`` models this module cannot inspect) are refused unless the
caller allowed them; the refusal happens before the model's files are downloaded.

Formats treated as safe by default:

* PyTorch models saved in the ``pt2`` (``torch.export``) format, without a code
  directory. The archive is additionally checked with MLflow's pickle-free
  validator before ``torch.export.load`` reads it.
* scikit-learn models saved with ``skops`` that do not ask skops to trust extra
  types (the trusted-type list is written by the model's author, so a list in the
  ``MLmodel`` file is as unsafe as pickle).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from ..errors import AgentError, UnsafeModelError

logger = logging.getLogger(__name__)

PYTORCH = "pytorch"
SKLEARN = "sklearn"
PYFUNC = "python_function"

PT2_FILE = "model.pt2"
PICKLE_FILE = "model.pth"

ALLOW_HINT = (
    "If you trust everyone who can write to this registry, allow it with "
    "`client: {allow_pickle: true}` in agent.yaml, or per call with "
    "load_model(uri, allow_pickle=True)."
)


@dataclass(frozen=True)
class LoadPlan:
    """How one model version will be loaded, decided from its ``MLmodel`` file.

    ``unsafe`` is ``None`` for formats that load without running stored code,
    otherwise the reason in words. ``keep_files`` is true when the loaded object
    may still read the downloaded files (bundled code, ``python_function`` models).
    """

    flavor: str
    detail: str
    unsafe: str | None
    keep_files: bool = False

    @property
    def pickled_torch(self) -> bool:
        return self.flavor == PYTORCH and self.detail == "pickle"


def assess(
    flavors: Mapping[str, Mapping[str, Any]], list_dir: Callable[[str], Sequence[str]]
) -> LoadPlan:
    """Pick the loader for ``flavors`` (from ``MLmodel``) and judge its safety.

    ``list_dir(path)`` returns the file names in a directory of the model's
    artifacts; it is called only for PyTorch models, whose ``MLmodel`` does not say
    which serialization format was used.
    """
    code = _bundled_code(flavors)
    if PYTORCH in flavors:
        plan = _assess_pytorch(flavors[PYTORCH], list_dir)
    elif SKLEARN in flavors:
        plan = _assess_sklearn(flavors[SKLEARN])
    elif PYFUNC in flavors:
        plan = _assess_pyfunc(flavors)
    else:
        raise AgentError(
            f"the model has flavors {sorted(flavors)}, none of which this client can "
            f"load (it loads {PYTORCH}, {SKLEARN} and {PYFUNC}); load it with the "
            "matching mlflow.<flavor>.load_model instead"
        )
    if code is not None:
        reason = (
            f"it ships a code directory ({code!r}) that loading puts on sys.path, so "
            "later imports can run code from the registry"
        )
        return LoadPlan(plan.flavor, plan.detail, plan.unsafe or reason, True)
    return plan


def refuse(uri: str, plan: LoadPlan) -> UnsafeModelError:
    """The error for loading ``uri`` when ``plan`` is unsafe and not allowed."""
    return UnsafeModelError(
        f"load_model({uri!r}) refused: {plan.unsafe}. Loading such a model runs code "
        f"taken from the registry in this process. {ALLOW_HINT}"
    )


def load(directory: Path, plan: LoadPlan, *, allowed: bool) -> Any:
    """Deserialize the model downloaded to ``directory`` according to ``plan``."""
    try:
        if plan.flavor == PYTORCH:
            return _load_pytorch(directory, plan, allowed=allowed)
        if plan.flavor == SKLEARN:
            return mlflow.sklearn.load_model(str(directory))
        return mlflow.pyfunc.load_model(str(directory))
    except MlflowException as exc:
        if "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" in exc.message:
            raise _blocked_by_mlflow(exc, allowed=allowed) from exc
        raise


def _bundled_code(flavors: Mapping[str, Mapping[str, Any]]) -> str | None:
    for conf in flavors.values():
        code = conf.get("code") if isinstance(conf, Mapping) else None
        if code:
            return str(code)
    return None


def _assess_pytorch(
    conf: Mapping[str, Any], list_dir: Callable[[str], Sequence[str]]
) -> LoadPlan:
    # MLflow writes the same pytorch flavor block for both formats; only the file
    # name in the data directory tells them apart (model.pt2 or model.pth).
    data_dir = str(conf.get("model_data", "data"))
    names = {name.rsplit("/", 1)[-1] for name in list_dir(data_dir)}
    if PT2_FILE in names:
        return LoadPlan(PYTORCH, "pt2", None)
    if PICKLE_FILE in names:
        return LoadPlan(
            PYTORCH,
            "pickle",
            "it is a PyTorch model saved in the pickle format (model.pth), and "
            "unpickling runs whatever code the file names. Register it in the pt2 "
            "format (with an input example) to load it without this switch",
        )
    return LoadPlan(
        PYTORCH,
        "unknown",
        f"its PyTorch data directory {data_dir!r} holds neither {PT2_FILE} nor "
        f"{PICKLE_FILE} (found: {sorted(names)}), so its format cannot be checked",
    )


def _assess_sklearn(conf: Mapping[str, Any]) -> LoadPlan:
    # MLflow's own default when the key is absent (models saved by old versions).
    fmt = str(conf.get("serialization_format", "pickle"))
    if fmt == "skops":
        trusted = conf.get("skops_trusted_types") or []
        if not trusted:
            return LoadPlan(SKLEARN, fmt, None)
        return LoadPlan(
            SKLEARN,
            fmt,
            "it is a skops model whose MLmodel asks skops to trust extra types "
            f"({', '.join(map(str, trusted))}); that list comes from the model's "
            "author, so it can admit types that run code",
        )
    return LoadPlan(
        SKLEARN,
        fmt,
        f"it is a scikit-learn model saved with {fmt}, and unpickling runs whatever "
        "code the file names. Register it with serialization_format='skops' to load "
        "it without this switch",
    )


def _assess_pyfunc(flavors: Mapping[str, Mapping[str, Any]]) -> LoadPlan:
    loader = flavors[PYFUNC].get("loader_module", "mlflow.pyfunc.model")
    return LoadPlan(
        PYFUNC,
        str(loader),
        f"it loads through python_function (loader {loader}, flavors "
        f"{sorted(flavors)}), whose formats, such as cloudpickled Python models, "
        "this client cannot check for stored code",
        keep_files=True,
    )


def _load_pytorch(directory: Path, plan: LoadPlan, *, allowed: bool) -> Any:
    import mlflow.pytorch

    if plan.pickled_torch:
        return mlflow.pytorch.load_model(
            str(directory), map_location=_pickle_map_location()
        )
    if not allowed:
        _check_pt2_archive(directory)
    return mlflow.pytorch.load_model(str(directory))


def _pickle_map_location() -> Any:
    """Where pickled tensors go: the CPU when there is no CUDA device.

    A model pickled on a GPU host otherwise fails to load on a CPU-only host. With
    CUDA present, ``None`` keeps PyTorch's behaviour: tensors return to the device
    they were saved from.
    """
    import torch

    return None if torch.cuda.is_available() else "cpu"


def _check_pt2_archive(directory: Path) -> None:
    # torch.export.load unpickles some records of a pt2 archive. MLflow only runs
    # its pickle-free check when MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false (its
    # default is true), so the check is run here whenever pickle is not allowed.
    import mlflow.pytorch

    validate = getattr(mlflow.pytorch, "_validate_pt2_archive_is_pickle_free", None)
    if validate is None:
        logger.warning(
            "This MLflow version cannot check pt2 archives for pickle payloads; "
            "loading %s as MLflow does",
            directory,
        )
        return
    for archive in sorted(directory.rglob(PT2_FILE)):
        try:
            validate(str(archive))
        except MlflowException as exc:
            raise UnsafeModelError(
                f"the pt2 archive {archive.name} holds records that are not plain "
                f"tensors, and reading them runs pickle ({exc.message}). {ALLOW_HINT}"
            ) from exc


def _blocked_by_mlflow(exc: MlflowException, *, allowed: bool) -> UnsafeModelError:
    if allowed:
        return UnsafeModelError(
            "MLflow refused to deserialize the model because the environment "
            "variable MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false; that switch "
            "overrides allow_pickle. Unset it (or set it to true) to load this "
            f"model. MLflow said: {exc.message}"
        )
    return UnsafeModelError(f"MLflow refused to deserialize the model: {exc.message}")
