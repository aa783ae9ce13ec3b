"""Human-readable output: sizes, counts, times and aligned tables.

Owns how numbers, moments and tables read to people; the CLI prints them and the
records' ``summary()`` methods use them too, so it lives here, not in ``registry.cli``.

A leaf: must never import anything from ``registry`` (least of all ``cli`` or
``api``), nor click, torch or SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime


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
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def shape(dims: Sequence[int]) -> str:
    return "x".join(str(d) for d in dims) if dims else "scalar"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; columns listed in ``right`` right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
