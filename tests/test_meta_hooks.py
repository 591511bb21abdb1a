"""Every hook is documented, in its docstring and in the guide, and tested.

Adding a hook to ``hookspecs.py`` fails these tests until it has a docstring, a
section with its exact signature in ``docs/writing-a-plugin.md``, and a test that
implements it and does what makes the agent call it.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflow_agent_core import hookspecs

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "writing-a-plugin.md"
TEST_FOLDERS = [
    ROOT / "tests",
    *sorted((ROOT / "plugins").glob("*/tests")),
    *sorted((ROOT / "examples").glob("*/tests")),
]

# What a test must do for the agent to call each hook; a new hook needs an entry.
TRIGGERS: dict[str, tuple[str, ...]] = {
    "mlflow_agent_register_strategies": (
        "MLFlowAgent", "agent_factory", "mlflow_agent"
    ),
    "mlflow_agent_run_started": ("start_run",),
    "mlflow_agent_run_finished": ("start_run",),
    "mlflow_agent_model_registered": ("register_model",),
}


def hook_specs() -> dict[str, Callable[..., Any]]:
    return {
        name: function
        for name, function in vars(hookspecs).items()
        if name.startswith(f"{hookspecs.PROJECT}_") and callable(function)
    }


HOOKS = sorted(hook_specs())


def signature_line(function: Callable[..., Any]) -> str:
    """``def name(arg: Type, ...) -> Ret`` as written in the spec module."""
    signature = inspect.signature(function)
    params = ", ".join(
        f"{p.name}: {p.annotation}" for p in signature.parameters.values()
    )
    return f"def {function.__name__}({params}) -> {signature.return_annotation}"


def test_the_spec_module_has_hooks() -> None:
    assert "mlflow_agent_register_strategies" in HOOKS
    assert len(HOOKS) == len(TRIGGERS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring_saying_how_results_combine(hook: str) -> None:
    doc = inspect.getdoc(hook_specs()[hook]) or ""

    assert len(doc.split()) >= 15, f"{hook} needs a docstring: when, what, results"
    assert "return" in doc.lower(), f"{hook}'s docstring must say what return does"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_in_the_guide_with_its_exact_signature(hook: str) -> None:
    guide = GUIDE.read_text()

    assert f"### {hook}\n" in guide, f"{GUIDE.name} needs a section '### {hook}'"
    assert signature_line(hook_specs()[hook]) in guide, (
        f"{GUIDE.name} must show: {signature_line(hook_specs()[hook])}"
    )


def test_signature_line_reads_like_the_spec() -> None:
    line = signature_line(hook_specs()["mlflow_agent_run_finished"])

    assert line == (
        "def mlflow_agent_run_finished(agent: MLFlowAgent, run: Run, status: str)"
        " -> None"
    )


def iter_test_files() -> Iterator[Path]:
    for folder in TEST_FOLDERS:
        for path in sorted(folder.rglob("test_*.py")):
            if path.name != Path(__file__).name:
                yield path


def implementations(tree: ast.AST, hook: str) -> list[ast.FunctionDef]:
    return [
        node for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and node.name == hook
        and any(_is_hookimpl(d) for d in node.decorator_list)
    ]


def _is_hookimpl(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(target, ast.Attribute):
        return target.attr == "hookimpl"
    return isinstance(target, ast.Name) and target.id == "hookimpl"


def called_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_implemented_and_triggered_by_a_test(hook: str) -> None:
    assert hook in TRIGGERS, f"add {hook} to TRIGGERS with what makes it called"

    testing_files = []
    for path in iter_test_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        if implementations(tree, hook) and set(TRIGGERS[hook]) & called_names(tree):
            testing_files.append(path.name)

    assert testing_files, (
        f"no test implements {hook} with @hookimpl and calls one of "
        f"{', '.join(TRIGGERS[hook])}"
    )


def test_the_check_finds_an_untested_hook(tmp_path: Path) -> None:
    source = (
        "from mlflow_agent_core import hookimpl\n"
        "class P:\n"
        "    @hookimpl\n"
        "    def mlflow_agent_run_started(self, run):\n"
        "        pass\n"
    )
    tree = ast.parse(source)

    assert implementations(tree, "mlflow_agent_run_started")
    assert not implementations(tree, "mlflow_agent_model_registered")
    assert "start_run" not in called_names(tree)
