"""Loading ``agent.yaml``: source positions, ``${VAR}`` interpolation and options.

The configuration is read once into plain Python values (``dict``, ``list``,
``str``, ``int``, ``float``, ``bool``, ``None``) while remembering the file, line
and column of every key and value, so that any later complaint about a setting,
including one raised by a backend through :meth:`Options.parse` or
:meth:`Options.error`, points at the place the user has to edit.

Where the configuration comes from, first match wins: the path given to
:func:`load_config`, the file named by ``MLFLOW_AGENT_CONFIG``, ``./agent.yaml``,
the built-in :data:`DEFAULT_CONFIG_YAML`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import logging
import math
import os
import re
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError, PluginError
from .redaction import is_secret_name

__all__ = [
    "CONCERNS",
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_YAML",
    "SECTIONS",
    "AgentConfig",
    "Location",
    "Options",
    "config_from_dict",
    "load_config",
    "load_config_text",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

KeyPath = tuple[Union[str, int], ...]

CONFIG_ENV_VAR = "MLFLOW_AGENT_CONFIG"
DEFAULT_CONFIG_FILE = "agent.yaml"
DEFAULTS_SOURCE = "<defaults>"
DICT_SOURCE = "<dict>"

# Kept equal to hookspecs.CONCERNS (a test checks it); repeated here so that reading
# a configuration does not import pluggy.
CONCERNS = ("configuration", "tracking", "registry", "client")
SECTIONS = (*CONCERNS, "inputs", "plugins")
PLUGIN_KEYS = ("allow", "block")

DEFAULT_CONFIG_YAML = """\
# Built-in agent.yaml: used when no file is given, and for every section a file
# leaves out. A section that keeps the default backend inherits its options.
configuration:
  backend: mlflow
  tracking_uri: ${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}
  experiment: quickstart
tracking:
  backend: mlflow
registry:
  backend: pytorch
client:
  backend: mlflow
"""

_TAG = "tag:yaml.org,2002:"
_STR_TAG = _TAG + "str"
_MERGE_TAG = _TAG + "merge"
_TIMESTAMP_TAG = _TAG + "timestamp"
_COLLECTION_TAGS = frozenset((_TAG + "map", _TAG + "seq"))
_CONSTRUCTED_TAGS = frozenset(_TAG + name for name in ("int", "float", "bool", "null"))

# Aliases may expand a small file into a huge tree; no real configuration is this big.
_MAX_NODES = 100_000

_REFERENCE = re.compile(
    r"\$\$\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|\$\{"
)
_ENV_BOOLS = {
    "true": True, "yes": True, "1": True, "false": False, "no": False, "0": False
}
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_URI_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)[^/@]+@")

_announced: set[str] = set()
_announce_lock = threading.Lock()


# --------------------------------------------------------------------------- positions


@dataclasses.dataclass(frozen=True)
class Location:
    """Where something was written: ``source`` with 1-based ``line`` and ``column``."""

    source: str
    line: int | None = None
    column: int | None = None

    def as_tuple(self) -> tuple[str, int | None, int | None]:
        return (self.source, self.line, self.column)

    def error(self, message: str) -> ConfigError:
        return ConfigError(
            message, source=self.source, line=self.line, column=self.column
        )


@dataclasses.dataclass
class _Trace:
    """Positions and origins of the values of one configuration, by key path."""

    source: str
    keys: dict[KeyPath, Location] = dataclasses.field(default_factory=dict)
    values: dict[KeyPath, Location] = dataclasses.field(default_factory=dict)
    env: dict[KeyPath, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    interpolated: set[KeyPath] = dataclasses.field(default_factory=set)

    def key_location(self, path: KeyPath) -> Location:
        """Where the key of ``path`` was written, else the nearest known ancestor."""
        return self._nearest(path, self.keys, self.values)

    def value_location(self, path: KeyPath) -> Location:
        """Where the value of ``path`` starts, else the nearest known ancestor."""
        return self._nearest(path, self.values, self.keys)

    def _nearest(
        self,
        path: KeyPath,
        first: dict[KeyPath, Location],
        second: dict[KeyPath, Location],
    ) -> Location:
        probe = path
        while True:
            found = first.get(probe) or second.get(probe)
            if found is not None:
                return found
            if not probe:
                return Location(self.source)
            probe = probe[:-1]

    def copy_entry(self, other: _Trace, path: KeyPath) -> None:
        """Take the entries of exactly ``path`` from ``other``."""
        if path in other.keys:
            self.keys[path] = other.keys[path]
        if path in other.values:
            self.values[path] = other.values[path]
        if path in other.env:
            self.env[path] = other.env[path]
        if path in other.interpolated:
            self.interpolated.add(path)

    def copy_subtree(self, other: _Trace, prefix: KeyPath) -> None:
        """Take the entries of ``prefix`` and of everything below it from ``other``."""
        size = len(prefix)
        paths = {*other.keys, *other.values, *other.env, *other.interpolated}
        for path in paths:
            if path[:size] == prefix:
                self.copy_entry(other, path)


def _dotted(path: KeyPath) -> str:
    """``("plugins", "allow", 0)`` -> ``plugins.allow[0]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "<top level>"


def _mark_location(source: str, mark: Any) -> Location:
    if mark is None:
        return Location(source)
    return Location(source, mark.line + 1, mark.column + 1)


# ----------------------------------------------------------------------- interpolation


class _InterpolationError(Exception):
    """A ``${...}`` reference could not be expanded; converted to ConfigError."""


def _interpolate(text: str) -> tuple[str, tuple[str, ...], bool]:
    """Expand ``${VAR}``, ``${VAR:-default}`` and ``$${`` in ``text``.

    Returns the new text, the variables whose value (from the environment) was
    used, and whether ``text`` held any reference at all.
    """
    if "${" not in text:
        return text, (), False

    parts: list[str] = []
    used: list[str] = []
    end = 0
    for match in _REFERENCE.finditer(text):
        parts.append(text[end : match.start()])
        end = match.end()
        parts.append(_expand(match, used))
    parts.append(text[end:])
    return "".join(parts), tuple(used), True


def _expand(match: re.Match[str], used: list[str]) -> str:
    token = match.group(0)
    if token == "$${":
        return "${"

    name = match.group("name")
    if name is None:
        raise _InterpolationError(
            f"malformed reference in {match.string!r}; write ${{NAME}} or "
            "${NAME:-default}, or $${ for a literal '${'"
        )

    # Like the shell's ${VAR:-default}: an empty variable also takes the default.
    value = os.environ.get(name)
    default = match.group("default")
    if value is None or (value == "" and default is not None):
        if default is None:
            raise _InterpolationError(
                f"environment variable {name} is not set; export {name}=... or give "
                f"a default with ${{{name}:-...}}"
            )
        return default
    used.append(name)
    return value


# ------------------------------------------------------------------------ YAML reading


class _Loader(yaml.SafeLoader):
    """A safe loader remembering which scalars carry an explicit tag (``!!str``)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.explicit_tags: set[int] = set()

    # PyYAML is untyped and its stubs type ``anchor`` wrongly (it is a str or None).
    def compose_scalar_node(  # type: ignore[override]
        self, anchor: str | None
    ) -> yaml.ScalarNode:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        compose = super().compose_scalar_node
        node: yaml.ScalarNode = compose(anchor)  # type: ignore[arg-type]
        if event.tag not in (None, "!"):
            self.explicit_tags.add(id(node))
        return node


# One constructor turns resolved scalars into values; these methods keep no state.
_CONSTRUCTOR = yaml.SafeLoader("")


def _compose(text: str, source: str) -> tuple[yaml.Node | None, set[int]]:
    loader = _Loader(text)
    try:
        return loader.get_single_node(), loader.explicit_tags
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=source) from None
    finally:
        loader.dispose()


def _syntax_error(exc: yaml.MarkedYAMLError, source: str) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "syntax error"
    if exc.context:
        problem = f"{problem} ({exc.context})"
    return _mark_location(source, mark).error(f"invalid YAML: {problem}")


class _YamlReader:
    """Turns a composed YAML node tree into plain values and a :class:`_Trace`."""

    def __init__(self, source: str, explicit_tags: set[int]) -> None:
        self.source = source
        self._explicit_tags = explicit_tags
        self._open: set[int] = set()
        self._nodes = 0

    def read(self, node: yaml.Node | None) -> tuple[Any, _Trace]:
        trace = _Trace(self.source)
        if node is None:
            return None, trace
        return self._walk(node, (), trace), trace

    def _walk(self, node: yaml.Node, path: KeyPath, trace: _Trace) -> Any:
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise self._at(node, f"{_dotted(path)}: too many values (alias expansion?)")
        trace.values[path] = _mark_location(self.source, node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path, trace)

        if id(node) in self._open:
            raise self._at(node, f"{_dotted(path)}: an alias refers to its own parent")
        if node.tag not in _COLLECTION_TAGS:
            raise self._unsupported_tag(node, path)
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path, trace)
            return [
                self._walk(item, (*path, index), trace)
                for index, item in enumerate(node.value)
            ]
        finally:
            self._open.discard(id(node))

    def _mapping(
        self, node: yaml.MappingNode, path: KeyPath, trace: _Trace
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merged: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.extend(self._merge_sources(value_node, path))
                continue

            key = self._key(key_node, path)
            key_path = (*path, key)
            if key in result:
                first = trace.keys[key_path]
                raise self._at(
                    key_node,
                    f"{_dotted(key_path)}: duplicate key {key!r} (first at line "
                    f"{first.line}); keep only one",
                )
            trace.keys[key_path] = _mark_location(self.source, key_node.start_mark)
            result[key] = self._walk(value_node, key_path, trace)

        # YAML merge keys: explicit keys win, then earlier merged mappings.
        for source_node in merged:
            scratch = _Trace(self.source)
            values = self._walk(source_node, path, scratch)
            for key, value in values.items():
                if key not in result:
                    result[key] = value
                    trace.copy_subtree(scratch, (*path, key))
        return result

    def _merge_sources(self, node: yaml.Node, path: KeyPath) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [node]
        if isinstance(node, yaml.SequenceNode) and all(
            isinstance(item, yaml.MappingNode) for item in node.value
        ):
            return list(node.value)
        raise self._at(
            node,
            f"{_dotted(path)}: '<<' must be followed by a mapping or a list of them",
        )

    def _key(self, node: yaml.Node, path: KeyPath) -> str:
        # Keys are names: 'on', 'yes' or '1' stay text instead of becoming bool/int.
        if not isinstance(node, yaml.ScalarNode):
            raise self._at(
                node,
                f"{_dotted(path)}: keys must be plain names, not a mapping or list",
            )
        return str(node.value)

    def _scalar(self, node: yaml.ScalarNode, path: KeyPath, trace: _Trace) -> Any:
        value = self._construct(node, node.tag, node.value, path)
        if not isinstance(value, str):
            return value

        try:
            text, used, expanded = _interpolate(value)
        except _InterpolationError as exc:
            raise self._at(node, f"{_dotted(path)}: {exc}") from None
        if not expanded:
            return value

        trace.interpolated.add(path)
        if used:
            trace.env[path] = used
        if node.style is None and id(node) not in self._explicit_tags:
            # Typed as if written in the file: "${N:-3}" is 3, "${B:-true}" is True.
            tag = _CONSTRUCTOR.resolve(  # type: ignore[no-untyped-call]
                yaml.ScalarNode, text, (True, False)
            )
            if tag in _CONSTRUCTED_TAGS:
                return self._construct(node, tag, text, path)
        return text

    def _construct(
        self, node: yaml.ScalarNode, tag: str, text: str, path: KeyPath
    ) -> Any:
        if tag in (_STR_TAG, _TIMESTAMP_TAG):
            # Dates stay text: the configuration holds plain values only.
            return text
        if tag not in _CONSTRUCTED_TAGS:
            raise self._unsupported_tag(node, path)
        try:
            constructor = _CONSTRUCTOR.yaml_constructors[tag]
            return constructor(_CONSTRUCTOR, yaml.ScalarNode(tag, text))
        except (ValueError, KeyError):
            kind = tag.removeprefix(_TAG)
            message = f"{_dotted(path)}: {text!r} is not a valid {kind}"
            raise self._at(node, message) from None

    def _unsupported_tag(self, node: yaml.Node, path: KeyPath) -> ConfigError:
        tag = node.tag
        shown = "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag
        return self._at(
            node, f"{_dotted(path)}: unsupported YAML tag {shown}; remove the tag"
        )

    def _at(self, node: yaml.Node, message: str) -> ConfigError:
        return _mark_location(self.source, node.start_mark).error(message)


# ------------------------------------------------------------------------ dict reading


def _read_python(value: Any, path: KeyPath, trace: _Trace) -> Any:
    """Copy a user-given value into plain values, expanding ``${VAR}`` in strings."""
    where = Location(trace.source)
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise where.error(
                    f"{_dotted(path)}: key {key!r} is {_kind(key)}; keys must be str"
                )
            result[key] = _read_python(item, (*path, key), trace)
        return result
    if isinstance(value, (list, tuple)):
        return [_read_python(item, (*path, i), trace) for i, item in enumerate(value)]
    if isinstance(value, os.PathLike):
        return str(os.fspath(value))
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if not isinstance(value, str):
        raise where.error(
            f"{_dotted(path)}: unsupported value of type {type(value).__name__}; use "
            "str, int, float, bool, None, lists and mappings"
        )

    try:
        text, used, expanded = _interpolate(value)
    except _InterpolationError as exc:
        raise where.error(f"{_dotted(path)}: {exc}") from None
    if expanded:
        trace.interpolated.add(path)
    if used:
        trace.env[path] = used
    return text


# ------------------------------------------------------------------------ building


def _parse_yaml(text: str, source: str) -> tuple[Any, _Trace]:
    node, explicit_tags = _compose(text, source)
    return _YamlReader(source, explicit_tags).read(node)


def _defaults() -> tuple[dict[str, Any], _Trace]:
    data, trace = _parse_yaml(DEFAULT_CONFIG_YAML, DEFAULTS_SOURCE)
    return data, trace


def _check_top_level(data: Any, trace: _Trace) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise trace.value_location(()).error(
            f"the configuration must be a mapping of sections ({', '.join(SECTIONS)}), "
            f"got {_kind(data)}"
        )

    checked: dict[str, Any] = {}
    for name, section in data.items():
        if name not in SECTIONS:
            raise trace.key_location((name,)).error(
                f"unknown section {name!r}{_suggest(name, SECTIONS)}"
            )
        checked[name] = _check_section(name, section, trace)
    return checked


def _check_section(name: str, section: Any, trace: _Trace) -> dict[str, Any]:
    # 'tracking:' with nothing under it reads as null: the same as an empty section.
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise trace.value_location((name,)).error(
            f"{name}: expected mapping, got {_kind(section)} ({_show(section)})"
        )

    if name in CONCERNS and "backend" in section:
        backend = section["backend"]
        if not isinstance(backend, str) or not backend.strip():
            raise trace.value_location((name, "backend")).error(
                f"{name}.backend: expected the name of a backend (str), got "
                f"{_kind(backend)} ({_show(backend)})"
            )
        section["backend"] = backend.strip()
    if name == "plugins":
        _check_plugins(section, trace)
    return section


def _check_plugins(section: dict[str, Any], trace: _Trace) -> None:
    for key, value in section.items():
        path: KeyPath = ("plugins", key)
        if key not in PLUGIN_KEYS:
            raise trace.key_location(path).error(
                f"plugins: unknown key {key!r}{_suggest(key, PLUGIN_KEYS)}"
            )
        if value is None:
            continue
        if not isinstance(value, list):
            raise trace.value_location(path).error(
                f"{_dotted(path)}: expected list of str (plugin names), got "
                f"{_kind(value)} ({_show(value)})"
            )
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise trace.value_location((*path, index)).error(
                    f"{_dotted((*path, index))}: expected str (a plugin name), got "
                    f"{_kind(item)} ({_show(item)})"
                )


def _merge(
    user: dict[str, Any], user_trace: _Trace
) -> tuple[dict[str, Any], _Trace]:
    defaults, default_trace = _defaults()
    data: dict[str, Any] = {}
    trace = _Trace(user_trace.source)
    for concern in CONCERNS:
        data[concern] = _merge_concern(
            concern, defaults[concern], default_trace, user, user_trace, trace
        )

    for name in ("inputs", "plugins"):
        # An empty section means the same as none, so both compare equal.
        if user.get(name):
            data[name] = user[name]
            trace.copy_subtree(user_trace, (name,))
    return data, trace


def _merge_concern(
    concern: str,
    default: dict[str, Any],
    default_trace: _Trace,
    user: dict[str, Any],
    user_trace: _Trace,
    trace: _Trace,
) -> dict[str, Any]:
    if concern not in user:
        trace.copy_subtree(default_trace, (concern,))
        return dict(default)

    section = user[concern]
    trace.copy_entry(user_trace, (concern,))
    backend = section.get("backend", default["backend"])
    merged: dict[str, Any] = {"backend": backend}
    if "backend" not in section:
        trace.copy_subtree(default_trace, (concern, "backend"))

    # Options belong to a backend: another backend's defaults would be unknown keys.
    if backend == default["backend"]:
        for key, value in default.items():
            if key not in section:
                merged[key] = value
                trace.copy_subtree(default_trace, (concern, key))
    for key, value in section.items():
        merged[key] = value
        trace.copy_subtree(user_trace, (concern, key))
    return merged


def _build(data: Any, trace: _Trace, label: str) -> AgentConfig:
    user = _check_top_level(data, trace)
    merged, merged_trace = _merge(user, trace)
    return AgentConfig(merged, label, trace=merged_trace)


# ------------------------------------------------------------------------ messages


def _kind(value: Any) -> str:
    """The YAML-ish name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _suggest(name: str, valid: tuple[str, ...] | list[str]) -> str:
    """``; did you mean 'x'?`` (when one is close) and the valid names."""
    close = difflib.get_close_matches(name, valid, n=1)
    listed = ", ".join(valid) if valid else "none"
    if close:
        return f"; did you mean {close[0]!r}? Valid keys: {listed}"
    return f"; valid keys: {listed}"


def _is_secret(path: KeyPath) -> bool:
    return any(isinstance(part, str) and is_secret_name(part) for part in path)


def _redact(value: Any, path: KeyPath = ()) -> Any:
    """A copy of ``value`` with secret-looking keys and URI passwords masked."""
    if isinstance(value, Mapping):
        return {key: _redact(item, (*path, key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(item, path) for item in value]
    if _is_secret(path):
        return "***"
    if isinstance(value, str):
        return _URI_PASSWORD.sub(r"\g<head>***@", value)
    return value


# ------------------------------------------------------------------------ options


class Options(Mapping[str, Any]):
    """The options of one section of ``agent.yaml``, without its ``backend`` key.

    A read-only mapping that remembers where each key was written. A backend
    validates it with :meth:`parse` and reports semantic problems with
    :meth:`error`; both give ``file:line:column`` in the message.
    """

    def __init__(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        section: str = "options",
        source: str = DICT_SOURCE,
        trace: _Trace | None = None,
    ) -> None:
        self.section = section
        self.source = source
        self._values: dict[str, Any] = copy.deepcopy(dict(values or {}))
        self._trace = trace if trace is not None else _Trace(source)

    def __getitem__(self, key: str) -> Any:
        return copy.deepcopy(self._values[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        shown = _redact(self._values, (self.section,))
        return f"Options({self.section!r}, source={self.source!r}, {shown!r})"

    def position(self, key: str | None = None) -> tuple[str, int | None, int | None]:
        """``(source, line, column)`` of ``key``, or of the section (``key=None``)."""
        path: KeyPath = (self.section,) if key is None else (self.section, key)
        return self._trace.key_location(path).as_tuple()

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError about ``key`` (at the section when ``key`` is not set)."""
        path: KeyPath = (self.section, key)
        return self._trace.key_location(path).error(f"{_dotted(path)}: {message}")

    def parse(self, schema: type[T]) -> T:
        """Check these options against the dataclass ``schema`` and build it.

        Unknown keys, missing required fields, wrong types and values outside a
        ``Literal`` raise :class:`ConfigError` at the offending position. A field's
        ``metadata={"help": ...}`` is added to errors about that field.
        """
        if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
            raise PluginError(f"Options.parse needs a dataclass type, got {schema!r}")
        return _OptionParser(self._trace).dataclass(
            schema, self._values, (self.section,)
        )


class _OptionParser:
    """Checks and converts option values against dataclass field annotations."""

    def __init__(self, trace: _Trace) -> None:
        self._trace = trace

    def dataclass(self, schema: type[T], values: Mapping[str, Any], path: KeyPath) -> T:
        every = dataclasses.fields(schema)  # type: ignore[arg-type]
        fields = {f.name: f for f in every if f.init}
        hints = self._hints(schema)
        for key in values:
            if key not in fields:
                raise self._trace.key_location((*path, key)).error(
                    f"{_dotted(path)}: unknown key {key!r}{_suggest(key, list(fields))}"
                )

        missing = [
            name for name, f in fields.items() if name not in values and _required(f)
        ]
        if missing:
            raise self._trace.key_location(path).error(
                f"{_dotted(path)}: missing required key "
                + "; ".join(_with_help(repr(name), fields[name]) for name in missing)
            )

        kwargs = {
            key: self.value(value, hints[key], (*path, key), fields[key])
            for key, value in values.items()
        }
        try:
            return schema(**kwargs)
        except ValueError as exc:
            where = self._trace.key_location(path)
            raise where.error(f"{_dotted(path)}: {exc}") from None

    def _hints(self, schema: type[Any]) -> dict[str, Any]:
        try:
            return get_type_hints(schema)
        except Exception as exc:
            raise PluginError(
                f"cannot resolve the annotations of {schema.__qualname__}: {exc}"
            ) from exc

    def value(
        self, value: Any, tp: Any, path: KeyPath, field: dataclasses.Field[Any]
    ) -> Any:
        """``value`` converted to ``tp``; ConfigError at ``path`` if it does not fit."""
        origin = get_origin(tp)
        if tp is Any:
            return copy.deepcopy(value)
        if origin in (Union, types.UnionType):
            return self._union(value, tp, path, field)
        if origin is Literal:
            if any(type(value) is type(a) and value == a for a in get_args(tp)):
                return value
            raise self._mismatch(value, tp, path, field)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise self._mismatch(value, tp, path, field)
            return self.dataclass(tp, value, path)
        if origin in (list, tuple) or tp in (list, tuple):
            return self._sequence(value, tp, path, field)
        if origin is dict or tp is dict or origin is Mapping:
            return self._mapping(value, tp, path, field)

        convert = _SCALARS.get(tp)
        if convert is None:
            raise PluginError(
                f"{_dotted(path)}: Options.parse does not support the annotation {tp!r}"
            )
        result = convert(value, path in self._trace.interpolated)
        if result is _NO_MATCH:
            raise self._mismatch(value, tp, path, field)
        return result

    def _union(
        self, value: Any, tp: Any, path: KeyPath, field: dataclasses.Field[Any]
    ) -> Any:
        members = get_args(tp)
        if value is None and type(None) in members:
            return None
        others = [member for member in members if member is not type(None)]
        if len(others) == 1 and _is_structured(others[0]):
            # A list or mapping is checked item by item: the item's error is precise.
            return self.value(value, others[0], path, field)
        for member in others:
            try:
                return self.value(value, member, path, field)
            except ConfigError:
                continue
        raise self._mismatch(value, tp, path, field)

    def _sequence(
        self, value: Any, tp: Any, path: KeyPath, field: dataclasses.Field[Any]
    ) -> Any:
        if not isinstance(value, (list, tuple)):
            raise self._mismatch(value, tp, path, field)
        args = get_args(tp)
        outer = get_origin(tp) or tp
        if outer is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise self._mismatch(value, tp, path, field)
            items = [
                self.value(v, a, (*path, i), field)
                for i, (v, a) in enumerate(zip(value, args))
            ]
        else:
            item_tp = args[0] if args else Any
            items = [
                self.value(v, item_tp, (*path, i), field) for i, v in enumerate(value)
            ]
        return tuple(items) if outer is tuple else items

    def _mapping(
        self, value: Any, tp: Any, path: KeyPath, field: dataclasses.Field[Any]
    ) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self._mismatch(value, tp, path, field)
        args = get_args(tp)
        key_tp, item_tp = args if args else (Any, Any)
        return {
            self.value(k, key_tp, (*path, k), field): self.value(
                v, item_tp, (*path, k), field
            )
            for k, v in value.items()
        }

    def _mismatch(
        self, value: Any, tp: Any, path: KeyPath, field: dataclasses.Field[Any]
    ) -> ConfigError:
        shown = "***" if _is_secret(path) else _show(value)
        expected = _type_name(tp)
        message = f"{_dotted(path)}: expected {expected}, got {_kind(value)} ({shown})"
        return self._trace.value_location(path).error(_with_help(message, field))


def _is_structured(tp: Any) -> bool:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return True
    return (get_origin(tp) or tp) in (list, tuple, dict, Mapping)


def _required(field: dataclasses.Field[Any]) -> bool:
    return (
        field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    )


def _with_help(message: str, field: dataclasses.Field[Any]) -> str:
    help_text = field.metadata.get("help")
    return f"{message} ({field.name}: {help_text})" if help_text else message


def _type_name(tp: Any) -> str:
    """How an annotation reads in a message: ``int or null``, ``list of str``..."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any value"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "mapping"
    if origin in (list, tuple) or tp in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin in (dict, Mapping) or tp is dict:
        if not args:
            return "mapping"
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    if tp is Path:
        return "path (str)"
    return getattr(tp, "__name__", repr(tp))


_NO_MATCH = object()


def _to_bool(value: Any, from_env: bool) -> Any:
    if isinstance(value, bool):
        return value
    # Quoted env values reach here as text; plain ones were already resolved by YAML.
    if from_env and isinstance(value, str):
        return _ENV_BOOLS.get(value.strip().lower(), _NO_MATCH)
    return _NO_MATCH


def _to_int(value: Any, from_env: bool) -> Any:
    if isinstance(value, bool):
        return _NO_MATCH
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value)
    return _NO_MATCH


def _to_float(value: Any, from_env: bool) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return _NO_MATCH
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return _NO_MATCH
    # NaN and infinities make no sense as an interval, a size or a timeout.
    return number if math.isfinite(number) else _NO_MATCH


def _to_str(value: Any, from_env: bool) -> Any:
    return value if isinstance(value, str) else _NO_MATCH


def _to_path(value: Any, from_env: bool) -> Any:
    if isinstance(value, str) and value.strip():
        return Path(value).expanduser()
    return _NO_MATCH


def _to_none(value: Any, from_env: bool) -> Any:
    return None if value is None else _NO_MATCH


_SCALARS: dict[Any, Callable[[Any, bool], Any]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
    Path: _to_path,
    type(None): _to_none,
}


# ------------------------------------------------------------------------ the config


class AgentConfig:
    """A loaded configuration: every section merged with the defaults.

    ``data`` is the merged, interpolated configuration as plain values; two configs
    are equal when their ``data`` is. ``source`` says where it came from.
    """

    __hash__ = None  # type: ignore[assignment]

    def __init__(
        self, data: dict[str, Any], source: str, *, trace: _Trace | None = None
    ) -> None:
        self.data = data
        self.source = source
        self._trace = trace if trace is not None else _Trace(source)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AgentConfig):
            return NotImplemented
        return self.fingerprint == other.fingerprint

    def __repr__(self) -> str:
        backends = ", ".join(f"{c}={self.backend(c)}" for c in CONCERNS)
        return f"AgentConfig(source={self.source!r}, {backends})"

    @property
    def fingerprint(self) -> str:
        """A canonical text of ``data``; equal configs have equal fingerprints."""
        return json.dumps(self.data, sort_keys=True, default=str)

    def backend(self, concern: str) -> str:
        """The backend selected for ``concern``."""
        if concern not in CONCERNS:
            raise ConfigError(
                f"unknown concern {concern!r}; one of {', '.join(CONCERNS)}"
            )
        return str(self.data[concern]["backend"])

    def options(self, section: str) -> Options:
        """The options of a concern's section, or of ``inputs``; no ``backend``."""
        if section not in (*CONCERNS, "inputs"):
            raise ConfigError(
                f"no options section {section!r}; one of {', '.join(CONCERNS)}, inputs"
            )
        values = {k: v for k, v in self.data.get(section, {}).items() if k != "backend"}
        source = self._trace.key_location((section,)).source
        return Options(values, section=section, source=source, trace=self._trace)

    @property
    def allow(self) -> tuple[str, ...] | None:
        """Plugins allowed by ``plugins.allow``; None when no allow list is set."""
        names = self.data.get("plugins", {}).get("allow")
        return None if names is None else tuple(names)

    @property
    def block(self) -> tuple[str, ...]:
        """Plugins blocked by ``plugins.block``."""
        return tuple(self.data.get("plugins", {}).get("block") or ())

    def position(self, path: KeyPath) -> tuple[str, int | None, int | None]:
        """``(source, line, column)`` where the setting at ``path`` was written."""
        return self._trace.key_location(tuple(path)).as_tuple()

    def provenance(self, path: KeyPath) -> str:
        """Where the value at ``path`` came from: ``file:line``, ``default``, env."""
        path = tuple(path)
        if not _has_path(self.data, path):
            raise ConfigError(f"{_dotted(path)}: no such setting in the configuration")

        where = self._trace.key_location(path)
        if where.source == DEFAULTS_SOURCE:
            origin = "default"
        elif where.line is None:
            origin = where.source
        else:
            origin = f"{where.source}:{where.line}"
        names = self._trace.env.get(path)
        return f"env {', '.join(names)} ({origin})" if names else origin

    def redacted(self) -> dict[str, Any]:
        """``data`` with secret-looking keys and passwords in URIs masked."""
        result: dict[str, Any] = _redact(self.data)
        return result


def _has_path(data: Any, path: KeyPath) -> bool:
    for part in path:
        if isinstance(data, dict) and isinstance(part, str) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return False
    return True


# ------------------------------------------------------------------------ entry points


def load_config_text(text: str, source: str = "<text>") -> AgentConfig:
    """Build a configuration from ``agent.yaml`` text; errors name ``source``."""
    data, trace = _parse_yaml(text, source)
    return _build(data, trace, source)


def config_from_dict(data: Mapping[str, Any]) -> AgentConfig:
    """Build a configuration from a mapping shaped like ``agent.yaml``.

    Validated, interpolated and merged with the defaults like a file; errors name
    ``<dict>`` and have no line or column.
    """
    trace = _Trace(DICT_SOURCE)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the configuration must be a mapping of sections, got {_kind(data)}",
            source=DICT_SOURCE,
        )
    return _build(_read_python(data, (), trace), trace, DICT_SOURCE)


def load_config(path: str | os.PathLike[str] | None = None) -> AgentConfig:
    """Load the agent's configuration.

    First match wins: ``path``, the file named by ``MLFLOW_AGENT_CONFIG``,
    ``./agent.yaml``, the built-in defaults. A named file that does not exist is
    a :class:`ConfigError`.
    """
    file, label = _discover(path)
    if file is None:
        config = _build(None, _Trace(DEFAULTS_SOURCE), DEFAULTS_SOURCE)
    else:
        data, trace = _parse_yaml(_read_file(file), file)
        config = _build(data, trace, label)
    _announce(config.source)
    return config


def _discover(path: str | os.PathLike[str] | None) -> tuple[str | None, str]:
    if path is not None:
        file = os.path.expanduser(os.fspath(path))
        _require_file(file, "check the path of the configuration file")
        return file, file

    named = os.environ.get(CONFIG_ENV_VAR, "")
    if named:
        file = os.path.expanduser(named)
        _require_file(
            file, f"it is named by {CONFIG_ENV_VAR}; fix or unset {CONFIG_ENV_VAR}"
        )
        return file, f"{file} (from {CONFIG_ENV_VAR})"

    if os.path.isfile(DEFAULT_CONFIG_FILE):
        return DEFAULT_CONFIG_FILE, DEFAULT_CONFIG_FILE
    return None, DEFAULTS_SOURCE


def _require_file(file: str, hint: str) -> None:
    if not os.path.exists(file):
        raise ConfigError(f"config file {file!r} does not exist ({hint})")
    if not os.path.isfile(file):
        raise ConfigError(f"config file {file!r} is not a file ({hint})")


def _read_file(file: str) -> str:
    try:
        raw = Path(file).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the config file: {exc.strerror}", source=file
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"the config file is not UTF-8 text (byte {exc.start}); save it as UTF-8",
            source=file,
        ) from None


def _announce(source: str) -> None:
    with _announce_lock:
        if source in _announced:
            return
        _announced.add(source)
    logger.info("Using agent configuration from %s", source)
