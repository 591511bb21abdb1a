"""The pytorch registry backend against a real sqlite store."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from torch import nn

from mlflow_agent_core.config import Options
from mlflow_agent_core.contracts import Run
from mlflow_agent_core.errors import ConfigError, InvalidInputError
from mlflow_agent_pytorch import PytorchRegistry

torch.manual_seed(0)

# Subprocesses started while recording; an audit hook cannot be removed, so it
# only appends while a test asks it to.
_spawned: list[str] = []
_recording = [False]


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _recording[0] and event in ("subprocess.Popen", "os.posix_spawn", "os.exec"):
        _spawned.append(f"{event} {args[:2]!r}")


sys.addaudithook(_audit)


@contextmanager
def no_subprocess() -> Iterator[None]:
    _spawned.clear()
    _recording[0] = True
    try:
        yield
    finally:
        _recording[0] = False
    assert _spawned == []


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))


def backend(agent: Any, **options: Any) -> PytorchRegistry:
    return PytorchRegistry(agent=agent, options=Options(options, section="registry"))


def model_dir(name: str, version: str) -> Path:
    return Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))


def logged_model_id(version: Any) -> str:
    # Registries without a model_id column keep the link in the source URI.
    assert version.source.startswith("models:/m-")
    return str(version.source.removeprefix("models:/"))


def warnings_from(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.name == logger and r.levelno == logging.WARNING
    ]


def test_with_an_input_example_the_pt2_model_serves_other_batch_sizes(
    registry_agent: Any, agent_logs: pytest.LogCaptureFixture
) -> None:
    model = net().eval()
    example = torch.randn(1, 4)

    with no_subprocess():
        version = backend(registry_agent).register_model(
            model, "digits", run=None, input_example=example
        )

    files = model_dir("digits", version.version)
    assert (files / "data" / "model.pt2").is_file()
    assert not (files / "data" / "model.pth").exists()
    assert version.tags["mlflow_agent.serialization_format"] == "pt2"
    assert version.tags["mlflow_agent.device"] == "cpu"
    mlmodel = mlflow.models.Model.load(str(files / "MLmodel"))
    assert mlmodel.metadata["mlflow_agent.serialization_format"] == "pt2"
    assert mlmodel.model_id == logged_model_id(version)
    assert warnings_from(agent_logs, "mlflow_agent_pytorch.registry") == []

    loaded = mlflow.pytorch.load_model(f"models:/digits/{version.version}")
    batch = torch.randn(5, 4)
    with torch.no_grad():
        assert torch.allclose(loaded(batch), model(batch), atol=1e-6)
        assert loaded(torch.randn(1, 4)).shape == (1, 3)


def test_without_an_input_example_it_falls_back_to_pickle_with_one_warning(
    registry_agent: Any,
    agent_logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = net().eval()

    version = backend(registry_agent).register_model(model, "digits", run=None)

    files = model_dir("digits", version.version)
    assert (files / "data" / "model.pth").is_file()
    assert version.tags["mlflow_agent.serialization_format"] == "pickle"
    ours = warnings_from(agent_logs, "mlflow_agent_pytorch.registry")
    assert len(ours) == 1
    assert "no input_example was given" in ours[0]
    assert "input_example=" in ours[0] and "format: pickle" in ours[0]
    # MLflow's own pickle caution would repeat ours: it is not shown.
    assert not any("exercising caution" in r.getMessage() for r in agent_logs.records)

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    loaded = mlflow.pytorch.load_model(f"models:/digits/{version.version}")
    batch = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.allclose(loaded(batch), model(batch))


def test_explicit_pickle_logs_no_format_warning(
    registry_agent: Any, agent_logs: pytest.LogCaptureFixture
) -> None:
    version = backend(registry_agent, format="pickle").register_model(
        net(), "digits", run=None, input_example=torch.randn(2, 4)
    )

    assert version.tags["mlflow_agent.serialization_format"] == "pickle"
    assert warnings_from(agent_logs, "mlflow_agent_pytorch.registry") == []
    files = model_dir("digits", version.version)
    requirements = (files / "requirements.txt").read_text().split()
    assert any(line.startswith("cloudpickle==") for line in requirements)


def test_pt2_without_an_example_is_refused_before_anything_is_sent(
    registry_agent: Any,
) -> None:
    with pytest.raises(InvalidInputError, match="format 'pt2' cannot be used"):
        backend(registry_agent).register_model(net(), "digits", run=None, format="pt2")

    client = MlflowClient()
    assert client.search_registered_models() == []
    assert client.search_experiments(filter_string="name = 't'") == []


def test_requirements_are_pinned_from_installed_distributions(
    registry_agent: Any,
) -> None:
    registry = backend(registry_agent, extra_requirements=["pandas>=2"])

    version = registry.register_model(
        net(), "digits", run=None, input_example=np.ones((2, 4), dtype=np.float32)
    )

    lines = (model_dir("digits", version.version) / "requirements.txt").read_text()
    torch_version = torch.__version__.split("+")[0]
    assert lines.split() == [
        f"mlflow=={mlflow.__version__}", f"torch=={torch_version}", "pandas>=2"
    ]


def test_infer_requirements_hands_inference_back_to_mlflow(
    registry_agent: Any,
) -> None:
    registry = backend(registry_agent, infer_requirements=True, format="pickle")

    _spawned.clear()
    _recording[0] = True
    try:
        version = registry.register_model(net(), "digits", run=None)
    finally:
        _recording[0] = False

    # MLflow reloads the model in a subprocess to see what it imports.
    assert _spawned
    lines = (model_dir("digits", version.version) / "requirements.txt").read_text()
    assert "torch==" in lines


def test_a_model_whose_forward_fixes_the_batch_is_registered_with_that_batch(
    registry_agent: Any, agent_logs: pytest.LogCaptureFixture
) -> None:
    class OneRow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x).reshape(1, 3)

    model = OneRow()
    version = backend(registry_agent).register_model(
        model, "one-row", run=None, input_example=torch.randn(1, 4)
    )

    ours = warnings_from(agent_logs, "mlflow_agent_pytorch.registry")
    assert len(ours) == 1 and "fixed batch size of 1" in ours[0]
    loaded = mlflow.pytorch.load_model(f"models:/one-row/{version.version}")
    row = torch.randn(1, 4)
    with torch.no_grad():
        assert torch.allclose(loaded(row), model(row))


def test_several_inputs_keep_a_shared_dynamic_batch(registry_agent: Any) -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left = nn.Linear(4, 2)
            self.right = nn.Linear(3, 2)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.left(a) + self.right(b)

    model = TwoInputs().eval()
    version = backend(registry_agent).register_model(
        model, "pair", run=None, input_example=(torch.randn(1, 4), torch.randn(1, 3))
    )

    assert version.tags["mlflow_agent.serialization_format"] == "pt2"
    loaded = mlflow.pytorch.load_model(f"models:/pair/{version.version}")
    a, b = torch.randn(6, 4), torch.randn(6, 3)
    with torch.no_grad():
        assert torch.allclose(loaded(a, b), model(a, b), atol=1e-6)


def nothing_was_sent() -> None:
    client = MlflowClient()
    assert client.search_registered_models() == []
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_logged_models(experiment_ids=experiments) == []


def test_an_example_that_does_not_fit_forward_is_an_input_error(
    registry_agent: Any,
) -> None:
    with pytest.raises(InvalidInputError, match="does not run through the Sequential"):
        backend(registry_agent).register_model(
            net(), "digits", run=None, input_example=torch.randn(2, 7)
        )
    nothing_was_sent()


BAD_EXAMPLES = {
    "dict of tensors": ({"x": torch.randn(1, 4)}, "is a dict (keys 'x')"),
    "dict of arrays": ({"x": np.ones((1, 4), np.float32)}, "keyword inputs"),
    "data frame": (pd.DataFrame({"a": [1.0]}), "df.to_numpy"),
    "number": (3, "input_example is of type int (3)"),
    "text": ("rows", "input_example is of type str ('rows')"),
    "list of numbers": ([[1.0, 2.0, 3.0, 4.0]], "input_example[0] is of type list"),
    "empty tuple": ((), "input_example is an empty tuple"),
    "nested tuple": (((torch.randn(1, 4),),), "input_example[0] is of type tuple"),
    "tensor and text": ((torch.randn(1, 4), "x"), "input_example[1] is of type str"),
    "object array": (np.array([object()]), "dtype object"),
    "sparse tensor": (torch.randn(2, 4).to_sparse(), "to_dense"),
}


@pytest.mark.parametrize("form", ["auto", "pt2", "pickle"])
@pytest.mark.parametrize("case", sorted(BAD_EXAMPLES))
def test_an_unsupported_example_is_refused_before_anything_is_sent(
    registry_agent: Any, case: str, form: str
) -> None:
    example, words = BAD_EXAMPLES[case]

    with pytest.raises(InvalidInputError, match=re.escape(words)) as caught:
        registry_agent.register_model(
            net(), "digits", input_example=example, format=form
        )

    if case not in ("object array", "sparse tensor", "empty tuple"):
        assert "a torch.Tensor or numeric numpy array" in str(caught.value)
    nothing_was_sent()


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the lookup table is not loaded")


@pytest.mark.parametrize("form", ["auto", "pt2", "pickle"])
def test_an_example_forward_fails_on_is_an_input_error_with_its_text(
    registry_agent: Any, agent_logs: pytest.LogCaptureFixture, form: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        registry_agent.register_model(
            Broken(), "broken", input_example=torch.randn(2, 4), format=form
        )

    message = str(caught.value)
    assert "input_example does not run through the Broken model" in message
    assert "RuntimeError: the lookup table is not loaded" in message
    # No word about a fixed batch: the export was never tried.
    assert warnings_from(agent_logs, "mlflow_agent_pytorch.registry") == []
    nothing_was_sent()


def test_pytorch_selected_for_a_non_module_names_what_it_takes(
    registry_agent: Any,
) -> None:
    assert registry_agent.config.backend("registry") == "pytorch"

    with pytest.raises(InvalidInputError) as caught:
        registry_agent.register_model(
            {"weights": [1.0]}, "digits", input_example=torch.randn(2, 4)
        )

    message = str(caught.value)
    assert "'pytorch' registry backend cannot register a builtins.dict" in message
    assert "it registers torch.nn.Module models" in message
    assert "Installed registry backends: auto, pytorch, sklearn" in message
    nothing_was_sent()


def test_a_meta_device_model_is_refused(registry_agent: Any) -> None:
    with torch.device("meta"):
        model = net()

    with pytest.raises(InvalidInputError, match="'meta' device"):
        backend(registry_agent).register_model(
            model, "ghost", run=None, input_example=torch.randn(2, 4)
        )
    assert MlflowClient().search_registered_models() == []


class ClaimsAccelerator(nn.Module):
    """Reports ``cuda:0`` through ``model.device`` (as Lightning and Hugging Face
    models do) until ``.to()`` moves it: an accelerator model on a CPU-only host."""

    def __init__(self) -> None:
        super().__init__()
        self.body = net()
        self.claimed = torch.device("cuda", 0)

    @property
    def device(self) -> torch.device:
        return self.claimed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def to(self, *args: Any, **kwargs: Any) -> ClaimsAccelerator:
        moved = super().to(*args, **kwargs)
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None:
            moved.claimed = device
        return moved


def test_an_accelerator_model_is_registered_from_a_cpu_copy(
    registry_agent: Any, agent_logs: pytest.LogCaptureFixture
) -> None:
    model = ClaimsAccelerator().train()
    weights = [id(p) for p in model.parameters()]

    version = backend(registry_agent).register_model(
        model, "gpu-net", run=None, input_example=torch.randn(1, 4)
    )

    assert version.tags["mlflow_agent.device"] == "cpu,cuda:0"
    assert model.device == torch.device("cuda", 0)
    assert [id(p) for p in model.parameters()] == weights
    assert all(module.training for module in model.modules())
    assert any("CPU copy" in r.getMessage() for r in agent_logs.records)

    loaded = mlflow.pytorch.load_model(f"models:/gpu-net/{version.version}")
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}
    batch = torch.randn(4, 4)
    with torch.no_grad():
        assert torch.allclose(loaded(batch), model.eval()(batch), atol=1e-6)


def test_the_callers_training_flags_are_restored(registry_agent: Any) -> None:
    model = net().train()
    model[2].eval()  # a frozen dropout inside a training model
    before = [m.training for m in model.modules()]

    backend(registry_agent).register_model(
        model, "digits", run=None, input_example=torch.randn(2, 4)
    )

    assert [m.training for m in model.modules()] == before


def test_the_version_is_linked_to_the_run(registry_agent: Any) -> None:
    client = MlflowClient()
    experiment_id = client.create_experiment("runs")
    created = client.create_run(experiment_id)
    client.log_param(created.info.run_id, "lr", "0.01")
    run = Run(created.info.run_id, experiment_id)

    version = backend(registry_agent).register_model(
        net(), "digits", run=run, input_example=torch.randn(2, 4), tags={"team": "ml"}
    )

    assert version.run_id == run.run_id
    assert version.tags["team"] == "ml"
    outputs = client.get_run(run.run_id).outputs.model_outputs
    assert [o.model_id for o in outputs] == [logged_model_id(version)]
    logged = client.get_logged_model(logged_model_id(version))
    assert logged.source_run_id == run.run_id
    assert logged.params == {"lr": "0.01"}
    assert logged.status == "READY"


def test_without_a_run_the_model_goes_to_the_configured_experiment(
    registry_agent: Any,
) -> None:
    version = backend(registry_agent).register_model(
        net(), "digits", run=None, input_example=torch.randn(2, 4)
    )

    logged = MlflowClient().get_logged_model(logged_model_id(version))
    experiment = MlflowClient().get_experiment(logged.experiment_id)
    assert experiment.name == registry_agent.configuration.experiment
    assert logged.source_run_id is None and version.run_id in (None, "")


def test_per_call_options_are_checked(registry_agent: Any) -> None:
    registry = backend(registry_agent)

    with pytest.raises(InvalidInputError, match="did you mean 'format'"):
        registry.register_model(net(), "digits", run=None, formt="pt2")
    with pytest.raises(InvalidInputError, match="'auto', 'pt2', 'pickle'"):
        registry.register_model(net(), "digits", run=None, format="onnx")


def test_bad_options_are_config_errors(registry_agent: Any) -> None:
    with pytest.raises(ConfigError, match="registry.format"):
        backend(registry_agent, format="onnx")
    with pytest.raises(ConfigError, match="not a pip requirement"):
        backend(registry_agent, extra_requirements=["torch >>> 2"])


def test_supports_only_torch_modules(registry_agent: Any) -> None:
    from sklearn.linear_model import LinearRegression

    registry = backend(registry_agent)
    assert registry.supports(net())
    assert not registry.supports(np.zeros(3))
    assert not registry.supports(LinearRegression())
    with pytest.raises(InvalidInputError, match="cannot register a numpy.ndarray"):
        registry.register_model(np.zeros(3), "digits", run=None)


def test_importing_the_plugin_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, mlflow_agent_pytorch; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    assert result.stdout.strip() == "False"
