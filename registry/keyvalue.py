"""Parse and check the values users type: tags (string values), architecture arguments
(JSON values), dates. Torch-free and SQLAlchemy-free: the CLI validates with these
before it starts any work, and the Python API checks the same values with them.

Messages name the value, never an option or argument spelling (``--tag``, ``tags=``):
click prefixes the option's name for command-line users, and Python users see the
argument they passed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from .errors import InvalidArgumentError

TAG_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}")
_PYTHON_CONSTANTS = {"True": True, "False": False, "None": None}
MAX_TAG_VALUE = 4096


def _split(item: str, what: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise InvalidArgumentError(f"invalid {what} {item!r}: expected KEY=VALUE")
    return key.strip(), value


def validate_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """Check tag keys and turn values into strings."""
    if tags is not None and not isinstance(tags, Mapping):
        raise InvalidArgumentError(
            f"tags must be a mapping of key to value, such as {{'task': 'cls'}}, not {tags!r}"
        )
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not TAG_KEY_RE.fullmatch(key):
            raise InvalidArgumentError(
                f"invalid tag key {key!r}: start with a letter, digit or '_', then letters, "
                "digits, '_', '.', ':', '/' or '-' (at most 128 characters)"
            )
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) > MAX_TAG_VALUE:
            raise InvalidArgumentError(f"tag {key!r} is longer than {MAX_TAG_VALUE} characters")
        out[key] = text
    return out


def parse_tags(items: Iterable[str]) -> dict[str, str]:
    """``["task=cls", "lr=0.1"]`` -> ``{"task": "cls", "lr": "0.1"}``.

    Raises InvalidArgumentError for an item without ``=``, a bad key, or one key
    given twice with different values (the second would silently win).
    """
    return validate_tags(unique_pairs((_split(item, "tag") for item in items), "tag"))


def unique_pairs(pairs: Iterable[tuple[str, Any]], what: str) -> dict[str, Any]:
    """``(key, value)`` pairs as a dict; InvalidArgumentError for a key given twice with
    different values (the second would silently win)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out and out[key] != value:
            raise InvalidArgumentError(
                f"{what} {key!r} is given twice, as {out[key]!r} and {value!r}: keep one"
            )
        out[key] = value
    return out


def parse_arch_args(items: Iterable[str]) -> dict[str, Any]:
    """``["num_classes=10", "dropout=0.2", "norm=batch"]`` -> typed keyword arguments.

    Values are read as JSON when they parse (numbers, true/false/null, lists,
    objects, quoted strings), ``True``/``False``/``None`` as Python reads them, and
    kept as plain strings otherwise.
    """
    pairs = []
    for item in items:
        key, text = _split(item, "architecture argument")
        if not key.isidentifier():
            raise InvalidArgumentError(
                f"invalid architecture argument {item!r}: {key!r} is not a Python argument name"
            )
        if text in _PYTHON_CONSTANTS:  # what a Python user types for false/true/null
            pairs.append((key, _PYTHON_CONSTANTS[text]))
            continue
        try:
            pairs.append((key, json.loads(text)))
        except json.JSONDecodeError:
            pairs.append((key, text))
    return validate_arch_kwargs(unique_pairs(pairs, "architecture argument"))


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


def parse_date(value: datetime | str | None, label: str) -> datetime | None:
    """A UTC-aware datetime from a datetime or an ISO 8601 string (naive means UTC).

    Raises InvalidArgumentError naming ``label`` (the argument's name) for anything else
    (its command-line message names the value only: click names the option).
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            problem = (
                f"{value!r} is not a date: use ISO 8601, e.g. 2026-11-29 or 2026-11-29T14:30:00"
            )
            raise InvalidArgumentError(f"{label}={problem}", cli=problem) from None
    if not isinstance(value, datetime):
        raise InvalidArgumentError(f"{label} must be a datetime or an ISO 8601 string")
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def check_description(description: Any, *, clearing: str | None = None) -> None:
    """A description is None or text with something in it (else InvalidArgumentError;
    ``clearing`` says how to remove one instead)."""
    if description is not None and not isinstance(description, str):
        raise InvalidArgumentError("description must be a string or None")
    if description is not None and not description.strip():
        how = f": to remove one, {clearing}" if clearing else ""
        raise InvalidArgumentError(
            f"an empty description says nothing{how}",
            cli=f"an empty description says nothing{': to remove one, use --clear' if clearing else ''}",
        )
