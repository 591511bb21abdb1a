"""Pure tests of every input rule in mlflow_agent_core.validation (issue 4)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlflow_agent_core.contracts import MetricPoint
from mlflow_agent_core.errors import (
    ConfigError,
    InvalidInputError,
    ParamConflictError,
)
from mlflow_agent_core.validation import (
    KEY_CHARACTERS,
    MAX_KEY_LENGTH,
    MAX_PARAM_VALUE_LENGTH,
    InputPolicy,
    InputValidator,
    ParamBatch,
    normalize_step,
)

NOW = 1_700_000_000_000
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def validator(**policy: Any) -> InputValidator:
    return InputValidator(InputPolicy(**policy))


def key_is_portable(key: str) -> bool:
    """The documented key rule, restated independently of the implementation."""
    segments = key.split("/")
    return (
        0 < len(key) <= MAX_KEY_LENGTH
        and set(key) <= KEY_CHARACTERS
        and key == key.strip()
        and all(segment not in ("", ".", "..") for segment in segments)
        and not key.startswith("..")
    )


# Policy


def test_policy_defaults_are_the_safe_ones() -> None:
    policy = InputPolicy()

    assert (policy.nonfinite, policy.long_params, policy.keys) == (
        "skip",
        "truncate",
        "strict",
    )
    assert policy.param_separator == "."


def test_every_policy_field_is_documented() -> None:
    for field in dataclasses.fields(InputPolicy):
        assert len(field.metadata.get("help", "")) > 20, field.name


@pytest.mark.parametrize(
    "bad",
    [
        {"nonfinite": "drop"},
        {"long_params": "cut"},
        {"keys": "loose"},
        {"param_separator": ""},
        {"param_separator": ":"},
        {"param_separator": "/"},
        {"param_separator": " ."},
    ],
)
def test_bad_policy_values_raise_config_error(bad: dict[str, str]) -> None:
    name, value = next(iter(bad.items()))

    with pytest.raises(ConfigError) as caught:
        InputPolicy(**bad)  # type: ignore[arg-type]

    assert f"{name} {value!r}" in str(caught.value)


def test_policy_errors_point_at_agent_yaml(tmp_path: Path) -> None:
    from mlflow_agent_core.config import load_config

    path = tmp_path / "agent.yaml"
    path.write_text("inputs:\n  keys: sanitize\n  param_separator: ':'\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path).options("inputs").parse(InputPolicy)

    assert str(caught.value).startswith(f"{path}:")
    assert "param_separator ':'" in str(caught.value)


def test_importing_validation_loads_no_heavy_library() -> None:
    code = (
        "import sys, mlflow_agent_core.validation\n"
        "heavy = {'numpy', 'torch', 'mlflow'} & set(sys.modules)\n"
        "print(sorted(heavy))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
        check=True,
    )

    assert out.stdout.strip() == "[]"


# Metric values


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3.0),
        (0.25, 0.25),
        (True, 1.0),
        (False, 0.0),
        (2**53, float(2**53)),
        (2**60, float(2**60)),
        (Decimal("0.1"), 0.1),
        (Fraction(1, 4), 0.25),
        ("0.5", 0.5),
        ("  -1e-3\n", -0.001),
        (".5", 0.5),
        ("7", 7.0),
        (1.7976931348623157e308, 1.7976931348623157e308),
        (5e-324, 5e-324),
        (np.float32(0.5), 0.5),
        (np.float64(0.1), 0.1),
        (np.float16(1.5), 1.5),
        (np.int64(42), 42.0),
        (np.uint8(7), 7.0),
        (np.bool_(True), 1.0),
        (np.array(2.5), 2.5),
        (np.array([[3]]), 3.0),
        (np.array(["0.75"]), 0.75),
        (torch.tensor(0.5), 0.5),
        (torch.tensor([1.5]), 1.5),
        (torch.tensor([[4]], dtype=torch.int32), 4.0),
        (torch.tensor(True), 1.0),
        (torch.tensor(0.5, dtype=torch.float16), 0.5),
        (torch.tensor(2.0, dtype=torch.bfloat16), 2.0),
    ],
)
def test_metric_values_accepted(value: object, expected: float) -> None:
    point = validator().metric("loss", value, 3, NOW)

    assert point == MetricPoint("loss", expected, NOW, 3)
    assert type(point.value) is float


def test_metric_tensor_with_grad_is_detached() -> None:
    weight = torch.tensor(2.0, requires_grad=True)
    loss = (weight * 3).sum()

    point = validator().metric("loss", loss, 0, NOW)

    assert point is not None and point.value == 6.0
    assert loss.requires_grad


def test_metric_float32_keeps_its_exact_value() -> None:
    point = validator().metric("lr", np.float32(0.1), 0, NOW)

    assert point is not None
    assert point.value == float(np.float32(0.1))


def test_negative_zero_is_stored_as_zero() -> None:
    point = validator().metric("delta", -0.0, 0, NOW)

    assert point is not None
    assert math.copysign(1.0, point.value) == 1.0


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (None, "None"),
        ("abc", "'abc'"),
        ("", "''"),
        ("1_000", "'1_000'"),
        ("0x10", "'0x10'"),
        ("١٢", "not a decimal number"),
        (b"1", "type bytes"),
        ([1.0], "type list"),
        ({"a": 1}, "type dict"),
        (1 + 2j, "type complex"),
        (np.complex128(1), "type complex"),
        (object(), "type object"),
        (2**53 + 1, "exactly"),
        (10**400, "range"),
        (Decimal("1e400"), "range"),
        ("1e400", "range"),
        (Decimal("sNaN"), "signalling"),
        (np.longdouble("1e400"), "range"),
        (np.zeros(3), "shape (3,)"),
        (np.zeros((2, 2)), "shape (2, 2)"),
        (np.zeros(0), "shape (0,)"),
        (torch.zeros(2, 3), "shape (2, 3)"),
        (torch.zeros(0), "shape (0,)"),
        (torch.ones(2, requires_grad=True), "shape (2,)"),
    ],
)
def test_metric_values_rejected(value: object, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validator().metric("val/acc", value, 0, NOW)

    message = str(caught.value)
    assert "'val/acc'" in message
    assert fragment in message


def test_meta_tensor_is_rejected_not_crashing() -> None:
    with pytest.raises(InvalidInputError, match="'loss'"):
        validator().metric("loss", torch.empty((), device="meta"), 0, NOW)


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), -float("inf"), "NaN", "-Infinity", Decimal("NaN"),
     np.float32("nan"), torch.tensor(float("inf"))],
)
def test_nonfinite_skip_drops_and_warns_once_per_key(
    value: object, caplog: pytest.LogCaptureFixture
) -> None:
    check = validator(nonfinite="skip")

    with caplog.at_level(logging.WARNING, logger="mlflow_agent_core.validation"):
        first = check.metric("loss", value, 0, NOW)
        second = check.metric("loss", value, 1, NOW)
        other = check.metric("acc", value, 1, NOW)

    assert first is second is other is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "'loss'" in warnings[0] and "'acc'" in warnings[1]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_error_raises(value: float) -> None:
    with pytest.raises(InvalidInputError, match="nonfinite is 'error'"):
        validator(nonfinite="error").metric("loss", value, 0, NOW)


def test_nonfinite_keep_keeps_nan() -> None:
    point = validator(nonfinite="keep").metric("loss", "nan", 0, NOW)

    assert point is not None and math.isnan(point.value)


@pytest.mark.parametrize("value", [float("inf"), -float("inf"), "inf"])
def test_nonfinite_keep_refuses_infinity(value: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validator(nonfinite="keep").metric("loss", value, 0, NOW)

    assert "1.7976931348623157e308" in str(caught.value)
    assert "nonfinite: skip" in str(caught.value)


def test_metrics_batch_checks_everything_before_returning() -> None:
    check = validator()

    points = check.metrics({"a": 1, "b": np.float32(2), "c": float("nan")}, 5, NOW)
    assert points == [MetricPoint("a", 1.0, NOW, 5), MetricPoint("b", 2.0, NOW, 5)]

    with pytest.raises(InvalidInputError, match="'b'"):
        check.metrics({"a": 1, "b": None}, 5, NOW)
    with pytest.raises(InvalidInputError, match="'bad:key'"):
        check.metrics({"a": 1, "bad:key": 2}, 5, NOW)
    with pytest.raises(InvalidInputError, match="step"):
        check.metrics({"a": 1}, -1, NOW)


@pytest.mark.parametrize("values", [[("a", 1)], "a=1", None])
def test_metrics_need_a_mapping(values: object) -> None:
    with pytest.raises(InvalidInputError, match="mapping"):
        validator().metrics(values, 0, NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("timestamp", [-1, 1.5, "now", True])
def test_bad_timestamp_rejected(timestamp: object) -> None:
    with pytest.raises(InvalidInputError, match="timestamp"):
        validator().metric("a", 1, 0, timestamp)  # type: ignore[arg-type]


# Steps


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (None, 0),
        (0, 0),
        (7, 7),
        (3.0, 3),
        (1e18, 10**18),
        (Decimal("12"), 12),
        (Fraction(8, 2), 4),
        (2**63 - 1, 2**63 - 1),
        (np.int64(9), 9),
        (np.uint64(2**63 - 1), 2**63 - 1),
        (np.float64(5.0), 5),
        (np.array(6), 6),
        (torch.tensor(11), 11),
        (torch.tensor([12.0]), 12),
    ],
)
def test_steps_accepted(step: object, expected: int) -> None:
    result = normalize_step("loss", step)

    assert result == expected and type(result) is int


@pytest.mark.parametrize(
    ("step", "fragment"),
    [
        (True, "not an integer"),
        (np.bool_(False), "not an integer"),
        (torch.tensor(True), "not an integer"),
        ("3", "not an integer"),
        (b"3", "not an integer"),
        ([1], "not an integer"),
        (1.5, "not a whole number"),
        (Decimal("2.5"), "not a whole number"),
        (float("nan"), "not a whole number"),
        (float("inf"), "not a whole number"),
        (-1, "outside"),
        (-1.0, "outside"),
        (2**63, "outside"),
        (np.uint64(2**64 - 1), "outside"),
        (np.arange(2), "shape (2,)"),
    ],
)
def test_steps_rejected(step: object, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        normalize_step("train/loss", step)

    assert "'train/loss'" in str(caught.value)
    assert fragment in str(caught.value)


# Params: canonical strings and flattening


class Color:
    def __str__(self) -> str:
        return "red"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("adam", "adam"),
        ("", ""),
        ("naïve ☃", "naïve ☃"),
        (True, "True"),
        (None, "None"),
        (3, "3"),
        (-0, "0"),
        (0.1, "0.1"),
        (1e-5, "1e-05"),
        (1e16, "1e+16"),
        (2.0, "2.0"),
        (-0.0, "-0.0"),
        (float("nan"), "nan"),
        (float("-inf"), "-inf"),
        (Decimal("0.10"), "0.10"),
        (Fraction(1, 3), "1/3"),
        (np.float32(0.1), "0.1"),
        (np.float16(0.1), "0.1"),
        (np.float64(0.1), "0.1"),
        (np.float32(3.4028235e38), "3.4028235e+38"),
        (np.int64(5), "5"),
        (np.bool_(False), "False"),
        (np.array(2.5), "2.5"),
        (torch.tensor(0.1), "0.1"),
        (torch.tensor(3), "3"),
        (Path("data/train.csv"), str(Path("data/train.csv"))),
        (Color(), "red"),
    ],
)
def test_param_canonical_strings(value: object, expected: str) -> None:
    assert validator().params({"p": value}).values == {"p": expected}


def test_same_value_in_other_types_gives_same_string() -> None:
    forms = [0.1, np.float64(0.1), np.float32(0.1), torch.tensor(0.1)]

    strings = {validator().params({"lr": form}).values["lr"] for form in forms}

    assert strings == {"0.1"}


def test_params_flatten_nested_structures() -> None:
    params = {
        "model": {"layers": [64, 32], "act": "relu", "opt": {"lr": 0.01}},
        "empty_map": {},
        "empty_list": [],
        "tags": {"b", "a"},
        "shape": (3, 4),
        "weights": np.array([[1, 2]]),
        "scale": torch.tensor([0.5, 0.1]),
        "by_id": {1: "one"},
    }

    values = validator().params(params).values

    assert values == {
        "model.layers.0": "64",
        "model.layers.1": "32",
        "model.act": "relu",
        "model.opt.lr": "0.01",
        "empty_map": "{}",
        "empty_list": "[]",
        "tags.0": "a",
        "tags.1": "b",
        "shape.0": "3",
        "shape.1": "4",
        "weights.0.0": "1",
        "weights.0.1": "2",
        "scale.0": "0.5",
        "scale.1": "0.1",
        "by_id.1": "one",
    }


def test_param_separator_is_configurable() -> None:
    values = validator(param_separator="__").params({"a": {"b": [1]}}).values

    assert values == {"a__b__0": "1"}


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"a": object()}, "memory address"),
        ({"a": lambda: 1}, "memory address"),
        ({"a": b"raw"}, "bytes"),
        ({"a": bytearray(b"raw")}, "bytes"),
        ({"a": "nul\x00"}, "NUL"),
        ({"a": "\udcff"}, "UTF-8"),
        ({"a.b": 1, "a": {"b": 2}}, "twice"),
        ({"a": {(1, 2): 3}}, "nested key"),
        ({"a": {True: 3}}, "nested key"),
        ({"a": 10**5000}, "too many digits"),
    ],
)
def test_params_rejected(params: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validator().params(params)

    assert "'a" in str(caught.value)
    assert fragment in str(caught.value)


def test_params_non_string_top_level_key_rejected() -> None:
    with pytest.raises(InvalidInputError, match="not a str"):
        validator().params({3: "x"})  # type: ignore[dict-item]


def test_self_containing_params_rejected() -> None:
    loop: list[object] = []
    loop.append(loop)

    with pytest.raises(InvalidInputError, match="contains itself"):
        validator().params({"loop": loop})


# Params: long values


def test_long_param_truncated_with_marker_and_overflow() -> None:
    text = "x" * 7000

    batch = validator().params({"prompt": text})

    stored = batch.values["prompt"]
    assert len(stored) == MAX_PARAM_VALUE_LENGTH
    assert stored.startswith("x" * 5000)
    assert "truncated 7000 chars" in stored
    assert stored.endswith("full value in artifact params/prompt.txt]")
    assert batch.overflow == {"params/prompt.txt": text}


def test_long_params_differing_late_store_different_strings() -> None:
    base = "y" * 6500

    first = validator().params({"p": base + "A"}).values["p"]
    second = validator().params({"p": base + "B"}).values["p"]

    assert first != second


def test_param_at_the_limit_is_untouched() -> None:
    text = "z" * MAX_PARAM_VALUE_LENGTH

    batch = validator().params({"p": text})

    assert batch == ParamBatch(values={"p": text}, overflow={})


def test_long_flattened_param_uses_its_flat_key_for_the_artifact() -> None:
    batch = validator().params({"cfg": {"prompt": "q" * 6001}})

    assert list(batch.overflow) == ["params/cfg.prompt.txt"]


def test_long_param_error_policy() -> None:
    with pytest.raises(InvalidInputError) as caught:
        validator(long_params="error").params({"prompt": "x" * 6001})

    assert "'prompt'" in str(caught.value)
    assert "6001" in str(caught.value)


# Params: conflicts


def test_param_conflicts() -> None:
    check = validator()
    logged = {"lr": "0.1", "layers": "3"}

    assert check.check_param_conflicts(logged, {"lr": "0.1", "seed": "1"}) == {
        "seed": "1"
    }
    assert check.check_param_conflicts(logged, {"lr": "0.1"}) == {}

    with pytest.raises(ParamConflictError) as caught:
        check.check_param_conflicts(logged, {"lr": "0.2", "seed": "1"})
    message = str(caught.value)
    assert "'lr'" in message and "'0.1'" in message and "'0.2'" in message


def test_repeated_value_in_another_type_is_no_conflict() -> None:
    check = validator()
    logged = check.params({"lr": 0.1, "cfg": {"depth": 3}}).values

    again = check.params({"lr": np.float32(0.1), "cfg": {"depth": np.int64(3)}})

    assert check.check_param_conflicts(logged, again.values) == {}


# Keys


@pytest.mark.parametrize(
    "key",
    ["loss", "val loss", "train/loss", "a.b", "a-b_c", "x" * MAX_KEY_LENGTH, "v1.2",
     "a..b", ".hidden", "a/.b"],
)
def test_portable_keys_accepted(key: str) -> None:
    check = validator()

    assert check.metric(key, 1, 0, NOW) == MetricPoint(key, 1.0, NOW, 0)
    assert check.params({key: 1}).values == {key: "1"}
    assert check.tags({key: 1}) == {key: "1"}


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("", "is empty"),
        ("x" * (MAX_KEY_LENGTH + 1), "251 characters"),
        ("eval:loss", "':' (U+003A)"),
        ("é", "non-ASCII character 'é' (U+00E9) at position 0"),
        ("loss@1", "'@' (U+0040) at position 4"),
        ("a\tb", "position 1"),
        ("/abs", "starts or ends with '/'"),
        ("trailing/", "starts or ends with '/'"),
        ("a//b", "empty path segment"),
        ("a/./b", "'.' or '..' path segment"),
        ("a/../b", "'.' or '..' path segment"),
        (".", "'.' or '..' path segment"),
        ("..", "'.' or '..' path segment"),
        ("..x", "starts with '..'"),
        (" lead", "whitespace"),
        ("trail ", "whitespace"),
    ],
)
def test_strict_keys_rejected_for_every_kind(key: str, fragment: str) -> None:
    check = validator()
    calls: list[Callable[[], object]] = [
        lambda: check.metric(key, 1, 0, NOW),
        lambda: check.params({key: 1}),
        lambda: check.tags({key: "v"}),
    ]

    for call in calls:
        with pytest.raises(InvalidInputError) as caught:
            call()
        message = str(caught.value)
        assert fragment in message
        assert "keys: sanitize" in message


def test_strict_key_non_string_rejected() -> None:
    with pytest.raises(InvalidInputError, match="type int"):
        validator().metric(7, 1, 0, NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("loss", "loss"),
        ("eval:loss", "eval_loss"),
        ("précision", "precision"),
        ("λ/rate", "_/rate"),
        ("/abs/path/", "abs/path"),
        ("a//b", "a/b"),
        ("a/./b/../c", "a/_/b/__/c"),
        ("..x", "__x"),
        ("  padded  ", "padded"),
        ("tab\there", "tab_here"),
        ("ﬁle", "file"),
    ],
)
def test_sanitize_mapping(key: str, expected: str) -> None:
    check = validator(keys="sanitize")

    assert check.metric(key, 1, 0, NOW) == MetricPoint(expected, 1.0, NOW, 0)
    assert check.params({key: 1}).values == {expected: "1"}
    assert check.tags({key: "v"}) == {expected: "v"}


def test_sanitize_long_key_keeps_a_hash_of_the_original() -> None:
    check = validator(keys="sanitize")
    first = "k" * 300
    second = "k" * 299 + "j"

    mapped = check.params({first: 1, second: 2}).values

    assert len(mapped) == 2
    assert all(len(key) == MAX_KEY_LENGTH for key in mapped)


def test_sanitize_collision_in_one_call() -> None:
    check = validator(keys="sanitize")

    with pytest.raises(InvalidInputError) as caught:
        check.metrics({"a:b": 1, "a_b": 2}, 0, NOW)

    assert "'a:b'" in str(caught.value) and "'a_b'" in str(caught.value)


def test_sanitize_collision_across_calls_per_kind() -> None:
    check = validator(keys="sanitize")
    check.params({"eval:loss": 1})

    with pytest.raises(InvalidInputError, match="'eval:loss' and 'eval_loss'"):
        check.params({"eval_loss": 2})

    assert check.metrics({"eval_loss": 1}, 0, NOW)[0].key == "eval_loss"
    assert check.params({"eval:loss": 3}).values == {"eval_loss": "3"}


def test_failed_batch_does_not_reserve_sanitized_keys() -> None:
    check = validator(keys="sanitize")

    with pytest.raises(InvalidInputError):
        check.metrics({"x:y": 1, "bad": None}, 0, NOW)

    assert check.metric("x_y", 2, 0, NOW) == MetricPoint("x_y", 2.0, NOW, 0)


def test_sanitize_logs_each_rename_once(caplog: pytest.LogCaptureFixture) -> None:
    check = validator(keys="sanitize")

    with caplog.at_level(logging.WARNING, logger="mlflow_agent_core.validation"):
        check.metric("a:b", 1, 0, NOW)
        check.metric("a:b", 2, 1, NOW)
        check.metric("plain", 3, 1, NOW)

    assert len(caplog.records) == 1
    assert "'a:b'" in caplog.records[0].getMessage()


@pytest.mark.parametrize("key", ["", "///", "  ", 3])
def test_unsanitizable_keys_rejected(key: object) -> None:
    with pytest.raises(InvalidInputError):
        validator(keys="sanitize").metric(key, 1, 0, NOW)  # type: ignore[arg-type]


# Tags and run names


def test_tag_values_follow_the_param_leaf_rule() -> None:
    tags = {"flag": True, "lr": np.float32(0.1), "note": "ok", "none": None}

    assert validator().tags(tags) == {
        "flag": "True",
        "lr": "0.1",
        "note": "ok",
        "none": "None",
    }


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ([1, 2], "container"),
        ({"a": 1}, "container"),
        (np.zeros(2), "container"),
        ("x" * 8001, "8001 characters"),
        (b"x", "bytes"),
        ("a\x00", "NUL"),
    ],
)
def test_tag_values_rejected(value: object, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validator().tags({"team": value})

    assert "'team'" in str(caught.value) and fragment in str(caught.value)


def test_tag_value_at_limit_accepted() -> None:
    assert validator().tags({"t": "x" * 8000}) == {"t": "x" * 8000}


@pytest.mark.parametrize("name", [None, "run-1", "résumé 2", "x" * 250])
def test_run_names_accepted(name: str | None) -> None:
    assert validator().run_name(name) == name


@pytest.mark.parametrize("name", ["", "   ", "x" * 251, 3, b"run", "a\x00"])
def test_run_names_rejected(name: object) -> None:
    with pytest.raises(InvalidInputError, match="run name"):
        validator().run_name(name)


# Registry


@pytest.mark.parametrize("name", ["fraud-detector", "My Model v2", "a.b_c", "modèle"])
def test_model_names_accepted(name: str) -> None:
    assert validator().model_name(name) == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("org/model", "'/'"),
        ("model@champion", "'@'"),
        ("ns:model", "':'"),
        ("a#b", "'#'"),
        ("a?b", "'?'"),
        ("", "empty"),
        ("   ", "empty"),
        (" padded", "whitespace"),
        ("x" * 257, "257 characters"),
        (".", "relative path"),
        ("..", "relative path"),
        ("line\nbreak", "control character"),
        (None, "not a str"),
        (5, "not a str"),
    ],
)
def test_model_names_rejected(name: object, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validator().model_name(name)

    assert "model name" in str(caught.value) and fragment in str(caught.value)


@pytest.mark.parametrize(
    "alias", ["champion", "prod-eu", "A_1", "v", "v1a", "x" * 255]
)
def test_aliases_accepted(alias: str) -> None:
    assert validator().alias(alias) == alias


@pytest.mark.parametrize(
    ("alias", "fragment"),
    [
        ("latest", "reserved"),
        ("LATEST", "reserved"),
        ("v1", "reserved"),
        ("V12", "reserved"),
        ("", "empty"),
        ("a b", "' ' at position 1"),
        ("prod.eu", "'.' at position 4"),
        ("é", "'é'"),
        ("x" * 256, "256 characters"),
        (1, "not a str"),
    ],
)
def test_aliases_rejected(alias: object, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validator().alias(alias)

    assert "alias" in str(caught.value) and fragment in str(caught.value)
    assert "champion" in str(caught.value)


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("production", "Production"),
        ("PRODUCTION", "Production"),
        (" Staging ", "Staging"),
        ("archived", "Archived"),
        ("none", "None"),
        ("None", "None"),
    ],
)
def test_stages_mapped_to_canonical_case(stage: str, expected: str) -> None:
    assert validator().stage(stage) == expected


@pytest.mark.parametrize("stage", ["prod", "", None, 1, "Productionn"])
def test_unknown_stages_list_valid_ones(stage: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validator().stage(stage)

    assert "None, Staging, Production, Archived" in str(caught.value)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (1, "1"),
        ("7", "7"),
        (" 003 ", "3"),
        (np.int64(4), "4"),
        (2**31 - 1, "2147483647"),
    ],
)
def test_versions_accepted(version: object, expected: str) -> None:
    assert validator().version(version) == expected


@pytest.mark.parametrize(
    "version",
    [0, -1, True, 1.0, "1.0", "v1", "", "latest", None, 2**31, "9" * 20, "١"],
)
def test_versions_rejected(version: object) -> None:
    with pytest.raises(InvalidInputError, match="positive int"):
        validator().version(version)


# Properties: every outcome is the documented one or an InvalidInputError

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.fractions(),
    st.binary(max_size=5),
    st.complex_numbers(),
    st.floats(width=32).map(np.float32),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
)
nested = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)
keys = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="ab/. :_", max_size=12),
    st.text(min_size=240, max_size=260, alphabet="ab"),
)


@PROPERTY
@given(key=keys, value=nested, step=scalars, policy=st.sampled_from(
    ["error", "skip", "keep"]), mode=st.sampled_from(["strict", "sanitize"]))
def test_property_metric(
    key: str, value: object, step: object, policy: str, mode: str
) -> None:
    check = validator(nonfinite=policy, keys=mode)
    try:
        point = check.metric(key, value, step, NOW)
    except InvalidInputError:
        return

    if point is None:
        assert policy == "skip"
        return
    assert key_is_portable(point.key)
    assert mode == "sanitize" or point.key == key
    assert type(point.value) is float and not math.isinf(point.value)
    assert policy == "keep" or not math.isnan(point.value)
    assert type(point.step) is int and 0 <= point.step < 2**63
    if isinstance(value, float) and math.isfinite(value):
        assert point.value == value


@PROPERTY
@given(
    params=st.dictionaries(keys, nested, max_size=4),
    mode=st.sampled_from(["strict", "sanitize"]),
    long=st.sampled_from(["error", "truncate"]),
)
def test_property_params(params: dict[str, object], mode: str, long: str) -> None:
    check = validator(keys=mode, long_params=long)
    try:
        batch = check.params(params)
    except InvalidInputError:
        return

    for key, text in batch.values.items():
        assert key_is_portable(key)
        assert type(text) is str and len(text) <= MAX_PARAM_VALUE_LENGTH
        text.encode("utf-8")
    for artifact, full in batch.overflow.items():
        key = artifact.removeprefix("params/").removesuffix(".txt")
        assert batch.values[key] != full and len(full) > MAX_PARAM_VALUE_LENGTH
    assert check.params(params) == batch
    assert check.check_param_conflicts(batch.values, batch.values) == {}


@PROPERTY
@given(tags=st.dictionaries(keys, scalars, max_size=4), mode=st.sampled_from(
    ["strict", "sanitize"]))
def test_property_tags(tags: dict[str, object], mode: str) -> None:
    try:
        clean = validator(keys=mode).tags(tags)
    except InvalidInputError:
        return

    assert len(clean) == len(tags)
    for key, text in clean.items():
        assert key_is_portable(key) and len(text) <= 8000


@PROPERTY
@given(key=st.text(max_size=300))
def test_property_sanitize_is_idempotent_and_portable(key: str) -> None:
    check = validator(keys="sanitize")
    try:
        mapped = check.params({key: 1}).values
    except InvalidInputError:
        return

    (stored,) = mapped
    assert key_is_portable(stored)
    assert validator(keys="sanitize").params({stored: 1}).values == {stored: "1"}
    assert validator().params({stored: 1}).values == {stored: "1"}


@PROPERTY
@given(value=st.one_of(scalars, st.text(alphabet="0123456789.eE+-_ vV", max_size=10)))
def test_property_registry_and_steps(value: object) -> None:
    check = validator()
    outcomes: dict[str, object] = {}
    calls: dict[str, Callable[[object], object]] = {
        "run_name": check.run_name,
        "model_name": check.model_name,
        "alias": check.alias,
        "stage": check.stage,
        "version": check.version,
        "step": lambda v: normalize_step("k", v),
    }
    for name, call in calls.items():
        with contextlib.suppress(InvalidInputError):
            outcomes[name] = call(value)

    if "run_name" in outcomes:
        assert outcomes["run_name"] == value
    if "model_name" in outcomes or "alias" in outcomes:
        assert isinstance(value, str) and value.strip() == value
    if "stage" in outcomes:
        assert outcomes["stage"] in ("None", "Staging", "Production", "Archived")
    if "version" in outcomes:
        assert int(str(outcomes["version"])) >= 1
        assert str(outcomes["version"]).isdigit()
    if "step" in outcomes:
        assert type(outcomes["step"]) is int
        assert outcomes["step"] == (0 if value is None else value)


@settings(max_examples=300, deadline=None)
@given(
    value=st.floats(allow_nan=True, allow_infinity=True),
    step=st.one_of(st.none(), st.integers(min_value=-5, max_value=2**63 + 5)),
)
def test_a_known_key_gives_the_same_point_as_a_new_one(
    value: float, step: int | None
) -> None:
    warmed = InputValidator(InputPolicy())
    warmed.metric("loss", 1.0, None, 0)  # "loss" is now a known key

    def outcome(validator: InputValidator) -> object:
        try:
            return validator.metric("loss", value, step, 1_700_000_000_000)
        except InvalidInputError as exc:
            return type(exc)

    fresh = outcome(InputValidator(InputPolicy()))
    known = outcome(warmed)
    if isinstance(fresh, MetricPoint) and math.isnan(fresh.value):
        assert isinstance(known, MetricPoint) and math.isnan(known.value)
    else:
        assert known == fresh
