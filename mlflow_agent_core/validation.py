"""Validation and normalization of every value handed to the agent (issue 4).

Each value is stored exactly as given, converted by a rule written down here, or
rejected on the caller's thread with :class:`InvalidInputError` (or
:class:`ParamConflictError`) before anything reaches MLflow. The rules, by kind:

Metric values
    ``int`` and numpy/other integral numbers are kept when a 64-bit float holds them
    exactly, otherwise rejected (no silent rounding of counters). ``float`` is kept;
    ``-0.0`` becomes ``0.0`` (MLflow's stores drop the sign). ``bool`` is ``0.0`` or
    ``1.0``. ``Decimal``, ``Fraction`` and other real numbers are rounded to the
    nearest 64-bit float, as ``float()`` does. Strings are accepted when, after
    stripping surrounding whitespace, they are an ASCII decimal literal
    (``"0.5"``, ``"-1e-3"``, ``".5"``) or ``nan``/``inf``/``infinity`` with an
    optional sign, in any case; underscores, hex and anything else are rejected.
    Numpy scalars, 0-d arrays, one-element arrays and torch tensors with one
    element (any device, with or without grad) are read with
    ``.detach().cpu().item()``, as far as the object has those methods; arrays and
    tensors with another number of elements are rejected, naming their shape.
    ``None``, complex numbers and other types are rejected. A finite value that
    does not fit a 64-bit float (``Decimal("1e400")``, ``10**400``) is rejected.

Non-finite metric values (``inputs.nonfinite``)
    ``skip`` (default) drops the point and logs one warning per key; ``error``
    raises; ``keep`` stores NaN (MLflow keeps it as NaN) but raises for ``±inf``,
    because MLflow's SQL stores, directly or behind the REST server, write ``±inf``
    as ``±1.7976931348623157e308``, a different finite number.

Steps
    ``None`` is step 0, MLflow's default. Integers (numpy integers and one-element
    integer arrays/tensors too) and integral floats or ``Decimal`` become ``int``.
    ``bool``, strings, non-integral or non-finite numbers, negative steps and steps
    beyond ``2**63 - 1`` (MLflow's signed 64-bit column) are rejected.

Param values
    Mappings are flattened to ``parent<sep>child`` keys and lists/tuples to
    ``parent<sep>index`` (``inputs.param_separator``, default ``.``); mapping keys
    must be ``str`` or ``int``. Sets are flattened like a list of their elements
    sorted by canonical string. Empty containers are stored as ``{}`` or ``[]``.
    Multi-element arrays and tensors are flattened like lists. Leaves get one
    canonical string: ``str`` as is; ``bool`` as ``True``/``False``; ``None`` as
    ``None``; integers in decimal; floats as the shortest decimal that reads back
    to the same value at the value's own precision (``0.1`` for a float32 0.1),
    written like Python's ``repr`` (``1e-05``, ``nan``, ``inf``, ``-0.0``);
    ``Decimal`` as ``str()``; any other object as ``str()`` unless that form shows
    a memory address (``<... at 0x...>``) or is ``object``'s default, which is
    rejected because it changes between runs; ``bytes`` are rejected.
    Two inputs flattening to the same key are rejected.

Long param values (``inputs.long_params``)
    MLflow's limit is 6000 characters. ``truncate`` (default) keeps a prefix and
    appends ``...[truncated N chars, sha256 <16 hex>, full value in artifact
    params/<key>.txt]`` so the result is exactly 6000 characters and two different
    long values never store the same string; the full text is returned in
    :attr:`ParamBatch.overflow` for the agent to store as that artifact. ``error``
    rejects the value.

Param conflicts
    Logging a key again with the same canonical value is a quiet no-op; with a
    different value it raises :class:`ParamConflictError` naming key, old and new.

Tags
    Values follow the param leaf rule without flattening (containers are
    rejected); MLflow's 8000-character tag limit is enforced by rejecting, since
    MLflow would otherwise cut the value silently.

Strings stored as values, names or keys must be encodable as UTF-8 and contain no
NUL character (both break SQL stores).

Metric, param and tag keys (``inputs.keys``)
    Allowed: ASCII letters, digits, ``_ - . /`` and space, at most 250 characters,
    no leading or trailing whitespace, not empty, and not path-like: no leading or
    trailing ``/``, no ``//``, no ``.`` or ``..`` segment, and not starting with
    ``..``. ``:`` is rejected everywhere, because whether MLflow accepts it depends
    on the server's operating system. ``strict`` (default) rejects naming the
    character and position. ``sanitize`` maps a key deterministically: Unicode
    compatibility decomposition with accents dropped (``é`` -> ``e``), every other
    disallowed character -> ``_``, surrounding whitespace stripped, empty ``/``
    segments removed, ``.`` and ``..`` segments -> ``_`` and ``__``, leading dots
    of a key starting with ``..`` -> ``_``, and keys over 250 characters cut to 241
    characters plus ``-`` and 8 hex digits of the original key's sha256. Two
    different keys mapping to the same key in one call or in the validator's
    lifetime (per kind: metric, param, tag) are rejected; keys that sanitize to
    nothing (``""``, ``"///"``) are rejected.

Run names
    ``None`` (MLflow generates a name) or a string of 1 to 250 characters that is
    not only whitespace.

Registry
    Model names: non-empty strings of at most 256 characters without ``/``, ``@``,
    ``:``, ``#``, ``?`` (they break ``models:/`` URIs), control characters, or
    surrounding whitespace, and not ``.``/``..``-like. Aliases: 1 to 255 of ASCII
    ``A-Z a-z 0-9 _ -``, not ``latest`` and not ``v``/``V`` followed by digits
    (both reserved by MLflow for version lookups). Stages: ``none``, ``staging``,
    ``production``, ``archived`` in any case and surrounding whitespace, mapped to
    ``None``, ``Staging``, ``Production``, ``Archived``. Versions: positive
    integers or strings of ASCII digits up to ``2**31 - 1``, returned as a string
    without leading zeros; ``bool`` and floats are rejected.
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import posixpath
import re
import string
import struct
import threading
import unicodedata
from collections.abc import Iterable, Mapping, Sized
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, Literal, get_args, get_origin, get_type_hints

from .contracts import MetricPoint
from .errors import ConfigError, InvalidInputError, ParamConflictError

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_PARAM_VALUE_LENGTH",
    "MAX_RUN_NAME_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "InputPolicy",
    "InputValidator",
    "ParamBatch",
    "PolicyError",
    "canonical_stage",
    "normalize_step",
    "overflow_artifact",
]

logger = logging.getLogger(__name__)

# MLflow's own limits (mlflow.utils.validation and its SQL schema).
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_RUN_NAME_LENGTH = 250
# How many distinct valid keys a validator remembers; beyond, keys are checked again.
_VALID_KEYS_KEPT = 10_000
MAX_MODEL_NAME_LENGTH = 256
MAX_ALIAS_LENGTH = 255
MAX_STEP = 2**63 - 1
MAX_VERSION = 2**31 - 1
MAX_NESTING = 64

KEY_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_-./ ")
KEY_CHARACTERS_TEXT = "ASCII letters, digits, '_', '-', '.', '/' and space"
_SHOW_LENGTH = 80
_SANITIZED_HASH_LENGTH = 8

_DECIMAL_LITERAL = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
)
_NONFINITE_LITERAL = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
_ALIAS = re.compile(r"[A-Za-z0-9_-]+")
_VERSION_ALIAS = re.compile(r"[vV][0-9]+")
_DIGITS = re.compile(r"[0-9]+")
_MODEL_NAME_FORBIDDEN = "/@:#?"
_STAGES = {
    "none": "None",
    "staging": "Staging",
    "production": "Production",
    "archived": "Archived",
}
_FLOAT_FORMATS = {2: "e", 4: "f"}
_KEY_FIX = (
    f"use only {KEY_CHARACTERS_TEXT} (at most {MAX_KEY_LENGTH} characters, no "
    "empty, '.' or '..' path segments), or set `inputs: {keys: sanitize}` in "
    "agent.yaml to map keys to that set automatically"
)

KeyKind = Literal["metric", "param", "tag"]


class PolicyError(ConfigError, ValueError):
    """A bad :class:`InputPolicy` value.

    Also a ``ValueError`` so that ``Options.parse`` re-raises it with the file,
    line and column of the ``inputs:`` section.
    """


@dataclass(frozen=True)
class InputPolicy:
    """The ``inputs:`` section of ``agent.yaml``: how borderline values are treated."""

    nonfinite: Literal["error", "skip", "keep"] = field(
        default="skip",
        metadata={
            "help": "NaN/±inf metric values: 'skip' drops the point with one "
            "warning per key, 'error' raises, 'keep' stores NaN and raises for "
            "±inf (MLflow would store ±1.797e308)."
        },
    )
    long_params: Literal["error", "truncate"] = field(
        default="truncate",
        metadata={
            "help": "Param values over 6000 characters: 'truncate' stores a "
            "marked prefix and the full value as the artifact params/<key>.txt; "
            "'error' raises."
        },
    )
    keys: Literal["strict", "sanitize"] = field(
        default="strict",
        metadata={
            "help": "Metric, param and tag keys outside MLflow's portable set: "
            "'strict' raises, 'sanitize' maps them to it (collisions raise)."
        },
    )
    param_separator: str = field(
        default=".",
        metadata={
            "help": "Joins the keys of nested param mappings and list indices "
            "(a.b.0); one or more of the key characters, not '/' at either end."
        },
    )

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for each in fields(self):
            hint = hints[each.name]
            choices = get_args(hint) if get_origin(hint) is Literal else ()
            value = getattr(self, each.name)
            if choices and value not in choices:
                raise PolicyError(
                    f"{each.name} {value!r} is not one of "
                    f"{', '.join(map(repr, choices))}; pick one of those"
                )
        self._check_separator()

    def _check_separator(self) -> None:
        sep = self.param_separator
        bad = (
            not isinstance(sep, str)
            or not sep
            or not set(sep) <= KEY_CHARACTERS
            or sep.strip() != sep
            or sep.startswith("/")
            or sep.endswith("/")
        )
        if bad:
            raise PolicyError(
                f"param_separator {sep!r} cannot join keys; use a non-empty "
                f"string of {KEY_CHARACTERS_TEXT} that neither starts nor ends with "
                "'/' or whitespace, such as '.'"
            )


@dataclass(frozen=True)
class ParamBatch:
    """Params ready to store.

    ``values`` maps flattened keys to canonical strings within MLflow's limit;
    ``overflow`` maps an artifact file (``params/<key>.txt``) to the full text of
    each value that was truncated in ``values``.
    """

    values: dict[str, str]
    overflow: dict[str, str]


def canonical_stage(stage: object) -> str:
    """A stage in MLflow's canonical case (``production`` -> ``Production``)."""
    canonical = None
    if isinstance(stage, str):
        canonical = _STAGES.get(stage.strip().lower())
    if canonical is None:
        raise InvalidInputError(
            f"stage {_show(stage)} is not a model stage; use one of "
            f"{', '.join(_STAGES.values())} (any case)"
        )
    return canonical


def overflow_artifact(key: str) -> str:
    """The run artifact that holds the full value of the truncated param ``key``."""
    return f"params/{key}.txt"


def _show(value: object) -> str:
    """A short description of ``value`` for error messages: repr, type, length."""
    try:
        text = repr(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    details = [f"type {type(value).__name__}"]
    if len(text) > _SHOW_LENGTH:
        size = _length(value)
        details.append(
            f"length {size}" if size is not None else f"repr of {len(text)} characters"
        )
        text = f"{text[:_SHOW_LENGTH]}..."
    return f"{text} ({', '.join(details)})"


def _length(value: object) -> int | None:
    try:
        return len(value) if isinstance(value, Sized) else None
    except TypeError:
        # 0-d arrays define __len__ but refuse to answer it.
        return None


def _show_key(key: object) -> str:
    """A key for messages: its repr, clipped, with the type only when not a str."""
    if not isinstance(key, str):
        return _show(key)
    if len(key) <= _SHOW_LENGTH:
        return repr(key)
    return f"{key[:_SHOW_LENGTH]!r}... (length {len(key)})"


def _is_array_like(value: object) -> bool:
    """numpy scalars and arrays, torch tensors and the like: ``.shape`` + ``.item``."""
    return hasattr(value, "shape") and callable(getattr(value, "item", None))


def _shape(what: str, value: Any) -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in value.shape)
    except Exception as exc:
        raise InvalidInputError(
            f"{what}: {_show(value)} has a shape that cannot be read ({exc}); pass "
            "a plain Python value instead"
        ) from None


def _on_host(value: Any) -> Any:
    """Detach from autograd and copy to host memory when the object supports it."""
    for method in ("detach", "cpu"):
        convert = getattr(value, method, None)
        if callable(convert):
            value = convert()
    return value


def _single_item(what: str, value: Any) -> Any:
    """The only element of an array-like ``value``, as a Python scalar."""
    shape = _shape(what, value)
    if math.prod(shape) != 1:
        raise InvalidInputError(
            f"{what}: got an array/tensor of shape {shape} "
            f"({math.prod(shape)} elements), but one number is needed; reduce it "
            "first, e.g. .mean() or .item(), or log each element under its own key"
        )
    try:
        return _on_host(value).item()
    except Exception as exc:
        raise InvalidInputError(
            f"{what}: cannot read the element of {_show(value)} ({exc}); pass a "
            "plain Python number instead"
        ) from None


def _check_text(what: str, text: str) -> str:
    """Reject strings that SQL stores cannot hold: NUL, lone surrogates."""
    nul = text.find("\x00")
    if nul >= 0:
        raise InvalidInputError(
            f"{what}: contains a NUL character at position {nul}; remove it"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{what}: character at position {exc.start} cannot be encoded as "
            "UTF-8 (a lone surrogate); fix how the string was decoded"
        ) from None
    return text


# Metric values


def _metric_value(key: str, value: object) -> float:
    """Convert a metric value to a float (NaN/±inf included) or raise."""
    if type(value) is float:
        return value  # the common case, before any message is formatted
    what = f"metric {_show_key(key)}"
    if value is None:
        raise InvalidInputError(
            f"{what}: value is None; log a number, or skip the call when there "
            "is no value"
        )
    if _is_array_like(value) and not isinstance(value, (str, bytes)):
        original = value
        value = _single_item(what, value)
        if _is_array_like(value):
            return _real_to_float(what, value, original)
    return _scalar_to_float(what, value)


def _scalar_to_float(what: str, value: object) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return _numeric_string(what, value)
    if isinstance(value, numbers.Integral):
        return _integral_to_float(what, value)
    if isinstance(value, (Decimal, numbers.Real)):
        return _real_to_float(what, value, value)
    raise InvalidInputError(
        f"{what}: {_show(value)} is not a number; log an int, float, numeric "
        "string, or a one-element array/tensor"
    )


def _integral_to_float(what: str, value: numbers.Integral) -> float:
    number = int(value)
    try:
        result = float(number)
    except OverflowError:
        raise InvalidInputError(
            f"{what}: the integer {_show(value)} is beyond the range of a 64-bit "
            "float (±1.797e308); rescale it"
        ) from None
    if result != number:
        raise InvalidInputError(
            f"{what}: the integer {_show(value)} cannot be stored exactly as a "
            "64-bit float; log float(value) if rounding is acceptable"
        )
    return result


def _real_to_float(what: str, value: Any, original: object) -> float:
    if isinstance(value, Decimal) and value.is_snan():
        raise InvalidInputError(
            f"{what}: {_show(original)} is a signalling NaN; log float('nan') or a "
            "number"
        )
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError, ArithmeticError) as exc:
        raise InvalidInputError(
            f"{what}: {_show(original)} cannot be converted to a float ({exc}); "
            "log a plain number"
        ) from None
    if math.isinf(result) and _is_finite(value):
        raise InvalidInputError(
            f"{what}: {_show(original)} is beyond the range of a 64-bit float "
            "(±1.797e308); rescale it"
        )
    return result


def _is_finite(value: Any) -> bool:
    """Whether ``value`` itself is finite, judged without converting to float."""
    try:
        return bool(value == value and abs(value) != math.inf)
    except Exception:
        return True


def _numeric_string(what: str, value: str) -> float:
    text = value.strip()
    if _NONFINITE_LITERAL.fullmatch(text):
        return float(text)
    if not _DECIMAL_LITERAL.fullmatch(text):
        raise InvalidInputError(
            f"{what}: the string {_show(value)} is not a decimal number; log a "
            "number, or a string like '0.5', '-1e-3', 'nan' or 'inf'"
        )
    result = float(text)
    if math.isinf(result):
        raise InvalidInputError(
            f"{what}: {_show(value)} is beyond the range of a 64-bit float "
            "(±1.797e308); rescale it"
        )
    return result


# Steps


def normalize_step(key: str, step: object) -> int:
    """The step of metric ``key`` as a non-negative signed-64-bit ``int``.

    ``None`` means step 0 (MLflow's default); see the module docstring.
    """
    what = f"metric {_show_key(key)}: step"
    if step is None:
        return 0
    value: object = step
    if _is_array_like(value) and not isinstance(value, (str, bytes)):
        value = _single_item(what, value)
    number = _integral_step(what, value, step)
    if not 0 <= number <= MAX_STEP:
        raise InvalidInputError(
            f"{what} {_show(step)} is outside 0..{MAX_STEP} (MLflow stores steps "
            "as signed 64-bit integers); use a non-negative step in that range"
        )
    return number


def _integral_step(what: str, value: object, original: object) -> int:
    if isinstance(value, (bool, str, bytes)):
        raise InvalidInputError(
            f"{what} {_show(original)} is not an integer; pass an int such as "
            "the epoch or batch number"
        )
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, (Decimal, numbers.Real)):
        try:
            number = int(math.trunc(value))
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            number = None
        if number is not None and number == value:
            return number
        raise InvalidInputError(
            f"{what} {_show(original)} is not a whole number; pass an int "
            "(round it yourself if that is what you mean)"
        )
    raise InvalidInputError(
        f"{what} {_show(original)} is not an integer; pass an int such as the "
        "epoch or batch number"
    )


# Canonical strings for param and tag values


def _shortest_float(number: float, width: int) -> str:
    """Shortest decimal that reads back to ``number`` at ``width`` bytes, as repr."""
    fmt = _FLOAT_FORMATS.get(width)
    if fmt is None or not math.isfinite(number):
        return repr(number)
    for digits in range(1, 18):
        candidate = float(f"{number:.{digits}g}")
        try:
            narrowed = struct.unpack(fmt, struct.pack(fmt, candidate))[0]
        except OverflowError:
            # Rounding up passed the type's largest value: try more digits.
            continue
        if narrowed == number:
            return repr(candidate)
    return repr(number)


def _float_width(value: Any) -> int:
    """Bytes per element of a numpy/torch float, or 8 for anything else."""
    dtype = getattr(value, "dtype", None)
    name = str(dtype)
    if "bfloat" in name:
        # bfloat16 is not IEEE half precision: keep its exact value instead.
        return 8
    width = getattr(dtype, "itemsize", None)
    return width if isinstance(width, int) else 8


def _leaf_string(what: str, value: object) -> str:
    """The one canonical string of a scalar param or tag value."""
    if isinstance(value, str):
        return _check_text(what, value)
    if value is None or isinstance(value, bool):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidInputError(
            f"{what}: {_show(value)} is bytes; decode it to str first "
            "(value.decode('utf-8'))"
        )
    if _is_array_like(value):
        return _array_leaf(what, value)
    return _number_or_object_string(what, value)


def _array_leaf(what: str, value: Any) -> str:
    width = _float_width(value)
    item = _single_item(what, value)
    if isinstance(item, float):
        return _shortest_float(item, width)
    if _is_array_like(item):
        # A value numpy cannot turn into a Python scalar (e.g. longdouble).
        return _check_text(what, str(item))
    return _leaf_string(what, item)


def _number_or_object_string(what: str, value: object) -> str:
    if isinstance(value, numbers.Integral):
        try:
            return str(int(value))
        except ValueError:
            raise InvalidInputError(
                f"{what}: the integer {_show(value)} has too many digits to write "
                "as a string; store it as an artifact instead"
            ) from None
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, Decimal):
        return str(value)
    return _object_string(what, value)


def _object_string(what: str, value: object) -> str:
    cls = type(value)
    default_form = cls.__str__ is object.__str__ and cls.__repr__ is object.__repr__
    try:
        text = str(value)
    except Exception as exc:
        raise InvalidInputError(
            f"{what}: str() of {type(value).__name__} failed ({exc}); pass a str"
        ) from None
    if default_form or " at 0x" in text:
        raise InvalidInputError(
            f"{what}: {_show(value)} has no stable string form (it shows a memory "
            "address, which changes every run); pass a descriptive str instead"
        )
    return _check_text(what, text)


# Keys


def _key_problem(key: object) -> str | None:
    """Why ``key`` is not a portable MLflow key, or None when it is."""
    if not isinstance(key, str):
        return f"is a {type(key).__name__}, not a str"
    if not key:
        return "is empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"has {len(key)} characters, more than MLflow's {MAX_KEY_LENGTH}"
    for position, char in enumerate(key):
        if char not in KEY_CHARACTERS:
            return f"has {_describe_char(char)} at position {position}"
    return _path_problem(key)


def _describe_char(char: str) -> str:
    code = f"{char!r} (U+{ord(char):04X})"
    if char == ":":
        return (
            f"the character {code}, which MLflow accepts or refuses depending on "
            "the server's operating system,"
        )
    if not char.isascii():
        return f"the non-ASCII character {code}"
    return f"the character {code}"


def _path_problem(key: str) -> str | None:
    if key.strip() != key:
        return "has leading or trailing whitespace"
    if key.startswith("/") or key.endswith("/"):
        return "starts or ends with '/'"
    if "//" in key:
        return f"has an empty path segment ('//' at position {key.index('//')})"
    segments = key.split("/")
    if "." in segments or ".." in segments:
        return "has a '.' or '..' path segment"
    if key.startswith(".."):
        return "starts with '..', which MLflow reads as a parent directory"
    if posixpath.normpath(key) != key:
        return "is not a normalized path"
    return None


def _sanitize_key(key: str) -> str:
    """Map ``key`` onto the portable key set (see the module docstring)."""
    chars = []
    for char in unicodedata.normalize("NFKD", key):
        if unicodedata.combining(char):
            continue
        chars.append(char if char in KEY_CHARACTERS else "_")
    text = "".join(chars).strip()

    segments = [segment for segment in text.split("/") if segment]
    segments = [{".": "_", "..": "__"}.get(s, s) for s in segments]
    text = "/".join(segments).strip()
    if text.startswith(".."):
        stripped = text.lstrip(".")
        text = "_" * (len(text) - len(stripped)) + stripped

    if len(text) > MAX_KEY_LENGTH:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        keep = MAX_KEY_LENGTH - _SANITIZED_HASH_LENGTH - 1
        text = f"{text[:keep]}-{digest[:_SANITIZED_HASH_LENGTH]}"
    return text


# The validator


class InputValidator:
    """Validates and normalizes user values following an :class:`InputPolicy`.

    Thread-safe. In ``sanitize`` mode the validator remembers, per key kind, which
    original key each sanitized key came from, so that two different keys can never
    end up merged in MLflow.
    """

    def __init__(self, policy: InputPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._origins: dict[str, dict[str, str]] = {
            "metric": {},
            "param": {},
            "tag": {},
        }
        self._warned_nonfinite: set[str] = set()
        self._warned_renamed: set[tuple[str, str]] = set()
        # Strict keys already found valid: a training loop logs the same few keys
        # on every step, and checking each again is most of log_metric's cost.
        self._valid_keys: set[str] = set()

    # Keys

    def _plan_keys(
        self, kind: KeyKind, keys: Iterable[object]
    ) -> list[tuple[str, str]]:
        """Check every key and pair it with the key to store; changes nothing."""
        if self.policy.keys == "strict":
            valid = self._valid_keys
            checked = [
                key if type(key) is str and key in valid
                else self._strict_key(kind, key)
                for key in keys
            ]
            return [(key, key) for key in checked]
        plan = [(str(key), self._sanitized_key(kind, key)) for key in keys]
        self._check_collisions(kind, plan, {})
        return plan

    def _strict_key(self, kind: KeyKind, key: object) -> str:
        problem = _key_problem(key)
        if problem is not None:
            raise InvalidInputError(
                f"{kind} key {_show_key(key)} {problem}; {_KEY_FIX}"
            )
        if type(key) is str and len(self._valid_keys) < _VALID_KEYS_KEPT:
            self._valid_keys.add(key)
        return str(key)

    def _sanitized_key(self, kind: KeyKind, key: object) -> str:
        if not isinstance(key, str):
            raise InvalidInputError(
                f"{kind} key {_show(key)} is not a str; pass string keys"
            )
        mapped = _sanitize_key(key)
        problem = _key_problem(mapped)
        if problem is not None:
            raise InvalidInputError(
                f"{kind} key {_show_key(key)} cannot be sanitized (it maps to "
                f"{_show_key(mapped)}, which {problem}); rename it with at least "
                f"one of {KEY_CHARACTERS_TEXT}"
            )
        return mapped

    @staticmethod
    def _check_collisions(
        kind: KeyKind, plan: Iterable[tuple[str, str]], origins: dict[str, str]
    ) -> None:
        """Raise if two different keys map to one; record the pairs in ``origins``."""
        seen = dict(origins)
        for original, mapped in plan:
            other = seen.setdefault(mapped, original)
            if other != original:
                raise InvalidInputError(
                    f"{kind} keys {_show_key(other)} and {_show_key(original)} "
                    f"both sanitize to {_show_key(mapped)}; rename one of them so "
                    "they stay distinct"
                )
        origins.update(seen)

    def _commit_keys(
        self, kind: KeyKind, plan: list[tuple[str, str]]
    ) -> dict[str, str]:
        """Remember sanitized keys for later calls; map original -> stored key."""
        if self.policy.keys == "sanitize":
            with self._lock:
                self._check_collisions(kind, plan, self._origins[kind])
                renamed = [
                    (original, mapped)
                    for original, mapped in plan
                    if original != mapped
                    and (kind, original) not in self._warned_renamed
                ]
                self._warned_renamed.update((kind, o) for o, _ in renamed)
            self._log_renames(kind, renamed)
        return dict(plan)

    @staticmethod
    def _log_renames(kind: KeyKind, renamed: list[tuple[str, str]]) -> None:
        for original, mapped in renamed:
            logger.warning(
                "%s key %s is stored as %s (inputs.keys is 'sanitize')",
                kind, _show_key(original), _show_key(mapped),
            )

    # Metrics

    def metric(
        self, key: str, value: object, step: object | None, timestamp_ms: int
    ) -> MetricPoint | None:
        """One metric point, or None when a non-finite value is skipped."""
        if (
            type(key) is str
            and key in self._valid_keys
            and type(value) is float
            and math.isfinite(value)
            and (step is None or (type(step) is int and 0 <= step <= MAX_STEP))
            and type(timestamp_ms) is int
        ):
            # A training loop's every step: a known key, a float and an int step.
            # The full path below gives the same result, only slower.
            return MetricPoint(key, value + 0.0, timestamp_ms, step or 0)
        if not isinstance(key, str):
            # Checked first: an unhashable key could not even go into a mapping.
            raise InvalidInputError(
                f"metric key {_show(key)} is not a str; pass a string key"
            )
        points = self.metrics({key: value}, step, timestamp_ms)
        return points[0] if points else None

    def metrics(
        self, values: Mapping[str, object], step: object | None, timestamp_ms: int
    ) -> list[MetricPoint]:
        """Points for every entry of ``values``; any bad entry raises, none kept."""
        _require_mapping("metrics", values)
        _check_timestamp(timestamp_ms)
        plan = self._plan_keys("metric", values)
        if step is None or (type(step) is int and 0 <= step <= MAX_STEP):
            step_number = step or 0  # the common case, before any message is built
        else:
            step_number = normalize_step(_keys_label(values), step)
        converted = [
            (key, _metric_value(key, values[key])) for key, _ in plan
        ]
        kept = [(key, self._nonfinite(key, number)) for key, number in converted]

        stored = self._commit_keys("metric", plan)
        return [
            MetricPoint(stored[key], number, timestamp_ms, step_number)
            for key, number in kept
            if number is not None
        ]

    def _nonfinite(self, key: str, number: float) -> float | None:
        if math.isfinite(number):
            # MLflow's stores drop the sign of zero; do it here so every path agrees.
            return number + 0.0
        policy = self.policy.nonfinite
        if policy == "keep" and math.isnan(number):
            return number
        if policy == "skip":
            self._warn_skipped(key, number)
            return None
        reason = (
            "MLflow's stores would write it as ±1.7976931348623157e308, a "
            "different number"
            if policy == "keep"
            else "inputs.nonfinite is 'error'"
        )
        raise InvalidInputError(
            f"metric {_show_key(key)}: value {number!r} is not finite and "
            f"{reason}; fix the computation, or set `inputs: {{nonfinite: skip}}` "
            "in agent.yaml to drop such points with a warning"
        )

    def _warn_skipped(self, key: str, number: float) -> None:
        with self._lock:
            if key in self._warned_nonfinite:
                return
            self._warned_nonfinite.add(key)
        logger.warning(
            "metric %r: skipping non-finite value %r (inputs.nonfinite is 'skip'); "
            "later non-finite values of this key are skipped silently",
            key, number,
        )

    # Params

    def params(self, params: Mapping[str, object]) -> ParamBatch:
        """Flatten, canonicalize and limit params; see the module docstring."""
        _require_mapping("params", params)
        flat: dict[str, str] = {}
        for key, value in params.items():
            if not isinstance(key, str):
                raise InvalidInputError(
                    f"param key {_show(key)} is not a str; pass string keys"
                )
            self._flatten(key, value, flat, (), 0)
        plan = self._plan_keys("param", flat)

        values: dict[str, str] = {}
        overflow: dict[str, str] = {}
        for key, mapped in plan:
            values[mapped] = self._limit_param(mapped, flat[key], overflow)

        self._commit_keys("param", plan)
        return ParamBatch(values=values, overflow=overflow)

    def _flatten(
        self,
        key: str,
        value: object,
        flat: dict[str, str],
        path: tuple[int, ...],
        depth: int,
    ) -> None:
        if depth > MAX_NESTING or id(value) in path:
            raise InvalidInputError(
                f"param {_show_key(key)}: nested deeper than {MAX_NESTING} levels or "
                "contains itself; log a flatter structure"
            )
        children = _children(key, value)
        if children is None:
            _add_leaf(key, _leaf_string(f"param {_show_key(key)}", value), flat)
            return
        if not children:
            _add_leaf(key, "{}" if isinstance(value, Mapping) else "[]", flat)
            return
        sep = self.policy.param_separator
        for child_key, child in children:
            self._flatten(
                f"{key}{sep}{child_key}", child, flat,
                (*path, id(value)), depth + 1,
            )

    def _limit_param(self, key: str, text: str, overflow: dict[str, str]) -> str:
        if len(text) <= MAX_PARAM_VALUE_LENGTH:
            return text
        if self.policy.long_params == "error":
            raise InvalidInputError(
                f"param {_show_key(key)}: value has {len(text)} characters, more than "
                f"MLflow's {MAX_PARAM_VALUE_LENGTH} (starts {text[:40]!r}); log it "
                "as an artifact with log_text, or set `inputs: {long_params: "
                "truncate}` in agent.yaml"
            )
        artifact = overflow_artifact(key)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        marker = (
            f"...[truncated {len(text)} chars, sha256 {digest}, full value in "
            f"artifact {artifact}]"
        )
        overflow[artifact] = text
        logger.warning(
            "param %r: value of %d characters truncated to %d; full value stored "
            "as artifact %s",
            key, len(text), MAX_PARAM_VALUE_LENGTH, artifact,
        )
        return text[: MAX_PARAM_VALUE_LENGTH - len(marker)] + marker

    def check_param_conflicts(
        self, logged: Mapping[str, str], new: Mapping[str, str]
    ) -> dict[str, str]:
        """The entries of ``new`` not yet logged; raise if one changes a value."""
        conflicts = [
            (key, logged[key], value)
            for key, value in new.items()
            if key in logged and logged[key] != value
        ]
        if conflicts:
            key, old, value = conflicts[0]
            others = len(conflicts) - 1
            more = f" ({others} more keys conflict)" if others else ""
            raise ParamConflictError(
                f"param {_show_key(key)} was already logged as {_show_key(old)} in "
                f"this run and cannot change to {_show_key(value)}{more}; params "
                "are fixed per run - log the new value under another key, as a "
                "metric, or start a new (child) run"
            )
        return {key: value for key, value in new.items() if key not in logged}

    # Tags and run names

    def tags(self, tags: Mapping[str, object]) -> dict[str, str]:
        """Tags with valid keys and canonical string values up to 8000 characters."""
        _require_mapping("tags", tags)
        plan = self._plan_keys("tag", tags)
        texts = {mapped: self._tag_value(key, tags[key]) for key, mapped in plan}
        self._commit_keys("tag", plan)
        return texts

    @staticmethod
    def _tag_value(key: object, value: object) -> str:
        what = f"tag {_show_key(key)}"
        is_array = _is_array_like(value) and not isinstance(value, (str, bytes))
        container = isinstance(value, (Mapping, list, tuple, set, frozenset))
        if container or (is_array and _shape(what, value) != ()):
            raise InvalidInputError(
                f"{what}: {_show(value)} is a container; a tag holds one string - "
                "pass json.dumps(value) or log it as params"
            )
        text = _leaf_string(what, value)
        if len(text) > MAX_TAG_VALUE_LENGTH:
            raise InvalidInputError(
                f"{what}: value has {len(text)} characters, more than MLflow's "
                f"{MAX_TAG_VALUE_LENGTH}; store it as an artifact with log_text"
            )
        return text

    def run_name(self, name: object) -> str | None:
        """``None`` (MLflow picks a name) or a checked run name."""
        if name is None:
            return None
        if not isinstance(name, str):
            raise InvalidInputError(
                f"run name {_show(name)} is not a str; pass a string or None"
            )
        if not name.strip():
            raise InvalidInputError(
                f"run name {name!r} is empty; pass a name, or None to let MLflow "
                "generate one"
            )
        if len(name) > MAX_RUN_NAME_LENGTH:
            raise InvalidInputError(
                f"run name {_show(name)} has {len(name)} characters, more than "
                f"MLflow's {MAX_RUN_NAME_LENGTH}; shorten it"
            )
        return _check_text(f"run name {_show(name)}", name)

    # Registry

    def model_name(self, name: object) -> str:
        """A registered model name that MLflow and ``models:/`` URIs accept."""
        if not isinstance(name, str):
            raise InvalidInputError(
                f"model name {_show(name)} is not a str; pass a string"
            )
        problem = _model_name_problem(name)
        if problem is not None:
            raise InvalidInputError(
                f"model name {_show(name)} {problem}; use a name such as "
                "'fraud-detector' (letters, digits, '-', '_', '.', spaces)"
            )
        return _check_text(f"model name {_show(name)}", name)

    def alias(self, alias: object) -> str:
        """A model alias allowed by MLflow and not reserved."""
        if not isinstance(alias, str):
            raise InvalidInputError(
                f"alias {_show(alias)} is not a str; pass a string such as "
                "'champion'"
            )
        problem = _alias_problem(alias)
        if problem is not None:
            raise InvalidInputError(
                f"alias {_show(alias)} {problem}; use 1 to {MAX_ALIAS_LENGTH} of "
                "A-Z a-z 0-9 _ -, such as 'champion' or 'prod-eu'"
            )
        return alias

    def stage(self, stage: object) -> str:
        """A stage in MLflow's canonical case (``production`` -> ``Production``)."""
        return canonical_stage(stage)

    def version(self, version: object) -> str:
        """A model version number as MLflow's string form (``"3"``)."""
        number = _version_number(version)
        if number is None or not 1 <= number <= MAX_VERSION:
            raise InvalidInputError(
                f"model version {_show(version)} is not a version number; pass a "
                f"positive int (or its digits as a str) up to {MAX_VERSION}"
            )
        return str(number)


# Small helpers


def _require_mapping(what: str, value: object) -> None:
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"{what}: expected a mapping of key to value, got {_show(value)}; pass "
            "a dict"
        )


def _check_timestamp(timestamp_ms: object) -> None:
    valid = isinstance(timestamp_ms, int) and not isinstance(timestamp_ms, bool)
    if not valid or not 0 <= timestamp_ms <= MAX_STEP:  # type: ignore[operator]
        raise InvalidInputError(
            f"metric timestamp {_show(timestamp_ms)} is not milliseconds since the "
            "epoch; pass int(time.time() * 1000)"
        )


def _keys_label(values: Mapping[str, object]) -> str:
    """How a step error names the metrics it belongs to."""
    label = ", ".join(map(str, values)) or "<none>"
    return label if len(label) <= _SHOW_LENGTH else f"{label[:_SHOW_LENGTH]}..."


def _add_leaf(key: str, text: str, flat: dict[str, str]) -> None:
    if key in flat:
        raise InvalidInputError(
            f"param {_show_key(key)} is given twice after flattening nested params (a "
            "dotted key and a nested mapping name the same param); keep one of them"
        )
    flat[key] = text


def _children(key: str, value: object) -> list[tuple[str, object]] | None:
    """The (sub-key, value) pairs of a param container, or None for a leaf."""
    what = f"param {_show_key(key)}"
    if isinstance(value, Mapping):
        return [(_child_key(key, k), v) for k, v in value.items()]
    if isinstance(value, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        ordered = sorted(_leaf_string(what, v) for v in value)
        return [(str(i), v) for i, v in enumerate(ordered)]
    if _is_array_like(value) and not isinstance(value, (str, bytes)):
        if _shape(what, value) == ():
            return None
        return [(str(i), v) for i, v in enumerate(_elements(key, value))]
    return None


def _child_key(parent: str, key: object) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    raise InvalidInputError(
        f"param {_show_key(parent)}: nested key {_show(key)} is not a str or int; use "
        "string keys in nested params"
    )


def _elements(key: str, value: Any) -> list[object]:
    """The sub-arrays or scalars along the first axis, with their dtype kept."""
    try:
        return list(_on_host(value))
    except Exception as exc:
        raise InvalidInputError(
            f"param {_show_key(key)}: cannot read the elements of {_show(value)} "
            f"({exc}); convert it to a list first"
        ) from None


def _model_name_problem(name: str) -> str | None:
    if not name.strip():
        return "is empty"
    if len(name) > MAX_MODEL_NAME_LENGTH:
        return f"has {len(name)} characters, more than MLflow's {MAX_MODEL_NAME_LENGTH}"
    for position, char in enumerate(name):
        if char in _MODEL_NAME_FORBIDDEN:
            return (
                f"contains {char!r} at position {position}, which breaks "
                "models:/ URIs"
            )
        if unicodedata.category(char).startswith("C"):
            return f"contains the control character U+{ord(char):04X} at {position}"
    if name.strip() != name:
        return "has leading or trailing whitespace"
    if name == "." or name.startswith("..") or posixpath.normpath(name) != name:
        return "reads as a relative path ('.' or '..')"
    return None


def _alias_problem(alias: str) -> str | None:
    if not alias:
        return "is empty"
    if len(alias) > MAX_ALIAS_LENGTH:
        return f"has {len(alias)} characters, more than MLflow's {MAX_ALIAS_LENGTH}"
    bad = next((c for c in alias if not _ALIAS.fullmatch(c)), None)
    if bad is not None:
        return f"contains {bad!r} at position {alias.index(bad)}"
    if alias.lower() == "latest":
        return "is reserved by MLflow for the newest version"
    if _VERSION_ALIAS.fullmatch(alias):
        return "is reserved by MLflow for version numbers (v<digits>)"
    return None


def _version_number(version: object) -> int | None:
    if _is_array_like(version) and not isinstance(version, (str, bytes)):
        try:
            version = _single_item("model version", version)
        except InvalidInputError:
            return None
    if isinstance(version, bool):
        return None
    if isinstance(version, numbers.Integral):
        return int(version)
    if isinstance(version, str) and _DIGITS.fullmatch(version.strip()):
        digits = version.strip()
        return int(digits) if len(digits) <= 12 else None
    return None
