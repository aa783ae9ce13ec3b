"""Where and how commands print: JSON on stdout, human messages on stderr, progress.

Owns :func:`emit_json`, :func:`say` and :func:`progress` (a byte-counting bar on a
terminal's stderr). The units and tables themselves are ``registry._format``, which the
records share.

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
    """``--json``'s answer, on stdout."""
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def say(message: str) -> None:
    """A message for the person at the terminal, on stderr."""
    click.echo(message, err=True)


class _Bar:
    """A byte-counting progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, label: str):
        self._label, self._done, self._last = label, 0, 0.0

    def __call__(self, nbytes: int) -> None:
        import time

        self._done += nbytes
        now = time.monotonic()
        if now - self._last >= 0.1:
            self._last = now
            click.echo(f"\r{self._label} {_format.size(self._done)}", nl=False, err=True)

    def finish(self) -> None:
        if self._last:
            click.echo(f"\r{self._label} {_format.size(self._done)}", err=True)


@contextmanager
def progress(as_json: bool, label: str) -> Iterator[Any]:
    """A ``progress=`` callback for the API, or None with --json or without a terminal."""
    if as_json or not sys.stderr.isatty():
        yield None
        return
    bar = _Bar(label)
    try:
        yield bar
    finally:
        bar.finish()
