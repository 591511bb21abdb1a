"""The ``pytorch`` registry backend: ``torch.nn.Module`` models, pt2 by default.

Formats (option ``format``):

* ``pt2`` (``torch.export``): a traced graph plus weights, loaded without running
  stored Python code. Tracing needs an input example; with ``dynamic_batch`` the
  first dimension of every input stays symbolic, so a model registered with a batch
  of one serves any batch size.
* ``pickle``: the whole module pickled with cloudpickle. Needs no example, but
  loading it runs code from the registry, so the agent's ``load_model`` refuses it
  unless allowed.
* ``auto`` (default): ``pt2`` when an input example is given, else ``pickle`` with
  one log line saying why and how to get ``pt2``.

Devices: a model whose tensors are on an accelerator is registered from a CPU copy
(the caller's model stays where it is), so it loads on CPU-only hosts; the original
device is kept in the version tag ``mlflow_agent.device``. A model on the ``meta``
device holds no weights and is refused.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import reprlib
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mlflow_agent_core.default_plugins.registry import (
    DEVICE_TAG,
    MlflowRegistry,
    RegistryOptions,
    SavedModel,
    quiet_pickle_caution,
)
from mlflow_agent_core.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["PytorchOptions", "PytorchRegistry"]

logger = logging.getLogger(__name__)

Format = Literal["auto", "pt2", "pickle"]

_PT2_FILE = os.path.join("data", "model.pt2")
_MESSAGE_LIMIT = 600
_EXAMPLE_FORMS = (
    "a torch.Tensor or numeric numpy array (the argument of forward()), or a "
    "non-empty tuple or list of them (one per forward() argument)"
)
# numpy dtype kinds a tensor can hold: bool, signed, unsigned, float, complex.
_NUMERIC_KINDS = "biufc"


@dataclass
class PytorchOptions(RegistryOptions):
    """Options of ``registry: {backend: pytorch}`` (and of ``register_model`` calls)."""

    format: Format = field(
        default="auto",
        metadata={"help": "'pt2' (needs input_example), 'pickle', or 'auto': pt2 "
                  "when an input example is given, else pickle"},
    )
    dynamic_batch: bool = field(
        default=True,
        metadata={"help": "pt2: keep the first dimension of every input dynamic so "
                  "any batch size works"},
    )


class PytorchRegistry(MlflowRegistry):
    """Registers ``torch.nn.Module`` models with MLflow's ``pytorch`` flavor."""

    backend_name = "pytorch"
    options_class = PytorchOptions
    supported_models = "torch.nn.Module models"

    def supports(self, model: object) -> bool:
        # Without torch imported, nothing can be a torch module: no import needed.
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(model, torch.nn.Module)

    def _save_model(
        self,
        model: Any,
        path: str,
        *,
        options: PytorchOptions,
        input_example: Any,
    ) -> SavedModel:
        devices = _devices(model)
        if any(device.type == "meta" for device in devices):
            raise InvalidInputError(
                f"the {type(model).__name__} model has tensors on the 'meta' device, "
                "which hold no values, so there is nothing to register. Materialize "
                "it first (model.to_empty(device='cpu') then load_state_dict(...))"
            )

        arrays = _example_arrays(input_example)
        serialization_format = self._choose_format(model, options, input_example)
        with _cpu_eval_copy(model, devices) as ready:
            if arrays is not None:
                _run_example(ready, arrays)
            if serialization_format == "pt2" and arrays is not None:
                self._save_pt2(ready, path, arrays, options)
            else:
                self._save_pickle(ready, path, arrays, options)
        return SavedModel(serialization_format, {DEVICE_TAG: _device_text(devices)})

    # Format

    def _choose_format(
        self, model: Any, options: PytorchOptions, input_example: Any
    ) -> str:
        problem = _pt2_problem(model, input_example)
        if options.format == "pickle":
            return "pickle"
        if options.format == "pt2":
            if problem is not None:
                raise InvalidInputError(
                    f"format 'pt2' cannot be used: {problem}. Pass input_example="
                    f"<{_EXAMPLE_FORMS}> to register_model, or choose format='pickle'"
                )
            return "pt2"
        if problem is None:
            return "pt2"

        logger.warning(
            "Registering the %s model in the pickle format because %s; pickle "
            "models run code when loaded, so load_model refuses them unless allowed. "
            "For the pt2 format pass input_example=<a batch of inputs> to "
            "register_model; to choose pickle knowingly set registry: "
            "{format: pickle}",
            type(model).__name__,
            problem,
        )
        return "pickle"

    # pt2

    def _save_pt2(
        self,
        model: torch.nn.Module,
        path: str,
        arrays: tuple[np.ndarray, ...],
        options: PytorchOptions,
    ) -> None:
        dynamic = options.dynamic_batch and all(a.ndim > 0 for a in arrays)
        if dynamic:
            # torch.export fixes dimensions of size 1; two rows keep the batch open.
            traced = tuple(_two_rows(a) for a in arrays)
            try:
                self._export(model, path, traced, options, dynamic=True)
                if _batch_is_dynamic(path):
                    return
                reason = "forward() fixes the batch size"
            except Exception as exc:
                reason = f"tracing with a dynamic batch failed ({_short(exc)})"
            shutil.rmtree(path, ignore_errors=True)
            logger.warning(
                "The %s model is registered with a fixed batch size of %s: %s. Call "
                "it with batches of exactly that size, or make forward() independent "
                "of the batch size",
                type(model).__name__,
                arrays[0].shape[0],
                reason,
            )
        try:
            self._export(model, path, arrays, options, dynamic=False)
        except Exception as exc:
            shutil.rmtree(path, ignore_errors=True)
            raise InvalidInputError(
                f"the {type(model).__name__} model could not be exported to pt2 with "
                f"this input_example: {_short(exc)}. Pass what forward() takes (same "
                "dtype and shape), or choose format='pickle'"
            ) from exc

    def _export(
        self,
        model: torch.nn.Module,
        path: str,
        arrays: tuple[np.ndarray, ...],
        options: PytorchOptions,
        *,
        dynamic: bool,
    ) -> None:
        import mlflow.pytorch

        signature = _signature(model, arrays, dynamic=dynamic)
        example = arrays[0] if len(arrays) == 1 else arrays
        mlflow.pytorch.save_model(
            model,
            path,
            serialization_format="pt2",
            input_example=example,
            signature=signature,
            **self.requirement_kwargs(options, ["torch"]),
        )

    # pickle

    def _save_pickle(
        self,
        model: torch.nn.Module,
        path: str,
        arrays: tuple[np.ndarray, ...] | None,
        options: PytorchOptions,
    ) -> None:
        import mlflow.pytorch
        import torch

        signature: Any = None
        example = None
        if arrays is not None:
            signature = _signature(model, arrays, dynamic=options.dynamic_batch)
            # MLflow's pyfunc feeds one array to forward(): several stay unsaved.
            example = arrays[0] if len(arrays) == 1 else None

        # Loading a pickle imports every module class, so their packages are needed.
        classes = {type(module) for module in model.modules()}
        scripted = isinstance(model, torch.jit.ScriptModule)
        requirements = self.requirement_kwargs(
            options, ["torch", "cloudpickle"], () if scripted else classes
        )
        with quiet_pickle_caution("mlflow.pytorch"):
            mlflow.pytorch.save_model(
                model,
                path,
                serialization_format="pickle",
                input_example=example,
                signature=signature,
                **requirements,
            )


# ------------------------------------------------------------------- helpers


def _devices(model: torch.nn.Module) -> set[torch.device]:
    """Where the model's tensors are, plus its own ``device`` attribute if any.

    Lightning and Hugging Face models report their device as ``model.device``.
    """
    import torch

    tensors = itertools.chain(model.parameters(), model.buffers())
    found = {tensor.device for tensor in tensors}
    declared = getattr(model, "device", None)
    if isinstance(declared, torch.device):
        found.add(declared)
    return found or {torch.device("cpu")}


def _device_text(devices: set[torch.device]) -> str:
    return ",".join(sorted(str(device) for device in devices))


@contextmanager
def _cpu_eval_copy(
    model: torch.nn.Module, devices: set[torch.device]
) -> Iterator[torch.nn.Module]:
    """The model in eval mode on CPU; the caller's model ends as it started.

    A model off the CPU is deep-copied and the copy moved, so the caller's keeps
    its device and tensors. A CPU model is used in place and each submodule's
    training flag is restored afterwards.
    """
    if any(device.type != "cpu" for device in devices):
        try:
            moved = copy.deepcopy(model).to("cpu")
        except Exception as exc:
            raise InvalidInputError(
                f"the {type(model).__name__} model is on {_device_text(devices)} and "
                f"a CPU copy of it could not be made ({_short(exc)}); move it with "
                "model.to('cpu') before registering"
            ) from exc
        left = {d for d in _devices(moved) if d.type != "cpu"}
        if left:
            raise InvalidInputError(
                f"the {type(model).__name__} model still reports {_device_text(left)} "
                "after .to('cpu'); move it to the CPU before registering"
            )
        logger.info(
            "Registering a CPU copy of the %s model (it is on %s), so it loads on "
            "any host",
            type(model).__name__,
            _device_text(devices),
        )
        yield moved.eval()
        return

    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


def _example_arrays(input_example: Any) -> tuple[np.ndarray, ...] | None:
    """The example as CPU numpy arrays, one per forward() argument; None for none.

    Raises InvalidInputError for any other form: MLflow's pytorch flavor passes
    examples to forward() positionally, as tensors.
    """
    if input_example is None:
        return None
    if not isinstance(input_example, (tuple, list)):
        return (_example_array(input_example, "input_example"),)
    if not input_example:
        raise InvalidInputError(
            f"input_example is an empty {type(input_example).__name__}; pass "
            f"{_EXAMPLE_FORMS}"
        )
    return tuple(
        _example_array(item, f"input_example[{index}]")
        for index, item in enumerate(input_example)
    )


def _example_array(value: Any, label: str) -> np.ndarray:
    import numpy as np

    if _is_tensor(value):
        array = _tensor_to_numpy(value, label)
    elif isinstance(value, np.ndarray):
        array = value
    else:
        raise InvalidInputError(_unsupported_example(value, label))
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise InvalidInputError(
            f"{label} is a numpy array of dtype {array.dtype}, which no tensor can "
            "hold; pass numbers, e.g. np.asarray(example, dtype=np.float32)"
        )
    return array


def _unsupported_example(value: Any, label: str) -> str:
    kind = _describe(value)
    if isinstance(value, Mapping):
        keys = ", ".join(repr(key) for key in list(value)[:5])
        return (
            f"{label} is a dict (keys {keys}); MLflow's pytorch flavor passes the "
            "example to forward() positionally, so keyword inputs are not supported. "
            f"Pass {_EXAMPLE_FORMS}, e.g. a tuple of the values in forward()'s order"
        )
    if kind.startswith("pandas."):
        return (
            f"{label} is a {kind}; pass its values as an array, e.g. "
            f"df.to_numpy(dtype='float32'). Accepted: {_EXAMPLE_FORMS}"
        )
    return (
        f"{label} is of type {kind} ({reprlib.repr(value)}); the pytorch backend takes "
        f"{_EXAMPLE_FORMS}. Wrap numbers with torch.tensor(...)"
    )


def _describe(value: Any) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _tensor_to_numpy(tensor: torch.Tensor, label: str) -> np.ndarray:
    import torch

    if tensor.device.type == "meta":
        raise InvalidInputError(
            f"{label} is a tensor on the 'meta' device, which holds no values; "
            "pass a real batch of inputs"
        )
    if tensor.layout != torch.strided:
        raise InvalidInputError(
            f"{label} is a {tensor.layout} tensor; pass a dense one, e.g. "
            "example.to_dense()"
        )
    try:
        return tensor.detach().cpu().numpy()
    except TypeError as exc:
        raise InvalidInputError(
            f"{label} has dtype {tensor.dtype}, which numpy cannot hold "
            f"({exc}); pass it as float32, e.g. example.float()"
        ) from exc


def _run_example(model: torch.nn.Module, arrays: tuple[np.ndarray, ...]) -> None:
    """Call the model on the example, so a broken one fails before any export."""
    import torch

    try:
        with torch.no_grad():
            model(*[torch.tensor(array) for array in arrays])
    except Exception as exc:
        raise InvalidInputError(
            f"input_example does not run through the {type(model).__name__} model: "
            f"{_short(exc)}. Pass what forward() takes: one tensor per argument, "
            "with the dtype and shape it expects"
        ) from exc


def _pt2_problem(model: Any, input_example: Any) -> str | None:
    """Why the pt2 format cannot be used, or None when it can."""
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        return "TorchScript modules cannot be exported with torch.export"
    if not hasattr(torch, "export") or not hasattr(torch.export, "save"):
        return f"torch {torch.__version__} has no torch.export (needs torch>=2.4)"
    if input_example is None:
        return "no input_example was given, and pt2 traces the model with one"
    return None


def _two_rows(array: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.repeat(array, 2, axis=0) if array.shape[0] == 1 else array


def _signature(
    model: torch.nn.Module, arrays: tuple[np.ndarray, ...], *, dynamic: bool
) -> Any:
    """Input and output tensor specs; a leading -1 marks the batch as dynamic."""
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def spec(array: np.ndarray, name: str | None) -> TensorSpec:
        shape = (-1, *array.shape[1:]) if dynamic and array.ndim else array.shape
        return TensorSpec(array.dtype, shape, name)

    names = _names(len(arrays))
    inputs = Schema([spec(a, n) for a, n in zip(arrays, names)])
    with torch.no_grad():
        output = model(*[torch.tensor(a) for a in arrays])
    outputs = _tensors(output)
    output_schema = None
    if outputs is not None:
        output_schema = Schema(
            [spec(o, n) for o, n in zip(outputs, _names(len(outputs)))]
        )
    return ModelSignature(inputs=inputs, outputs=output_schema)


def _names(count: int) -> Sequence[str | None]:
    # MLflow allows one unnamed tensor spec; several need names.
    return [None] if count == 1 else [f"input_{i}" for i in range(count)]


def _tensors(output: Any) -> tuple[np.ndarray, ...] | None:
    items = output if isinstance(output, (tuple, list)) else (output,)
    if not items or not all(_is_tensor(item) for item in items):
        return None
    try:
        return tuple(item.detach().cpu().numpy() for item in items)
    except TypeError:
        return None


def _batch_is_dynamic(path: str) -> bool:
    """Whether every user input of the saved program has a symbolic first dimension."""
    import torch

    program = torch.export.load(os.path.join(path, _PT2_FILE))
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        value = node.meta.get("val")
        shape = getattr(value, "shape", ())
        if not shape or isinstance(shape[0], int):
            return False
    return True


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > _MESSAGE_LIMIT:
        text = text[:_MESSAGE_LIMIT] + " ..."
    return f"{type(exc).__name__}: {text}"
