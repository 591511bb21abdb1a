"""The ``jsonl`` tracking backend: runs written to a local JSON-lines file.

Select it in ``agent.yaml``::

    tracking:
      backend: jsonl
      path: runs.jsonl      # relative to the current directory
      fsync: false          # true: fsync after every line

Each call becomes one line, e.g. ``{"event": "metrics", "run_id": "...",
"points": [["loss", 0.4, 1717000000000, 3]]}``. Useful offline, and as a small,
complete example of a strategy: options parsed from a dataclass, a
``check_options`` classmethod for ``mlflow-agent config check``, and every method
of :class:`mlflow_agent_core.contracts.TrackingStrategy`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_agent_core.contracts import MetricPoint, Run

if TYPE_CHECKING:
    from mlflow_agent_core import MLFlowAgent
    from mlflow_agent_core.config import Options

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JsonlOptions:
    """The ``tracking:`` section for ``backend: jsonl``."""

    path: str = field(
        default="mlflow-agent-runs.jsonl",
        metadata={"help": "file the records are appended to"},
    )
    fsync: bool = field(
        default=False, metadata={"help": "fsync after every line (slower, durable)"}
    )


class JsonlTracking:
    """Appends every tracking call to ``options.path`` as one JSON line."""

    def __init__(self, *, agent: MLFlowAgent, options: Options) -> None:
        self.options = self.check_options(options)
        self.path = Path(self.options.path).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._experiment = agent.configuration.experiment
        self._lock = threading.Lock()
        logger.info("Tracking to %s", self.path)

    @classmethod
    def check_options(cls, options: Options) -> JsonlOptions:
        """Validate the options without creating anything."""
        parsed = options.parse(JsonlOptions)
        if not parsed.path.strip():
            raise options.error(
                "path", "the path is empty; name a file, e.g. runs.jsonl"
            )
        return parsed

    # Runs

    def start_run(
        self, *, run_name: str | None, tags: Mapping[str, str], parent: Run | None
    ) -> Run:
        run = Run(
            run_id=uuid.uuid4().hex,
            experiment_id=self._experiment,
            run_name=run_name,
            parent_run_id=None if parent is None else parent.run_id,
        )
        self._write(
            "start", run, name=run_name, parent=run.parent_run_id, tags=dict(tags)
        )
        return run

    def end_run(self, run: Run, status: str) -> None:
        self._write("end", run, status=status)

    # Data

    def log_params(self, run: Run, params: Mapping[str, str]) -> None:
        self._write("params", run, params=dict(params))

    def log_metrics(self, run: Run, points: Sequence[MetricPoint]) -> None:
        rows = [[p.key, p.value, p.timestamp, p.step] for p in points]
        self._write("metrics", run, points=rows)

    def set_tags(self, run: Run, tags: Mapping[str, str]) -> None:
        self._write("tags", run, tags=dict(tags))

    def log_artifact(
        self, run: Run, local_path: str, artifact_path: str | None = None
    ) -> None:
        # Records where the file is; copying it is beyond this example.
        self._write("artifact", run, local_path=local_path, artifact_path=artifact_path)

    def log_text(self, run: Run, text: str, artifact_file: str) -> None:
        self._write("text", run, artifact_file=artifact_file, text=text)

    # Lifecycle: every line is written at once, so there is nothing to wait for.

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        logger.debug("Closed %s", self.path)

    def _write(self, event: str, run: Run, **fields: Any) -> None:
        record = {"event": event, "run_id": run.run_id, "time": time.time(), **fields}
        line = json.dumps(record, allow_nan=True) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            if self.options.fsync:
                handle.flush()
                os.fsync(handle.fileno())


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of a file written by :class:`JsonlTracking`, in order."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
