"""The batching writer and its spool, on a real sqlite store (no server needed)."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from mlflow_agent_core.contracts import MetricPoint
from mlflow_agent_core.default_plugins.spool import (
    REJECTED_FILE,
    Family,
    SpoolLog,
    families,
)
from mlflow_agent_core.errors import ConfigError

T0 = 1_700_000_000_000


@pytest.fixture
def spool_root(agent_config: dict[str, Any]) -> Path:
    """The spool root that the agent fixtures configure."""
    return Path(agent_config["tracking"]["spool_dir"])


def history(uri: str, run_id: str, key: str) -> list[tuple[str, float, int, int]]:
    client = MlflowClient(uri)
    return [
        (m.key, m.value, m.timestamp, m.step)
        for m in client.get_metric_history(run_id, key)
    ]


def spool_dirs(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir()] if root.exists() else []


def test_metric_history_reads_back_exactly_as_logged(
    agent_factory: Any, tracking_uri: str
) -> None:
    agent = agent_factory(tracking={"batch_size": 300, "max_in_flight": 3})
    logged: dict[str, list[MetricPoint]] = {"loss": [], "acc": []}
    with agent.start_run("order") as run:
        for step in range(2500):
            # Several points share a millisecond; steps keep them apart.
            timestamp = T0 + step // 3
            batch = [
                MetricPoint("loss", 1.0 / (step + 1), timestamp, step),
                MetricPoint("acc", math.nan if step == 7 else step * 0.25, timestamp,
                            step),
            ]
            for point in batch:
                logged[point.key].append(point)
            agent.tracking.log_metrics(run.run, batch)
        assert agent.flush(60)

    for key, points in logged.items():
        got = history(tracking_uri, run.run_id, key)
        want = [(p.key, p.value, p.timestamp, p.step) for p in points]
        assert len(got) == len(want)
        for (gk, gv, gt, gs), (wk, wv, wt, ws) in zip(got, want):
            assert (gk, gt, gs) == (wk, wt, ws)
            assert gv == wv or (math.isnan(gv) and math.isnan(wv))


def test_params_and_tags_beyond_one_request_all_arrive(
    agent_factory: Any, tracking_uri: str
) -> None:
    agent = agent_factory()
    params = {f"p{i:03d}": "v" * 500 + str(i) for i in range(250)}
    with agent.start_run("many", params=params) as run:
        agent.set_tags({f"t{i:03d}": str(i) for i in range(250)})
        for value in range(60):
            agent.set_tag("last", str(value))
        agent.log_metric("m", 1.0, step=0)

    data = MlflowClient(tracking_uri).get_run(run.run_id).data
    assert data.params == params
    assert {k: v for k, v in data.tags.items() if k.startswith("t")} == {
        f"t{i:03d}": str(i) for i in range(250)
    }
    assert data.tags["last"] == "59"
    assert data.metrics == {"m": 1.0}


def test_eight_threads_log_80000_points_to_one_run(
    agent_factory: Any, tracking_uri: str
) -> None:
    # A small queue_cap: some records are read back from the spool meanwhile.
    agent = agent_factory(tracking={"flush_interval": 0.2, "queue_cap": 5000})
    threads_count, per_thread = 8, 10_000
    with agent.start_run("threads") as run:
        def work(index: int) -> None:
            for step in range(per_thread):
                agent.log_metric(f"t{index}", float(step), step=step)

        threads = [
            threading.Thread(target=work, args=(i,)) for i in range(threads_count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert agent.flush(120)

    total = 0
    for index in range(threads_count):
        points = history(tracking_uri, run.run_id, f"t{index}")
        steps = [step for _, _, _, step in points]
        assert sorted(steps) == list(range(per_thread))
        total += len(steps)
    assert total == threads_count * per_thread


def test_records_beyond_queue_cap_wait_in_the_spool(
    agent_factory: Any, tracking_uri: str, spool_root: Path
) -> None:
    agent = agent_factory(tracking={"queue_cap": 300, "batch_size": 200})
    with agent.start_run("spill") as run:
        for step in range(6000):
            agent.log_metric("x", float(step), step=step)
        assert agent.flush(120)

    steps = [step for _, _, _, step in history(tracking_uri, run.run_id, "x")]
    assert steps == list(range(6000))
    agent.reset()
    for directory in spool_dirs(spool_root):
        assert families(directory) == [], "a fully sent spool is deleted at close"


def test_a_refused_batch_is_kept_in_rejected_jsonl_and_others_go_on(
    agent_factory: Any, tracking_uri: str, spool_root: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = agent_factory()
    with agent.start_run("refused") as run:
        # Someone else logged this param with another value: the server refuses ours.
        MlflowClient(tracking_uri).log_param(run.run_id, "lr", "0.1")
        with caplog.at_level(logging.ERROR):
            agent.tracking.log_params(run.run, {"lr": "0.5"})
            assert agent.flush(30)
        agent.log_metric("after", 2.0, step=1)

    after = history(tracking_uri, run.run_id, "after")
    assert [(key, value, step) for key, value, _, step in after] == [("after", 2.0, 1)]
    [directory] = spool_dirs(spool_root)
    entries = [json.loads(line) for line in (directory / REJECTED_FILE).open()]
    assert [e["record"]["params"] for e in entries] == [{"lr": "0.5"}]
    assert entries[0]["record"]["run_id"] == run.run_id
    assert any(run.run_id in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)


def test_artifacts_and_text_are_uploaded_from_a_private_copy(
    agent_factory: Any, tracking_uri: str, tmp_path: Path
) -> None:
    agent = agent_factory()
    source = tmp_path / "report.txt"
    source.write_text("first")
    with agent.start_run("artifacts") as run:
        agent.log_artifact(source, artifact_path="docs")
        source.write_text("changed after logging")
        agent.tracking.log_text(run.run, "hello", "notes/readme.md")

    client = MlflowClient(tracking_uri)
    local = client.download_artifacts(run.run_id, "docs/report.txt", str(tmp_path))
    assert Path(local).read_text() == "first"
    text = client.download_artifacts(run.run_id, "notes/readme.md", str(tmp_path))
    assert Path(text).read_text() == "hello"


def test_runs_go_to_the_tracking_uri_current_when_they_start(
    agent_factory: Any, tracking_uri: str, tmp_path: Path, spool_root: Path
) -> None:
    agent = agent_factory()
    with agent.start_run("first") as first:
        agent.log_metric("m", 1.0)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    agent.configuration.set_tracking_uri(other)
    with agent.start_run("second") as second:
        agent.log_metric("m", 2.0)
    assert agent.flush(30)

    assert MlflowClient(tracking_uri).get_run(first.run_id).data.metrics == {"m": 1.0}
    assert MlflowClient(other).get_run(second.run_id).data.metrics == {"m": 2.0}
    assert len(spool_dirs(spool_root)) == 2, "one spool directory per URI"


def test_a_child_run_links_to_its_parent(agent_factory: Any, tracking_uri: str) -> None:
    agent = agent_factory()
    with agent.start_run("parent") as parent, agent.start_run(
        "child", nested=True
    ) as child:
        agent.log_metric("c", 1.0)
    stored = MlflowClient(tracking_uri).get_run(child.run_id)
    assert stored.data.tags["mlflow.parentRunId"] == parent.run_id
    assert stored.info.experiment_id == parent.experiment_id
    assert stored.info.status == "FINISHED"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"batch_size": 5000}, "batch_size"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"exit_timeout": -1}, "exit_timeout"),
        ({"flush_intervall": 1}, "flush_interval"),
    ],
)
def test_bad_tracking_options_are_config_errors(
    agent_factory: Any, options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        agent_factory(tracking=options)


def test_spool_reader_skips_a_torn_last_record(tmp_path: Path) -> None:
    log = SpoolLog(tmp_path, "sqlite:///unused.db", segment_bytes=4096)
    lines = [
        b'{"r":"run1","m":[["k",%d.0,%d,%d]]}\n' % (i, T0 + i, i) for i in range(300)
    ]
    for line in lines:
        log.append(line)  # 300 lines span several 4 KB segments
    log.append(b'{"r":"run1","m":[["k",1')  # the process died in this write
    log.close(delete=False)

    [family] = families(tmp_path)
    assert isinstance(family, Family) and len(family.segments()) > 1
    records, bad, _ = family.read(0, None, 10_000)
    assert bad == []
    # Each record holds one point, (key, value, timestamp, step).
    assert [r[4][0][3] for r in records] == list(range(300))
    assert family.torn_bytes() == len(b'{"r":"run1","m":[["k",1')


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_leaves_the_parents_spool_alone(
    agent_factory: Any, tracking_uri: str
) -> None:
    agent = agent_factory()
    with agent.start_run("fork") as run:
        for step in range(500):
            agent.log_metric("x", float(step), step=step)
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            for step in range(500, 1500):
                agent.log_metric("x", float(step), step=step)
            agent.flush(1)
            os._exit(0)
        os.waitpid(child, 0)
        for step in range(1500, 2000):
            agent.log_metric("x", float(step), step=step)
        assert agent.flush(60)

    steps = [step for _, _, _, step in history(tracking_uri, run.run_id, "x")]
    assert steps == list(range(500)) + list(range(1500, 2000))
