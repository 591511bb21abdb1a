"""Masking secrets in what the command line shows.

Three kinds of secret are masked: values under keys that look secret (``token``,
``password``, ``api_key``...), passwords in URIs (``https://user:***@host``), and
any text equal to, or containing, the value of an environment variable whose name
looks secret (``MLFLOW_TRACKING_TOKEN``), wherever in the configuration it was
interpolated.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "is_secret_name", "redact_text", "redact_tree", "secret_values"]

MASK = "***"
SECRET_WORDS = ("password", "passwd", "token", "secret", "credential")
_NAME_PARTS = re.compile(r"[^a-z0-9]+")
# Short values (an empty password, "1") would mask unrelated text everywhere.
MIN_SECRET_LENGTH = 4
_URI_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s]*):(?P<password>[^/@\s]+)@"
)


def is_secret_name(name: str) -> bool:
    """Whether a key or variable name says its value is a secret.

    ``api_key``, ``ACCESS_KEY`` and ``apikey`` do; ``inputs.keys`` does not, so
    errors about it can show the wrong value.
    """
    lowered = name.lower()
    if any(word in lowered for word in SECRET_WORDS):
        return True
    return any(part.endswith("key") for part in _NAME_PARTS.split(lowered))


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-looking environment variables, longest first."""
    env = os.environ if environ is None else environ
    values = {
        value for name, value in env.items()
        if is_secret_name(name) and len(value.strip()) >= MIN_SECRET_LENGTH
    }
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with URI passwords and known secret values masked."""
    masked = _URI_USERINFO.sub(r"\g<scheme>\g<user>:" + MASK + "@", text)
    for secret in secret_values() if secrets is None else secrets:
        masked = masked.replace(secret, MASK)
    return masked


def redact_tree(value: Any, secrets: list[str] | None = None, key: str = "") -> Any:
    """A copy of nested mappings and lists with every secret masked.

    Everything below a secret-looking key is masked, whatever its own name.
    """
    known = secret_values() if secrets is None else secrets
    return _redact(value, known, is_secret_name(key))


def _redact(value: Any, secrets: list[str], hidden: bool) -> Any:
    if isinstance(value, Mapping):
        return {
            k: _redact(v, secrets, hidden or is_secret_name(str(k)))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_redact(item, secrets, hidden) for item in value]
    if hidden and value is not None:
        return MASK
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value
