"""Loading agent.yaml: positions, interpolation, merging, discovery and Options."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from mlflow_agent_core import hookspecs
from mlflow_agent_core.config import (
    CONCERNS,
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_YAML,
    AgentConfig,
    Options,
    config_from_dict,
    load_config,
    load_config_text,
)
from mlflow_agent_core.errors import ConfigError, PluginError
from mlflow_agent_core.validation import InputPolicy

DEFAULT_DATA = {
    "configuration": {
        "backend": "mlflow",
        "tracking_uri": "sqlite:///mlflow.db",
        "experiment": "quickstart",
    },
    "tracking": {"backend": "mlflow"},
    "registry": {"backend": "pytorch"},
    "client": {"backend": "mlflow"},
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stray configuration from the environment or the working directory."""
    for name in ("MLFLOW_TRACKING_URI", CONFIG_ENV_VAR, "N", "B", "X", "Y"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def raises_at(
    source: str, line: int | None, column: int | None, *fragments: str
) -> Any:
    """Context manager: a ConfigError at that position whose text has ``fragments``."""
    return _RaisesAt(source, line, column, fragments)


class _RaisesAt:
    def __init__(
        self,
        source: str,
        line: int | None,
        column: int | None,
        fragments: tuple[str, ...],
    ) -> None:
        self.expected = (source, line, column)
        self.fragments = fragments
        self.error: ConfigError | None = None

    def __enter__(self) -> _RaisesAt:
        self._ctx = pytest.raises(ConfigError)
        self._info = self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> bool:
        suppressed = self._ctx.__exit__(*exc)
        error = self._info.value
        self.error = error
        assert (error.source, error.line, error.column) == self.expected, str(error)
        for fragment in self.fragments:
            assert fragment in str(error), (fragment, str(error))
        return bool(suppressed)


def write(tmp_path: Path, text: str, name: str = "agent.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------- defaults


def test_defaults_when_nothing_is_configured() -> None:
    config = load_config()

    assert config.source == "<defaults>"
    assert config.data == DEFAULT_DATA
    backends = [config.backend(concern) for concern in CONCERNS]
    assert backends == ["mlflow", "mlflow", "pytorch", "mlflow"]
    assert config.allow is None
    assert config.block == ()


def test_concerns_match_the_hook_contract() -> None:
    assert CONCERNS == hookspecs.CONCERNS


def test_default_yaml_reads_the_tracking_uri_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")

    config = load_config_text(DEFAULT_CONFIG_YAML, "<defaults>")

    assert config.data["configuration"]["tracking_uri"] == "http://127.0.0.1:5999"
    assert load_config().provenance(("configuration", "tracking_uri")) == (
        "env MLFLOW_TRACKING_URI (default)"
    )


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "# nothing here\n"))

    assert config.data == DEFAULT_DATA


# ----------------------------------------------------------------------- YAML errors


def test_syntax_error_has_file_line_and_column() -> None:
    text = "tracking:\n  backend: mlflow\n  batch: [1, 2\n"

    with raises_at("bad.yaml", 4, 1, "invalid YAML", "flow sequence"):
        load_config_text(text, "bad.yaml")


def test_tab_indentation_is_a_syntax_error_at_the_tab() -> None:
    with raises_at("t.yaml", 2, 1, "invalid YAML"):
        load_config_text("tracking:\n\tbackend: mlflow\n", "t.yaml")


def test_duplicate_key_points_at_the_second_one() -> None:
    text = "tracking:\n  backend: mlflow\n  batch: 1\n  batch: 2\n"

    with raises_at("d.yaml", 4, 3, "tracking.batch: duplicate key 'batch'", "line 3"):
        load_config_text(text, "d.yaml")


def test_duplicate_section_is_rejected() -> None:
    with raises_at("d.yaml", 3, 1, "duplicate key 'client'"):
        load_config_text("client: {}\ntracking: {}\nclient: {}\n", "d.yaml")


def test_unknown_section_suggests_the_closest_name() -> None:
    text = "configuration: {}\ntraking:\n  backend: mlflow\n"

    with raises_at(
        "u.yaml", 2, 1,
        "unknown section 'traking'", "did you mean 'tracking'?",
        "Valid keys: configuration, tracking, registry, client, inputs, plugins",
    ):
        load_config_text(text, "u.yaml")


def test_unknown_section_without_a_close_name_lists_valid_keys() -> None:
    with raises_at("u.yaml", 1, 1, "unknown section 'zzz'; valid keys:") as caught:
        load_config_text("zzz: 1\n", "u.yaml")

    assert caught.error is not None
    assert "did you mean" not in str(caught.error)


def test_section_must_be_a_mapping() -> None:
    with raises_at("s.yaml", 2, 11, "registry: expected mapping, got list (['a'])"):
        load_config_text("tracking: {}\nregistry: [a]\n", "s.yaml")


@pytest.mark.parametrize("section", ["inputs", "plugins", "client"])
def test_every_section_must_be_a_mapping(section: str) -> None:
    with raises_at("s.yaml", 1, len(section) + 3, f"{section}: expected mapping"):
        load_config_text(f"{section}: text\n", "s.yaml")


def test_top_level_must_be_a_mapping() -> None:
    with raises_at("top.yaml", 1, 1, "must be a mapping of sections", "got list"):
        load_config_text("- tracking\n", "top.yaml")


def test_backend_must_be_a_name() -> None:
    with raises_at("b.yaml", 2, 12, "tracking.backend: expected the name of a backend"):
        load_config_text("tracking:\n  backend: 3\n", "b.yaml")


def test_unsupported_tag_is_rejected() -> None:
    with raises_at("tag.yaml", 2, 9, "unsupported YAML tag", "!!binary"):
        load_config_text("inputs:\n  blob: !!binary aGVsbG8=\n", "tag.yaml")


@pytest.mark.parametrize(
    ("text", "column", "shown"),
    [
        ("inputs:\n  blob: !!binary aGVsbG8=\n", 9, "!!binary"),
        ("inputs:\n  s: !!set {a: null}\n", 6, "!!set"),
        ("inputs:\n  o: !thing [1]\n", 6, "!thing"),
    ],
)
def test_unsupported_tags_are_rejected(text: str, column: int, shown: str) -> None:
    with raises_at("tag.yaml", 2, column, f"unsupported YAML tag {shown}"):
        load_config_text(text, "tag.yaml")


def test_plugins_lists_are_checked() -> None:
    text = "plugins:\n  block:\n    - a\n    - 3\n"

    with raises_at("p.yaml", 4, 7, "plugins.block[1]: expected str", "got int (3)"):
        load_config_text(text, "p.yaml")


# ----------------------------------------------------------------------- interpolation


def test_interpolation_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "alpha")
    monkeypatch.setenv("Y", "beta")
    text = "inputs:\n  both: ${X}-${Y:-none}/${N:-7}\n  escaped: $${X} costs $$5\n"

    config = load_config_text(text, "i.yaml")

    inputs = config.data["inputs"]
    assert inputs["both"] == "alpha-beta/7"
    assert inputs["escaped"] == "${X} costs $$5"
    assert config.provenance(("inputs", "both")) == "env X, Y (i.yaml:2)"
    assert config.provenance(("inputs", "escaped")) == "i.yaml:3"


def test_unset_variable_without_default_names_it_and_the_fix() -> None:
    text = "configuration:\n  tracking_uri: ${X}\n"

    with raises_at(
        "e.yaml", 2, 17,
        "configuration.tracking_uri: environment variable X is not set",
        "export X=", "${X:-...}",
    ):
        load_config_text(text, "e.yaml")


def test_empty_variable_takes_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "")

    config = load_config_text("inputs:\n  a: ${X:-fallback}\n  b: <${X}>\n", "e.yaml")

    assert config.data["inputs"] == {"a": "fallback", "b": "<>"}


def test_malformed_reference_is_an_error() -> None:
    with raises_at("m.yaml", 2, 6, "inputs.a: malformed reference", "$${"):
        load_config_text("inputs:\n  a: ${X-default}\n", "m.yaml")


def test_plain_scalars_are_retyped_after_interpolation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("B", "off")
    text = (
        "inputs:\n"
        "  count: ${N:-3}\n"
        "  flag: ${B}\n"
        "  on: ${X:-true}\n"
        "  ratio: ${X:-0.5}\n"
        "  nothing: ${X:-null}\n"
        "  quoted: '${N:-3}'\n"
        "  double: \"${X:-true}\"\n"
        "  tagged: !!str ${N:-4}\n"
        "  merge: ${X:-<<}\n"
        "  block: |\n"
        "    ${N:-5}\n"
    )

    inputs = load_config_text(text, "r.yaml").data["inputs"]

    assert inputs == {
        "count": 3,
        "flag": False,
        "on": True,
        "ratio": 0.5,
        "nothing": None,
        "quoted": "3",
        "double": "true",
        "tagged": "4",
        "merge": "<<",
        "block": "5\n",
    }
    assert type(inputs["count"]) is int


def test_keys_are_names_not_booleans() -> None:
    config = load_config_text("inputs:\n  on: 1\n  yes: 2\n  3: x\n", "k.yaml")

    assert config.data["inputs"] == {"on": 1, "yes": 2, "3": "x"}


def test_dates_stay_text() -> None:
    config = load_config_text("inputs:\n  since: 2024-01-31\n", "d.yaml")

    assert config.data["inputs"] == {"since": "2024-01-31"}


def test_anchors_and_merge_keys() -> None:
    text = (
        "inputs:\n"
        "  base: &base {a: 1, b: 2}\n"
        "  copy:\n"
        "    <<: *base\n"
        "    b: 3\n"
    )

    config = load_config_text(text, "a.yaml")

    assert config.data["inputs"]["copy"] == {"b": 3, "a": 1}
    assert config.position(("inputs", "copy", "b")) == ("a.yaml", 5, 5)
    assert config.position(("inputs", "copy", "a")) == ("a.yaml", 2, 16)


def test_alias_expansion_is_bounded() -> None:
    lines = ["inputs:", "  l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 7):
        aliases = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"  l{level}: &l{level} [{aliases}]")

    with pytest.raises(ConfigError, match="too many values"):
        load_config_text("\n".join(lines) + "\n", "bomb.yaml")


def test_explicit_tag_with_a_bad_value() -> None:
    with raises_at("i.yaml", 2, 9, "inputs.size: 'ten' is not a valid int"):
        load_config_text("inputs:\n  size: !!int ten\n", "i.yaml")


def test_positions_of_list_items_and_sections() -> None:
    text = "plugins:\n  block:\n    - one\n    - two\n"

    config = load_config_text(text, "l.yaml")

    assert config.position(("plugins", "block", 1)) == ("l.yaml", 4, 7)
    assert config.position(("plugins",)) == ("l.yaml", 1, 1)
    assert config.provenance(("plugins", "block", 1)) == "l.yaml:4"
    with pytest.raises(ConfigError, match="no such setting"):
        config.provenance(("plugins", "allow"))


def test_recursive_alias_is_rejected() -> None:
    # The anchored node is where the loop starts.
    with raises_at("r.yaml", 2, 6, "inputs.a[0]: an alias refers to its own parent"):
        load_config_text("inputs:\n  a: &x\n    - *x\n", "r.yaml")


# ----------------------------------------------------------------------- merging


def test_missing_section_uses_the_default_section(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "tracking:\n  batch_size: 10\n"))

    assert config.data["configuration"] == DEFAULT_DATA["configuration"]
    assert config.data["tracking"] == {"backend": "mlflow", "batch_size": 10}
    assert config.provenance(("tracking", "backend")) == "default"
    assert config.provenance(("tracking", "batch_size")).endswith("agent.yaml:2")


def test_same_backend_keeps_default_options_and_user_keys_win() -> None:
    text = "configuration:\n  backend: mlflow\n  experiment: mine\n"

    config = load_config_text(text, "m.yaml")

    assert config.data["configuration"] == {
        "backend": "mlflow",
        "tracking_uri": "sqlite:///mlflow.db",
        "experiment": "mine",
    }
    assert config.provenance(("configuration", "experiment")) == "m.yaml:3"
    assert config.provenance(("configuration", "tracking_uri")) == "default"
    assert config.options("configuration").position("tracking_uri") == (
        "<defaults>", 5, 3,
    )


def test_omitted_backend_means_the_default_backend() -> None:
    config = load_config_text("configuration:\n  experiment: mine\n", "m.yaml")

    assert config.backend("configuration") == "mlflow"
    assert config.data["configuration"]["tracking_uri"] == "sqlite:///mlflow.db"


def test_other_backend_does_not_inherit_default_options() -> None:
    text = (
        "configuration:\n  backend: custom\n  endpoint: x\n"
        "registry:\n  backend: ' sklearn '\n"
    )

    config = load_config_text(text, "o.yaml")

    assert config.data["configuration"] == {"backend": "custom", "endpoint": "x"}
    assert config.data["registry"] == {"backend": "sklearn"}
    assert dict(config.options("configuration")) == {"endpoint": "x"}


def test_empty_section_header_is_an_empty_section() -> None:
    config = load_config_text("tracking:\ninputs:\n", "e.yaml")

    assert config.data == DEFAULT_DATA


def test_plugins_allow_and_block() -> None:
    config = load_config_text("plugins:\n  allow: [a, b]\n  block: [c]\n", "p.yaml")

    assert config.allow == ("a", "b")
    assert config.block == ("c",)
    assert load_config_text("plugins:\n  allow: []\n", "p.yaml").allow == ()


def test_unknown_plugins_key_suggests() -> None:
    with raises_at("p.yaml", 2, 3, "plugins: unknown key 'alow'", "mean 'allow'?"):
        load_config_text("plugins:\n  alow: [a]\n", "p.yaml")


def test_equality_uses_data_only(tmp_path: Path) -> None:
    from_file = load_config(write(tmp_path, "tracking: {backend: mlflow, x: 1}\n"))
    from_dict = config_from_dict({"tracking": {"x": 1}})
    different = config_from_dict({"tracking": {"x": True}})

    assert from_file == from_dict
    assert from_file.source != from_dict.source
    assert from_file != different
    assert config_from_dict({}) == load_config_text("", "empty.yaml")


# ----------------------------------------------------------------------- dicts


def test_config_from_dict_validates_and_interpolates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("N", "12")

    config = config_from_dict({"tracking": {"size": "${N}", "path": Path("/tmp/x")}})

    assert config.source == "<dict>"
    assert config.data["tracking"] == {
        "backend": "mlflow", "size": "12", "path": "/tmp/x",
    }
    assert config.position(("tracking", "size")) == ("<dict>", None, None)
    assert config.provenance(("tracking", "size")) == "env N (<dict>)"


def test_config_from_dict_errors() -> None:
    with raises_at("<dict>", None, None, "unknown section 'clients'", "'client'"):
        config_from_dict({"clients": {}})
    with raises_at("<dict>", None, None, "environment variable X is not set"):
        config_from_dict({"client": {"token": "${X}"}})
    with raises_at("<dict>", None, None, "tracking: expected mapping, got str"):
        config_from_dict({"tracking": "mlflow"})
    with raises_at("<dict>", None, None, "unsupported value of type object"):
        config_from_dict({"inputs": {"a": object()}})


# ----------------------------------------------------------------------- discovery


def test_explicit_path_wins_over_env_and_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "tracking: {x: cwd}\n")
    env_file = write(tmp_path, "tracking: {x: env}\n", "env.yaml")
    explicit = write(tmp_path, "tracking: {x: explicit}\n", "explicit.yaml")
    monkeypatch.setenv(CONFIG_ENV_VAR, env_file)

    assert load_config(explicit).data["tracking"]["x"] == "explicit"
    assert load_config(Path(explicit)).source == explicit

    from_env = load_config()
    assert from_env.data["tracking"]["x"] == "env"
    assert from_env.source == f"{env_file} (from MLFLOW_AGENT_CONFIG)"

    monkeypatch.delenv(CONFIG_ENV_VAR)
    from_cwd = load_config()
    assert from_cwd.data["tracking"]["x"] == "cwd"
    assert from_cwd.source == "agent.yaml"
    assert from_cwd.position(("tracking", "x")) == ("agent.yaml", 1, 12)

    os.remove("agent.yaml")
    assert load_config().source == "<defaults>"


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")

    with pytest.raises(ConfigError, match="does not exist .*configuration file"):
        load_config(missing)
    with pytest.raises(ConfigError, match="is not a file"):
        load_config(tmp_path)


def test_missing_env_file_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "tracking: {}\n")
    monkeypatch.setenv(CONFIG_ENV_VAR, str(tmp_path / "gone.yaml"))

    with pytest.raises(ConfigError) as caught:
        load_config()

    assert "gone.yaml" in str(caught.value)
    assert "unset MLFLOW_AGENT_CONFIG" in str(caught.value)


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"inputs:\n  name: caf\xe9\n")

    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_source_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "tracking: {}\n", "logged-once.yaml")

    with caplog.at_level(logging.INFO, logger="mlflow_agent_core.config"):
        load_config(path)
        load_config(path)

    messages = [
        record.getMessage()
        for record in caplog.records
        if "logged-once" in record.getMessage()
    ]
    assert messages == [f"Using agent configuration from {path}"]


# ----------------------------------------------------------------------- Options


@dataclass
class Retry:
    attempts: int = 3
    backoff: float = 0.5


@dataclass
class Everything:
    name: str = "run"
    flag: bool = False
    count: int = 0
    ratio: float = 1.0
    folder: Path | None = None
    mode: Literal["sync", "async"] = "sync"
    tags: list[str] = field(default_factory=list)
    names: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    retry: Retry = field(default_factory=Retry)
    limit: int | None = field(default=None, metadata={"help": "max points per batch"})
    backup: Retry | None = None
    pair: tuple[str, int] = ("a", 1)
    either: int | str = 0
    anything: Any = None


@dataclass
class Required:
    name: str = field(metadata={"help": "the run's name"})
    size: int
    flag: bool = False


def tracking_options(body: str) -> Options:
    text = "tracking:\n  backend: mlflow\n" + body
    return load_config_text(text, "o.yaml").options("tracking")


def test_parse_every_supported_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    options = tracking_options(
        "  name: run\n"
        "  flag: true\n"
        "  count: '7'\n"
        "  ratio: 2\n"
        "  folder: ~/spool\n"
        "  mode: async\n"
        "  tags: [a, b]\n"
        "  names: [c]\n"
        "  headers: {h: v}\n"
        "  retry: {attempts: 5}\n"
        "  limit: null\n"
        "  backup: {backoff: 1}\n"
        "  pair: [b, '2']\n"
        "  either: text\n"
        "  anything: {x: [1]}\n"
    )

    parsed = options.parse(Everything)

    assert parsed == Everything(
        name="run", flag=True, count=7, ratio=2.0, folder=Path("/home/someone/spool"),
        mode="async", tags=["a", "b"], names=("c",), headers={"h": "v"},
        retry=Retry(attempts=5), limit=None, backup=Retry(backoff=1.0),
        pair=("b", 2), either="text", anything={"x": [1]},
    )
    assert type(parsed.ratio) is float


def test_parse_accepts_env_strings_for_bool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B", "Yes")

    parsed = tracking_options("  flag: '${B}'\n").parse(Everything)

    assert parsed.flag is True


@pytest.mark.parametrize(
    ("column", "body", "fragments"),
    [
        (9, "flag: 'yes'", ("tracking.flag: expected bool, got str ('yes')",)),
        (9, "flag: 1", ("tracking.flag: expected bool, got int (1)",)),
        (10, "count: true", ("tracking.count: expected int, got bool (True)",)),
        (10, "count: 1.5", ("tracking.count: expected int, got float (1.5)",)),
        (10, "ratio: abc", ("tracking.ratio: expected float, got str ('abc')",)),
        (9, "name: 5", ("tracking.name: expected str, got int (5)",)),
        (9, "mode: fast", ("expected one of 'sync', 'async', got str ('fast')",)),
        (11, "folder: 3", ("tracking.folder: expected path (str) or null, got int",)),
        (11, "folder: ''", ("tracking.folder: expected path (str) or null, got str",)),
        (9, "tags: a", ("tracking.tags: expected list of str, got str ('a')",)),
        (13, "tags: [a, 2]", ("tracking.tags[1]: expected str, got int (2)",)),
        (16, "headers: {h: 1}", ("tracking.headers.h: expected str, got int (1)",)),
        (12, "headers: [h]", ("expected mapping of str to str, got list (['h'])",)),
        (10, "retry: 3", ("tracking.retry: expected mapping, got int (3)",)),
        (21, "retry: {attempts: x}", ("tracking.retry.attempts: expected int",)),
        (
            10, "limit: lots",
            ("tracking.limit: expected int or null", "(limit: max points per batch)"),
        ),
        (22, "backup: {attempts: x}", ("tracking.backup.attempts: expected int",)),
        (9, "pair: [a]", ("tracking.pair: expected list of 2 (str, int), got list",)),
        (13, "pair: [a, b]", ("tracking.pair[1]: expected int, got str ('b')",)),
        (11, "either: [1]", ("tracking.either: expected int or str, got list",)),
    ],
)
def test_parse_type_errors_point_at_the_value(
    column: int, body: str, fragments: tuple[str, ...]
) -> None:
    options = tracking_options(f"  {body}\n")

    with raises_at("o.yaml", 3, column, *fragments):
        options.parse(Everything)


def test_parse_unknown_key_suggests() -> None:
    options = tracking_options("  name: n\n  retyr: {}\n")

    with raises_at(
        "o.yaml", 4, 3, "tracking: unknown key 'retyr'; did you mean 'retry'?",
        "Valid keys: name, flag, count",
    ):
        options.parse(Everything)


def test_parse_unknown_nested_key() -> None:
    options = tracking_options("  name: n\n  retry:\n    tries: 2\n")

    with raises_at("o.yaml", 5, 5, "tracking.retry: unknown key 'tries'"):
        options.parse(Everything)


def test_parse_missing_required_key_points_at_the_section() -> None:
    options = tracking_options("  flag: true\n")

    with raises_at(
        "o.yaml", 1, 1,
        "tracking: missing required key 'name' (name: the run's name); 'size'",
    ):
        options.parse(Required)


def test_parse_missing_key_in_a_default_section_points_at_the_defaults() -> None:
    options = load_config_text("", "empty.yaml").options("tracking")

    with raises_at("<defaults>", 7, 1, "missing required key 'name'"):
        options.parse(Required)


def test_parse_reports_post_init_value_errors() -> None:
    @dataclass
    class Positive:
        size: int = 1

        def __post_init__(self) -> None:
            if self.size <= 0:
                raise ValueError("size must be positive; use 1 or more")

    options = tracking_options("  size: 0\n")

    with raises_at("o.yaml", 1, 1, "tracking: size must be positive"):
        options.parse(Positive)


def test_parse_rejects_unsupported_schemas() -> None:
    @dataclass
    class Weird:
        value: complex = 0j

    with pytest.raises(PluginError, match="does not support the annotation"):
        tracking_options("  value: 1\n").parse(Weird)
    with pytest.raises(PluginError, match="needs a dataclass"):
        tracking_options("").parse(dict)


def test_options_error_and_position() -> None:
    options = tracking_options("  name: n\n")

    assert options.section == "tracking"
    assert options.source == "o.yaml"
    assert options.position() == ("o.yaml", 1, 1)
    assert options.position("name") == ("o.yaml", 3, 3)
    assert options.position("absent") == ("o.yaml", 1, 1)
    error = options.error("name", "must not be 'n'; pick a longer name")
    assert str(error) == (
        "o.yaml:3:3: tracking.name: must not be 'n'; pick a longer name"
    )


def test_options_is_read_only() -> None:
    options = tracking_options("  tags: [a]\n")

    options["tags"].append("b")

    assert options["tags"] == ["a"]
    assert not hasattr(options, "__setitem__")


def test_options_repr_hides_secrets() -> None:
    options = tracking_options(
        "  password: hunter2\n"
        "  api_key: abc123\n"
        "  auth: {token: t0k}\n"
        "  url: https://me:pa55@host/x\n"
        "  user: me\n"
    )

    text = repr(options)

    for secret in ("hunter2", "abc123", "t0k", "pa55"):
        assert secret not in text
    assert "'user': 'me'" in text
    assert "'password': '***'" in text


def test_type_error_hides_secret_values() -> None:
    @dataclass
    class Secret:
        token: int = 0

    with raises_at("o.yaml", 3, 10, "tracking.token: expected int, got str (***)") as c:
        tracking_options("  token: s3cr3t\n").parse(Secret)

    assert "s3cr3t" not in str(c.error)


def test_inputs_options_even_when_absent() -> None:
    config = load_config_text("tracking: {}\n", "x.yaml")

    assert dict(config.options("inputs")) == {}
    assert config.options("inputs").source == "x.yaml"
    with pytest.raises(ConfigError, match="no options section 'plugins'"):
        config.options("plugins")


@dataclass
class Count:
    count: int


def test_standalone_options_for_backend_tests() -> None:
    options = Options({"count": "4"}, section="tracking")

    assert dataclasses.asdict(options.parse(Count)) == {"count": 4}
    assert options.position("count") == ("<dict>", None, None)
    with raises_at("<dict>", None, None, "tracking.count: expected int"):
        Options({"count": "four"}, section="tracking").parse(Count)


def test_dict_env_strings_count_as_bools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B", "no")
    config = config_from_dict({"tracking": {"flag": "${B}", "other": "no"}})

    @dataclass
    class Flags:
        flag: bool = True
        other: bool = True

    with raises_at("<dict>", None, None, "tracking.other: expected bool"):
        config.options("tracking").parse(Flags)
    parsed = config_from_dict({"tracking": {"flag": "${B}"}}).options("tracking")
    assert parsed.parse(Flags).flag is False


def test_agent_config_repr_and_redacted() -> None:
    config = config_from_dict({"configuration": {"password": "pw"}})

    assert "pw" not in repr(config)
    assert config.redacted()["configuration"]["password"] == "***"
    assert config.data["configuration"]["password"] == "pw"
    assert isinstance(config, AgentConfig)


@dataclass
class Timeouts:
    exit_timeout: float = 10.0


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", "'nan'", "1e400"])
def test_a_float_option_must_be_finite(text: str) -> None:
    config = load_config_text(f"tracking:\n  exit_timeout: {text}\n", "a.yaml")

    with pytest.raises(ConfigError, match=r"^a\.yaml:2:17: tracking\.exit_timeout"):
        config.options("tracking").parse(Timeouts)


def test_an_option_named_keys_is_not_a_secret() -> None:
    config = load_config_text("inputs:\n  keys: lax\n", "a.yaml")

    with pytest.raises(ConfigError) as caught:
        config.options("inputs").parse(InputPolicy)

    assert "'lax'" in str(caught.value) and "***" not in str(caught.value)


def test_an_api_key_is_a_secret() -> None:
    config = load_config_text("registry:\n  api_key: hunter22\n", "a.yaml")

    assert "hunter22" not in repr(config.options("registry"))
