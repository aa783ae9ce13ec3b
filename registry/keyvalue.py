"""Parse and check the values users type: tags (string values), architecture arguments
(JSON values), dates. Torch-free and SQLAlchemy-free: the CLI validates with these
before it starts any work, and the Python API checks the same values with them.

Messages name the value, never an option or argument spelling (``--tag``, ``tags=``):
click prefixes the option's name for command-line users, and Python users see the
argument they passed. A value quoted in a message is its ``repr`` cut to a readable
length (``_format.quoted``): one line, control characters escaped, whatever it holds.

Text kept in the catalogue: a tag value is one line of text (no control characters at
all: it is a label typed as ``K=V`` and matched exactly by ``--tag`` filters); a
description is free text (newlines, tabs, any script); neither may hold NUL, which a
PostgreSQL catalogue cannot store, nor a lone surrogate (what Python makes of bytes
that are not UTF-8), which no catalogue can. Format characters (right-to-left
override, zero-width joiner) and look-alike letters are kept; they are shown escaped
or as they are (``_format.printable``), never interpreted by a terminal.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from ._format import quoted as shown
from .errors import InvalidArgumentError

TAG_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}")
_PYTHON_CONSTANTS = {"True": True, "False": False, "None": None}
MAX_TAG_VALUE = 4096
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def storable_text(text: str, what: str) -> str:
    """Return ``text`` if a catalogue can store it, else raise InvalidArgumentError
    naming ``what``: no NUL (PostgreSQL refuses it in text) and no lone surrogate (not
    Unicode: Python's stand-in for bytes that are not UTF-8, on a command line too)."""
    if "\x00" in text:
        raise InvalidArgumentError(
            f"{what} {shown(text)} contains a NUL character (\\x00), which the catalogue "
            "cannot store"
        )
    bad = _SURROGATE_RE.search(text)
    if bad is not None:
        raise InvalidArgumentError(
            f"{what} {shown(text)} is not valid Unicode text (lone surrogate "
            f"U+{ord(bad.group()):04X} at character {bad.start()}: bytes that are not UTF-8?)"
        )
    return text


def check_tag_value(key: str, text: str) -> str:
    """A tag value: storable, one line of text without control characters, at most
    MAX_TAG_VALUE characters (else InvalidArgumentError)."""
    storable_text(text, f"tag {key!r} value")
    if len(text) > MAX_TAG_VALUE:
        raise InvalidArgumentError(f"tag {key!r} is longer than {MAX_TAG_VALUE} characters")
    if not text.isprintable():  # fast path: printable text has no control character
        for position, char in enumerate(text):
            if unicodedata.category(char) == "Cc":
                raise InvalidArgumentError(
                    f"tag {key!r} value {shown(text)} has a control character "
                    f"({shown(char)} at character {position}): tag values are one line of "
                    "text without control characters"
                )
    return text


def _split(item: str, what: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise InvalidArgumentError(f"invalid {what} {shown(item)}: expected KEY=VALUE")
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
                f"invalid tag key {shown(key)}: start with a letter, digit or '_', then "
                "letters, digits, '_', '.', ':', '/' or '-' (at most 128 characters)"
            )
        if isinstance(value, str):
            text = value
        else:
            try:
                text = json.dumps(value)
            except (TypeError, ValueError, RecursionError):
                raise InvalidArgumentError(
                    f"tag {key!r} value {shown(value)} is neither text nor a JSON value"
                ) from None
        out[key] = check_tag_value(key, text)
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
                f"invalid architecture argument {shown(item)}: {shown(key)} is not a Python "
                "argument name"
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
            raise InvalidArgumentError(f"invalid architecture argument name {shown(key)}")
        if key in ("weights", "weights_backbone", "pretrained"):
            raise InvalidArgumentError(
                f"architecture argument {key!r} is set by the registry: weights always come "
                "from the registry, never downloaded"
            )
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            raise InvalidArgumentError(
                f"architecture argument {key}={shown(value)} is not JSON-serialisable"
            ) from None
    return kwargs


def format_kwargs(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(kwargs.items()))


def parse_date(value: datetime | str | None, label: str) -> datetime | None:
    """A datetime in UTC from a datetime or an ISO 8601 string (naive means UTC; an
    offset is converted).

    Raises InvalidArgumentError naming ``label`` (the argument's name) for anything else,
    a moment UTC cannot hold among them (year 1 at +01:00); its command-line message
    names the value only: click names the option.
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            problem = (
                f"{shown(value)} is not a date: use ISO 8601, e.g. 2026-11-29 or "
                "2026-11-29T14:30:00"
            )
            raise InvalidArgumentError(f"{label}={problem}", cli=problem) from None
    if not isinstance(value, datetime):
        raise InvalidArgumentError(f"{label} must be a datetime or an ISO 8601 string")
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        problem = f"{value.isoformat()} is out of range in UTC"
        raise InvalidArgumentError(f"{label}={problem}", cli=problem) from None


def check_description(description: Any, *, clearing: str | None = None) -> None:
    """A description is None or free text with something in it that a catalogue can
    store (:func:`storable_text`: no NUL, no lone surrogate); else InvalidArgumentError
    (``clearing`` says how to remove one instead)."""
    if description is not None and not isinstance(description, str):
        raise InvalidArgumentError("description must be a string or None")
    if description is not None:
        storable_text(description, "description")
    if description is not None and not description.strip():
        how = f": to remove one, {clearing}" if clearing else ""
        raise InvalidArgumentError(
            f"an empty description says nothing{how}",
            cli=f"an empty description says nothing{': to remove one, use --clear' if clearing else ''}",
        )
