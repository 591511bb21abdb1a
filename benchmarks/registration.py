"""Registration and load times: the agent versus MLflow's defaults, in one run.

Starts a loopback ``mlflow server`` (sqlite store and artifacts in a temporary
directory) and, for one small PyTorch model, measures the median time of:

* ``mlflow.pytorch.log_model(model, name=..., registered_model_name=...,
  input_example=...)`` with MLflow's defaults (pt2 format, requirements inferred);
* ``agent.register_model(model, name, input_example=...)`` in the pt2 and the
  pickle format;
* the first and the second ``agent.load_model`` of one version.

Every measured call runs inside a run, after one unmeasured warm-up call of each
kind (imports, the first ``torch.export``). The kinds are interleaved so that a
change in machine load hits them alike. Targets: registration at most 0.3 of
MLflow's default time; a cached load at least 10 times faster than the first.

    python benchmarks/registration.py [--repeats 7] [--write]

``--write`` also writes the figures to benchmarks/RESULTS-registration.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.update(
    MLFLOW_DISABLE_TELEMETRY="true",
    MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
    MLFLOW_HTTP_REQUEST_TIMEOUT="30",
)

RESULTS = Path(__file__).with_name("RESULTS-registration.md")
REGISTRATION_TARGET = 0.3
LOAD_TARGET = 10.0


def small_model() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    ).eval()


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


class Bench:
    """The three registration paths and the loads, against one server."""

    def __init__(self, uri: str, spool: str) -> None:
        import mlflow
        import numpy as np

        from mlflow_agent_core import MLFlowAgent

        self.mlflow = mlflow
        self.model = small_model()
        self.example = np.random.default_rng(0).random((1, 64), dtype=np.float32)
        self.agent = MLFlowAgent(
            config={
                "configuration": {"tracking_uri": uri, "experiment": "benchmark"},
                "tracking": {"backend": "mlflow", "spool_dir": spool},
                "registry": {"backend": "pytorch"},
                "client": {"backend": "mlflow"},
            }
        )
        self.agent_versions: list[str] = []

    def mlflow_default(self) -> float:
        with self.mlflow.start_run():
            seconds, _ = timed(
                lambda: self.mlflow.pytorch.log_model(
                    self.model,
                    name="model",
                    registered_model_name="bench-mlflow-default",
                    input_example=self.example,
                )
            )
        return seconds

    def agent_register(self, serialization_format: str) -> float:
        name = f"bench-agent-{serialization_format}"
        with self.agent.start_run():
            seconds, version = timed(
                lambda: self.agent.register_model(
                    self.model,
                    name,
                    input_example=self.example,
                    format=serialization_format,
                )
            )
        if serialization_format == "pt2":
            self.agent_versions.append(str(version.version))
        return seconds

    def loads(self, version: str) -> tuple[float, float]:
        uri = f"models:/bench-agent-pt2/{version}"
        first, _ = timed(lambda: self.agent.load_model(uri))
        second, _ = timed(lambda: self.agent.load_model(uri))
        return first, second


def run(repeats: int) -> dict[str, Any]:
    from mlflow_agent_core import MLFlowAgent
    from mlflow_agent_core.testing import MlflowServer

    with tempfile.TemporaryDirectory(prefix="mlflow-agent-bench-") as tmp:
        server = MlflowServer(Path(tmp) / "server").start()
        try:
            bench = Bench(server.uri, str(Path(tmp) / "spool"))
            results = measure(bench, repeats)
        finally:
            MLFlowAgent.reset()
            server.stop()
    return results


def measure(bench: Bench, repeats: int) -> dict[str, Any]:
    kinds: dict[str, Callable[[], float]] = {
        "mlflow_default": bench.mlflow_default,
        "agent_pt2": lambda: bench.agent_register("pt2"),
        "agent_pickle": lambda: bench.agent_register("pickle"),
    }
    for call in kinds.values():
        call()  # warm-up, not measured

    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for round_number in range(repeats):
        for kind, call in kinds.items():
            times[kind].append(call())
        print(
            f"round {round_number + 1}/{repeats}: "
            + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()),
            flush=True,
        )

    results: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}
    results["raw"] = times
    results["load"] = measure_loads(bench)
    return results


def measure_loads(bench: Bench) -> dict[str, Any]:
    # The client backend may be missing or refuse; report that instead of failing.
    firsts: list[float] = []
    seconds: list[float] = []
    try:
        for version in bench.agent_versions:
            first, second = bench.loads(version)
            firsts.append(first)
            seconds.append(second)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "first": statistics.median(firsts),
        "second": statistics.median(seconds),
        "count": len(firsts),
    }


def report(results: dict[str, Any], repeats: int, command: str) -> str:
    import mlflow
    import torch

    default = results["mlflow_default"]
    lines = [
        "# Registration benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"One run against a loopback `mlflow server` (sqlite store, served "
        f"artifacts), MLflow {mlflow.__version__}, torch {torch.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load "
        f"average at the end {os.getloadavg()[0]:.1f}. Model: "
        "Linear(64,128)-ReLU-Linear(128,10), input example of one row. Medians of "
        f"{repeats} interleaved calls after one warm-up call of each kind.",
        "",
        "| Registration | median (s) | ratio to MLflow default |",
        "|---|---|---|",
        f"| `mlflow.pytorch.log_model`, MLflow defaults (pt2) | {default:.3f} | 1.00 |",
    ]
    for kind, label in (("agent_pt2", "pt2"), ("agent_pickle", "pickle")):
        ratio = results[kind] / default
        verdict = "meets" if ratio <= REGISTRATION_TARGET else "MISSES"
        lines.append(
            f"| `agent.register_model`, {label} | {results[kind]:.3f} | {ratio:.2f} "
            f"({verdict} <= {REGISTRATION_TARGET}) |"
        )

    load = results["load"]
    lines += ["", "| Load of one pt2 version | median (s) |", "|---|---|"]
    if "error" in load:
        lines.append(f"| `agent.load_model` | not measured: {load['error']} |")
    else:
        speedup = load["first"] / load["second"] if load["second"] else float("inf")
        verdict = "meets" if speedup >= LOAD_TARGET else "MISSES"
        lines += [
            f"| first `agent.load_model` | {load['first']:.4f} |",
            f"| second `agent.load_model` (cached) | {load['second']:.4f} |",
            "",
            f"Cached load {speedup:.0f}x faster than the first ({verdict} >= "
            f"{LOAD_TARGET:.0f}x), medians over {load['count']} versions.",
        ]
    lines += ["", "Raw registration times (s):", ""]
    for kind, values in results["raw"].items():
        lines.append(f"- {kind}: " + ", ".join(f"{v:.3f}" for v in values))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    args = parser.parse_args(argv)

    results = run(args.repeats)
    command = "python benchmarks/registration.py " + " ".join(sys.argv[1:])
    text = report(results, args.repeats, command.strip())
    print(text)
    if args.write:
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
