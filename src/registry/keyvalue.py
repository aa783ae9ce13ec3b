"""Parse ``k=v`` options: tags (string values) and architecture arguments (JSON values)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import InvalidArgumentError

TAG_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}")
MAX_TAG_VALUE = 4096


def _split(item: str, what: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise InvalidArgumentError(f"invalid {what} {item!r}: expected KEY=VALUE")
    return key.strip(), value


def validate_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """Check tag keys and turn values into strings."""
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not TAG_KEY_RE.fullmatch(key):
            raise InvalidArgumentError(
                f"invalid tag key {key!r}: use letters, digits, '_', '.', ':', '/' or '-' "
                "(at most 128 characters)"
            )
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) > MAX_TAG_VALUE:
            raise InvalidArgumentError(f"tag {key!r} is longer than {MAX_TAG_VALUE} characters")
        out[key] = text
    return out


def parse_tags(items: Iterable[str]) -> dict[str, str]:
    """``["task=cls", "lr=0.1"]`` -> ``{"task": "cls", "lr": "0.1"}``."""
    return validate_tags(dict(_split(item, "tag") for item in items))


def parse_arch_args(items: Iterable[str]) -> dict[str, Any]:
    """``["num_classes=10", "dropout=0.2", "norm=batch"]`` -> typed keyword arguments.

    Values are read as JSON when they parse (numbers, true/false/null, lists,
    objects, quoted strings) and kept as plain strings otherwise.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, text = _split(item, "--arch-arg")
        if not key.isidentifier():
            raise InvalidArgumentError(
                f"invalid --arch-arg {item!r}: {key!r} is not a Python argument name"
            )
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return validate_arch_kwargs(out)


def validate_arch_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Architecture arguments are stored as JSON: keys are names, values JSON-able."""
    kwargs = dict(kwargs or {})
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidArgumentError(f"invalid architecture argument name {key!r}")
        if key in ("weights", "weights_backbone", "pretrained"):
            raise InvalidArgumentError(
                f"architecture argument {key!r} is set by the registry: weights always come "
                "from the registry, never downloaded"
            )
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"architecture argument {key}={value!r} is not JSON-serialisable"
            ) from None
    return kwargs


def format_kwargs(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(kwargs.items()))
