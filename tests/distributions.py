"""Throwaway distributions with entry points, made at test time.

A distribution here is real as far as ``importlib.metadata`` is concerned: a
``.dist-info`` folder with ``METADATA`` and ``entry_points.txt`` beside its modules,
on a folder that the test puts on ``sys.path``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path


def make_distribution(
    root: Path,
    name: str,
    modules: Mapping[str, str],
    entry_points: Mapping[str, str],
    version: str = "1.0.0",
    group: str = "mlflow_agent",
) -> Path:
    """Write distribution ``name`` under ``root`` and return ``root``.

    ``modules`` maps module file names (``my_plugin.py``) to their source;
    ``entry_points`` maps entry-point names to ``module`` or ``module:attr``.
    """
    root.mkdir(parents=True, exist_ok=True)
    for filename, source in modules.items():
        (root / filename).write_text(textwrap.dedent(source))

    dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    )
    lines = [f"[{group}]"] + [f"{ep} = {target}" for ep, target in entry_points.items()]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    (dist_info / "RECORD").write_text("")
    return root
