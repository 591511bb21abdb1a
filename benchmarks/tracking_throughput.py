"""Tracking throughput: MLflow's own logging paths against the agent's writer.

Starts a loopback ``mlflow server`` (sqlite store in a temporary directory) and,
in one run and on that server, measures end-to-end metrics per second of:

  (a)  ``mlflow.log_metric`` per call, and (a') ``MlflowClient.log_metric``
  (b)  ``mlflow.log_metric(..., synchronous=False)`` then ``flush_async_logging``
  (c)  ``MlflowClient.log_batch`` with 1000 metrics per request (run before and
       after (d); the mean is used)
  (d)  the agent's per-step ``log_metric`` then ``flush()``

plus the caller-side latency of one agent ``log_metric`` (median, p99) and the
peak RSS growth of the process during each variant. Every variant reads its points
back and the script exits with status 1 if any is missing (2 with ``--strict``
when a target is missed). ``--write`` saves the figures to RESULTS-tracking.md.

    python benchmarks/tracking_throughput.py [--points-d 30000] [--strict] [--write]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric  # noqa: E402

from mlflow_agent_core import MLFlowAgent  # noqa: E402
from mlflow_agent_core.testing import MlflowServer  # noqa: E402

EXPERIMENT = "tracking-throughput"
TARGET_VS_PER_CALL = 50.0
TARGET_VS_BATCH = 0.8
TARGET_P99_US = 50.0
RESULTS = Path(__file__).with_name("RESULTS-tracking.md")


@dataclass
class Result:
    label: str
    points: int
    seconds: float
    peak_rss_mb: float
    missing: int

    @property
    def rate(self) -> float:
        return self.points / self.seconds


class RssSampler:
    """Peak resident memory of this process while a variant runs."""

    def __init__(self, interval: float = 0.005) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()

    @property
    def growth_mb(self) -> float:
        return float(self.peak - self.baseline) / 2**20


def missing_points(client: MlflowClient, run_id: str, key: str, points: int) -> int:
    steps = {m.step for m in client.get_metric_history(run_id, key)}
    return len(set(range(points)) - steps)


def measure(label: str, points: int, key: str, client: MlflowClient,
            body: Callable[[], str]) -> Result:
    """Time ``body`` (which logs ``points`` points of ``key`` and returns its run)."""
    sampler = RssSampler()
    with sampler.running():
        started = time.perf_counter()
        run_id = body()
        seconds = time.perf_counter() - started
    missing = missing_points(client, run_id, key, points)
    rate = points / seconds
    print(f"  {label}: {rate:,.0f} metrics/s, {missing} missing", flush=True)
    return Result(label, points, seconds, sampler.growth_mb, missing)


def per_call_fluent(points: int) -> str:
    with mlflow.start_run(run_name="a-fluent") as run:
        for step in range(points):
            mlflow.log_metric("a", step * 0.5, step=step)
    return str(run.info.run_id)


def per_call_client(client: MlflowClient, experiment_id: str, points: int) -> str:
    run_id = client.create_run(experiment_id, run_name="a-client").info.run_id
    for step in range(points):
        client.log_metric(run_id, "a2", step * 0.5, step=step)
    return str(run_id)


def async_fluent(points: int) -> str:
    with mlflow.start_run(run_name="b-async") as run:
        for step in range(points):
            mlflow.log_metric("b", step * 0.5, step=step, synchronous=False)
        mlflow.flush_async_logging()
    return str(run.info.run_id)


def raw_batches(client: MlflowClient, experiment_id: str, points: int, key: str) -> str:
    run_id = client.create_run(experiment_id, run_name=f"c-{key}").info.run_id
    now = int(time.time() * 1000)
    for first in range(0, points, 1000):
        metrics = [
            Metric(key, step * 0.5, now + step, step)
            for step in range(first, min(first + 1000, points))
        ]
        client.log_batch(run_id, metrics=metrics, synchronous=True)
    return str(run_id)


def agent_per_step(agent: MLFlowAgent, points: int, latencies: list[float]) -> str:
    clock = time.perf_counter
    with agent.start_run("d-agent") as run:
        for step in range(points):
            before = clock()
            agent.log_metric("d", step * 0.5, step=step)
            latencies.append(clock() - before)
        if not agent.flush(300):
            raise RuntimeError("agent flush did not complete")
    return run.run_id


def warm_up(experiment_id: str, uri: str) -> None:
    # The server's workers load lazily, and one connection reaches only one of
    # them: warm every worker through several connections at once.
    def work() -> None:
        raw_batches(MlflowClient(uri), experiment_id, 8000, "warmup")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points-a", type=int, default=300)
    parser.add_argument("--points-b", type=int, default=1000)
    parser.add_argument("--points-c", type=int, default=30_000)
    parser.add_argument("--points-d", type=int, default=30_000)
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 2 when a target is missed")
    parser.add_argument("--write", action="store_true",
                        help=f"write the figures to {RESULTS.name}")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tracking-bench-") as tmp:
        root = Path(tmp)
        load = os.getloadavg()[0]
        print(f"load average before: {load:.1f} on {os.cpu_count()} CPUs")
        with MlflowServer(root / "server") as server:
            return run_all(args, server, root, load)


def run_all(
    args: argparse.Namespace, server: MlflowServer, root: Path, load_before: float
) -> int:
    mlflow.set_tracking_uri(server.uri)
    client = MlflowClient(server.uri)
    experiment_id = mlflow.set_experiment(EXPERIMENT).experiment_id
    warm_up(experiment_id, server.uri)
    print(f"server {server.uri} warmed up; measuring", flush=True)

    results = [
        measure("(a)  mlflow.log_metric per call", args.points_a, "a", client,
                lambda: per_call_fluent(args.points_a)),
        measure("(a') MlflowClient.log_metric per call", args.points_a, "a2", client,
                lambda: per_call_client(client, experiment_id, args.points_a)),
        measure("(b)  mlflow.log_metric(synchronous=False)+flush", args.points_b, "b",
                client, lambda: async_fluent(args.points_b)),
        measure(
            "(c)  MlflowClient.log_batch x1000 (before d)", args.points_c, "c1", client,
            lambda: raw_batches(client, experiment_id, args.points_c, "c1"),
        ),
    ]
    agent = MLFlowAgent(config={
        "configuration": {"tracking_uri": server.uri, "experiment": EXPERIMENT},
        "tracking": {"spool_dir": str(root / "spool")},
    })
    latencies: list[float] = []
    results.append(measure(
        "(d)  MLFlowAgent.log_metric per step + flush()", args.points_d, "d", client,
        lambda: agent_per_step(agent, args.points_d, latencies),
    ))
    results.append(measure(
        "(c)  MlflowClient.log_batch x1000 (after d)", args.points_c, "c2", client,
        lambda: raw_batches(client, experiment_id, args.points_c, "c2"),
    ))
    MLFlowAgent.reset()
    summary = Summary(results, latencies, load_before, os.getloadavg()[0])
    summary.print()
    if args.write:
        RESULTS.write_text(summary.markdown())
        print(f"wrote {RESULTS}")
    missing = [r for r in results if r.missing]
    for result in missing:
        print(f"FAILED: {result.label} lost {result.missing} points", file=sys.stderr)
    if missing:
        return 1
    return 2 if args.strict and not all(ok for _, ok in summary.checks) else 0


class Summary:
    """The figures of one benchmark run, as a table and as markdown."""

    def __init__(self, results: list[Result], latencies: list[float],
                 load_before: float, load_after: float) -> None:
        self.results = results
        self.load = (load_before, load_after)
        self.a = max(results[0].rate, results[1].rate)
        self.b = results[2].rate
        self.c = statistics.mean([results[3].rate, results[5].rate])
        self.d = results[4].rate
        ordered = sorted(latencies)
        self.samples = len(ordered)
        self.median_us = ordered[len(ordered) // 2] * 1e6
        self.p99_us = ordered[int(len(ordered) * 0.99)] * 1e6
        self.checks = [
            (f"d/a >= {TARGET_VS_PER_CALL:.0f}",
             self.d / self.a >= TARGET_VS_PER_CALL),
            (f"d >= {TARGET_VS_BATCH} c", self.d >= TARGET_VS_BATCH * self.c),
            (f"caller p99 < {TARGET_P99_US:.0f} us", self.p99_us < TARGET_P99_US),
        ]

    def print(self) -> None:
        print()
        print(f"{'variant':<50} {'points':>7} {'seconds':>8} {'metrics/s':>10} "
              f"{'peak RSS +MB':>12}")
        for result in self.results:
            print(f"{result.label:<50} {result.points:>7} {result.seconds:>8.2f} "
                  f"{result.rate:>10,.0f} {result.peak_rss_mb:>12.1f}")
        print()
        print(f"agent log_metric caller latency: median {self.median_us:.1f} us, "
              f"p99 {self.p99_us:.1f} us (n={self.samples})")
        print(f"ratios: d/a = {self.d / self.a:.0f}  d/b = {self.d / self.b:.0f}  "
              f"d/c = {self.d / self.c:.2f} (a = faster of a and a', c = mean of "
              "both c runs)")
        print("targets: " + ", ".join(
            f"{name}: {'met' if ok else 'MISSED'}" for name, ok in self.checks
        ))
        print(f"load average after: {self.load[1]:.1f}")

    def markdown(self) -> str:
        rows = "\n".join(
            f"| {r.label} | {r.points} | {r.seconds:.2f} | {r.rate:,.0f} | "
            f"{r.peak_rss_mb:.1f} |"
            for r in self.results
        )
        checks = "; ".join(f"{name}: {'met' if ok else 'missed'}"
                           for name, ok in self.checks)
        lost = sum(r.missing for r in self.results)
        read_back = "none was missing" if not lost else f"{lost} were MISSING"
        return (
            "# Tracking throughput benchmark\n\n"
            "Command: `python benchmarks/tracking_throughput.py --write`\n\n"
            f"One run against a loopback `mlflow server` (sqlite store, 2 workers) on "
            f"the same machine: MLflow {mlflow.__version__}, Python "
            f"{platform.python_version()}, {os.cpu_count()} CPUs, load average "
            f"{self.load[0]:.1f} before and {self.load[1]:.1f} after. Each variant "
            "logs one metric key per step to its own run and reads every point "
            f"back: {read_back}.\n\n"
            "| Variant | points | seconds | metrics/s | peak RSS growth (MB) |\n"
            "|---|---|---|---|---|\n"
            f"{rows}\n\n"
            f"Agent `log_metric`, caller side, over the {self.samples} calls of (d): "
            f"median {self.median_us:.1f} us, p99 {self.p99_us:.1f} us.\n\n"
            f"Ratios: d/a = {self.d / self.a:.0f}, d/b = {self.d / self.b:.0f}, "
            f"d/c = {self.d / self.c:.2f} (a: the faster per-call variant; c: the "
            f"mean of its two runs). Targets: {checks}.\n\n"
            "The caller's p99 counts the calls that were preempted or ran a garbage "
            "collection; it rises with the machine's load, since the server shares "
            "its CPUs.\n"
        )


if __name__ == "__main__":
    sys.exit(main())
