"""The main job: train, track, register, promote and load back a digit classifier.

Trains a small PyTorch network on scikit-learn's bundled handwritten digits (real
data, no download) through the agent, registers it as ``Pytorch_Model``, promotes
that version to stage ``Production`` and alias ``champion``, loads it back from the
registry and checks that the loaded model scores exactly like the trained one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .agent import MLFlowAgent

logger = logging.getLogger(__name__)

MODEL_NAME = "Pytorch_Model"
ALIAS = "champion"
STAGE = "Production"


@dataclass(frozen=True)
class QuickstartSettings:
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 2e-3
    hidden_units: int = 64
    seed: int = 7


@dataclass(frozen=True)
class QuickstartResult:
    run_id: str
    model_version: str
    trained_accuracy: float
    loaded_accuracy: float
    tracking_uri: str
    seconds: float


@dataclass(frozen=True)
class _Splits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _load_digits(seed: int) -> _Splits:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    features = (digits.data / 16.0).astype("float32")
    labels = digits.target.astype("int64")
    x_rest, x_test, y_rest, y_test = train_test_split(
        features, labels, test_size=0.2, random_state=seed, stratify=labels
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.15, random_state=seed, stratify=y_rest
    )
    as_tensor = torch.from_numpy
    return _Splits(
        as_tensor(x_train), as_tensor(y_train),
        as_tensor(x_val), as_tensor(y_val),
        as_tensor(x_test), as_tensor(y_test),
    )


def _build_model(hidden_units: int) -> torch.nn.Module:
    from torch import nn

    return nn.Sequential(
        nn.Linear(64, hidden_units),
        nn.ReLU(),
        nn.Linear(hidden_units, 10),
    )


def accuracy(model: Any, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``features`` that ``model`` labels correctly."""
    import torch

    with torch.no_grad():
        predicted = model(features).argmax(dim=1)
    return float((predicted == labels).float().mean().item())


def _train(
    agent: MLFlowAgent,
    model: torch.nn.Module,
    data: _Splits,
    settings: QuickstartSettings,
    report: Callable[[str], None],
) -> None:
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(settings.seed)
    step = 0

    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.randperm(len(data.x_train), generator=generator)
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(data.x_train[batch]), data.y_train[batch])
            loss.backward()
            optimizer.step()
            agent.log_metric("train_loss", loss, step=step)
            step += 1

        model.eval()
        val_accuracy = accuracy(model, data.x_val, data.y_val)
        agent.log_metric("val_accuracy", val_accuracy, step=epoch)
        report(
            f"epoch {epoch:2d}/{settings.epochs}  loss {loss.item():.4f}  "
            f"val accuracy {val_accuracy:.3f}"
        )


def run_quickstart(
    agent: MLFlowAgent,
    settings: QuickstartSettings | None = None,
    report: Callable[[str], None] = logger.info,
) -> QuickstartResult:
    """Run the whole job with ``agent``; ``report`` receives one line per step."""
    import torch

    settings = settings or QuickstartSettings()
    # A network this small runs faster on one thread than split across cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(agent, settings, report)
    finally:
        torch.set_num_threads(threads)


def _run(
    agent: MLFlowAgent, settings: QuickstartSettings, report: Callable[[str], None]
) -> QuickstartResult:
    import torch

    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    data = _load_digits(settings.seed)
    model = _build_model(settings.hidden_units)
    report(
        f"digits: {len(data.x_train)} train, {len(data.x_val)} validation, "
        f"{len(data.x_test)} test images"
    )

    params: dict[str, Any] = {
        "model": {"hidden_units": settings.hidden_units, "layers": 2},
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "seed": settings.seed,
    }
    with agent.start_run(run_name="quickstart", params=params) as run:
        _train(agent, model, data, settings, report)
        model.eval()
        trained_accuracy = accuracy(model, data.x_test, data.y_test)
        agent.log_metric("test_accuracy", trained_accuracy)
        version = agent.register_model(
            model, MODEL_NAME, input_example=data.x_test[:1]
        )
    report(f"registered {MODEL_NAME} version {version.version}")

    agent.promote(MODEL_NAME, version.version, alias=ALIAS, stage=STAGE)
    report(f"promoted version {version.version} to stage {STAGE} and alias {ALIAS}")

    loaded = agent.load_model(f"models:/{MODEL_NAME}@{ALIAS}")
    loaded_accuracy = accuracy(loaded, data.x_test, data.y_test)
    report(
        f"loaded models:/{MODEL_NAME}@{ALIAS}: test accuracy {loaded_accuracy:.4f} "
        f"(trained model: {trained_accuracy:.4f})"
    )
    return QuickstartResult(
        run_id=run.run_id,
        model_version=str(version.version),
        trained_accuracy=trained_accuracy,
        loaded_accuracy=loaded_accuracy,
        tracking_uri=agent.configuration.tracking_uri,
        seconds=time.perf_counter() - started,
    )
