"""Where and how commands print: JSON on stdout, human messages on stderr, progress.

Owns :func:`emit_json`, :func:`say` and :func:`progress` (tqdm bars with a total,
bytes and rate on a terminal's stderr; nothing with ``--json`` or off a terminal). The
units and tables themselves are ``registry._format``, which the records share.

Nothing stored reaches the terminal raw: ``say`` writes one line with every control
and format character escaped (``_format.printable``), and JSON is ASCII with every
other character escaped, so it gives the stored text back exactly.

Must never import ``registry.api``, torch or SQLAlchemy, nor the command modules of
this package.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from .. import _format


def emit_json(data: Any) -> None:
    """``--json``'s answer, on stdout: ASCII only (``\\u`` escapes), so no byte of a
    stored value reaches the terminal raw and ``json.loads`` gives every value back
    exactly."""
    click.echo(json.dumps(data, indent=2, sort_keys=False, ensure_ascii=True))


def say(message: str) -> None:
    """A message for the person at the terminal, on stderr: one line, with newlines,
    escape sequences and other control or format characters escaped
    (``_format.printable``)."""
    click.echo(_format.printable(message), err=True)


class _Bars:
    """tqdm progress bars on stderr, one per phase an operation announces (``begin``):
    a total, bytes so far, rate and time left."""

    def __init__(self, label: str):
        self._label = label
        self._bar: Any = None

    def begin(self, total: int | None, label: str | None = None) -> None:
        import shutil

        from tqdm import tqdm

        self.finish()
        size = shutil.get_terminal_size((80, 24))
        self._bar = tqdm(
            total=total,
            desc=label or self._label,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            # A terminal that reports no size (a fresh pty) gets 80x24, not a hidden bar.
            ncols=size.columns or 80,
            nrows=size.lines or 24,
            leave=True,
        )

    def __call__(self, nbytes: int) -> None:
        if self._bar is None:
            self.begin(None)
        self._bar.update(nbytes)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextmanager
def progress(as_json: bool, label: str) -> Iterator[Any]:
    """A ``progress=`` callback for the API, or None with --json or without a terminal."""
    if as_json or not sys.stderr.isatty():
        yield None
        return
    bar = _Bars(label)
    try:
        yield bar
    finally:
        bar.finish()
