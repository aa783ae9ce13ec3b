"""Parse and validate model names and REF strings.

Accepted references::

    name                  the latest version
    name:latest           the same, spelled out
    name:3                version 3
    name:production       whatever version the alias points at
    name@sha256:3fa1c9    the version whose digest starts with that hex prefix

Names are ASCII letters, digits, ``.``, ``_`` and ``-``, in parts joined by ``/``;
each part starts with a letter or digit, so a name can never spell ``..`` or an
absolute path, hold a control character or a look-alike letter (Cyrillic 'а' for
'a'). Names are only ever stored in the catalogue, never joined into a file path.
Aliases are ASCII too, and version numbers are ASCII digits up to ``MAX_VERSION``
(what the catalogue's integer column holds). A reference quoted in a message is cut
to a readable length (``_format.quoted``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._format import quoted as shown
from .errors import InvalidArgumentError, InvalidReferenceError

MAX_NAME_LENGTH = 128
MIN_DIGEST_PREFIX = 4
#: The largest version number (the catalogue keeps them in a 32-bit integer column).
MAX_VERSION = 2**31 - 1

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
NAME_RE = re.compile(rf"{_PART}(?:/{_PART})*")
ALIAS_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
_HEX_RE = re.compile(r"[0-9a-f]+")
_NUMBER_RE = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Ref:
    """A parsed reference: exactly one of version, alias or digest_prefix, or none (latest)."""

    name: str
    version: int | None = None
    alias: str | None = None
    digest_prefix: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}:{self.alias}"
        if self.digest_prefix is not None:
            return f"{self.name}@sha256:{self.digest_prefix}"
        return f"{self.name}:latest"


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise InvalidArgumentError."""
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError("model name must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgumentError(f"model name is longer than {MAX_NAME_LENGTH} characters")
    if not NAME_RE.fullmatch(name):
        raise InvalidArgumentError(
            f"invalid model name {shown(name)}: use letters, digits, '.', '_' and '-' "
            "(ASCII), in parts separated by '/', each part starting with a letter or digit"
        )
    return name


def validate_alias(alias: str) -> str:
    """Return ``alias`` if it can name a version: not a number, not ``latest``."""
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias) or alias == "latest":
        raise InvalidArgumentError(
            f"invalid alias {shown(alias)}: start with a letter, then letters, digits, '.', "
            "'_' or '-' (ASCII, at most 64 characters); 'latest' and version numbers are "
            "reserved"
        )
    return alias


def parse_ref(text: str) -> Ref:
    """Parse a REF string (surrounding whitespace ignored); raise InvalidReferenceError,
    with the accepted forms, if it is malformed or its version number is above
    MAX_VERSION."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidReferenceError("empty model reference")
    text = text.strip()
    try:
        if "@" in text:
            name, _, digest = text.partition("@")
            algo, sep, prefix = digest.partition(":")
            prefix = prefix.lower()
            if algo != "sha256" or not sep or not _HEX_RE.fullmatch(prefix) or len(prefix) > 64:
                raise InvalidReferenceError(
                    f"invalid digest in reference {shown(text)}: expected NAME@sha256:HEX"
                )
            if len(prefix) < MIN_DIGEST_PREFIX:
                raise InvalidReferenceError(
                    f"digest prefix in {shown(text)} is too short: give at least "
                    f"{MIN_DIGEST_PREFIX} hex characters"
                )
            return Ref(validate_name(name), digest_prefix=prefix)
        name, sep, selector = text.partition(":")
        validate_name(name)
        if sep and not selector:
            raise InvalidReferenceError(
                f"empty version in reference {shown(text)}: expected NAME:VERSION, "
                "NAME:latest or NAME:ALIAS"
            )
        if not sep or selector == "latest":
            return Ref(name)
        if _NUMBER_RE.fullmatch(selector):  # ASCII digits only: '¹' and '١' are not numbers
            version = int(selector) if len(selector) <= 12 else MAX_VERSION + 1
            if version < 1:
                raise InvalidReferenceError(f"versions start at 1, got {shown(text)}")
            if version > MAX_VERSION:
                raise InvalidReferenceError(
                    f"version number in {shown(text)} is too large: versions go up to {MAX_VERSION}"
                )
            return Ref(name, version=version)
        return Ref(name, alias=validate_alias(selector))
    except InvalidReferenceError:
        raise
    except InvalidArgumentError as exc:
        raise InvalidReferenceError(
            f"invalid reference {shown(text)}: {exc}. Expected NAME, NAME:VERSION, "
            "NAME:latest, NAME:ALIAS or NAME@sha256:HEX"
        ) from None
