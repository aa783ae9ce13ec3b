"""Human-readable output: sizes, counts, times and aligned tables.

Owns how numbers, moments and tables read to people; the CLI prints them and the
records' ``summary()`` methods use them too, so it lives here, not in ``registry.cli``.

A leaf: must never import anything from ``registry`` (least of all ``cli`` or
``api``), nor click, torch or SQLAlchemy.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime, timezone

#: Unicode categories never written to a terminal as they are: controls (C0, DEL, C1:
#: newlines, ESC and the CSI of escape sequences), format characters (bidirectional
#: overrides such as U+202E, zero-width spaces and joiners, the BOM), lone surrogates,
#: private-use and unassigned code points, and the line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def size(nbytes: int) -> str:
    """Decimal units, as disks and download tools show them: ``46.8 MB``."""
    value = float(nbytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def count(n: int) -> str:
    """Parameter counts as people say them: ``11.7M``, ``25.6M``, ``1.2B``, ``812``."""
    for factor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= factor:
            return f"{n / factor:.1f}{suffix}"
    return str(n)


def when(moment: datetime) -> str:
    """``2026-11-29 14:30:00 UTC``; an aware moment is converted to UTC first."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def shape(dims: Sequence[int]) -> str:
    return "x".join(str(d) for d in dims) if dims else "scalar"


def _escape(char: str) -> str:
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` safe to write to a terminal: one line, no escape sequence, nothing that
    reorders or hides what follows.

    Controls (newlines, tabs, ESC, NUL, DEL, C1), format characters (right-to-left
    override U+202E, zero-width joiners, BOM), line and paragraph separators, lone
    surrogates, private-use and unassigned code points are shown as Python writes them
    in a string literal (``\\n``, ``\\x1b``, ``\\u202e``); every other character,
    other scripts and look-alikes included, is kept. Backslashes are kept as they are,
    so the text is for reading: ``--json`` gives it exactly.
    """
    if text.isprintable():  # the usual case (a subset of what is kept), ~50x faster
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text)


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal: 2 per wide East Asian character, none for
    a combining mark, 1 for anything else (give it :func:`printable` text)."""
    if text.isascii():
        return len(text)
    total = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me"):
            continue
        total += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return total


#: Characters of a value quoted in a message.
QUOTED_CHARS = 80


def quoted(value: object, limit: int = QUOTED_CHARS) -> str:
    """``repr(value)`` for a message: one line, controls and format characters escaped
    (``repr`` escapes what is not printable), at most about ``limit`` characters (a
    longer one is cut, saying how long the value was)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    length = len(value) if isinstance(value, str) else len(text)
    return f"{text[: limit - 3]}... ({length:,} characters)"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters (``limit`` >= 2), saying so with an
    ellipsis and how many characters were left out."""
    if len(text) <= limit:
        return text
    keep = max(1, limit - len(f"... ({len(text):,} more characters)"))
    return text[:keep] + f"... ({len(text) - keep:,} more characters)"


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Sequence[int] = (),
    limit: int | None = None,
) -> str:
    """Columns padded to their widest cell; columns listed in ``right`` right-aligned.

    Every cell goes through :func:`printable`, so one row is always one line whatever
    the values hold, and columns line up by terminal width (wide characters count
    two); with ``limit``, a cell longer than ``limit`` characters is cut short
    (:func:`shorten`).
    """
    shown = [
        [printable(cell) if limit is None else shorten(printable(cell), limit) for cell in row]
        for row in [list(headers), *rows]
    ]
    widths = [0] * len(headers)
    for row in shown:
        widths = [max(w, width(cell)) for w, cell in zip(widths, row)]
    lines = []
    for row in shown:
        cells = []
        for i, (cell, w) in enumerate(zip(row, widths)):
            pad = " " * (w - width(cell))
            cells.append(pad + cell if i in right else cell + pad)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
