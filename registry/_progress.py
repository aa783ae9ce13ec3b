"""How the layers tell a progress callback what is coming: a total and a label.

API callers pass ``progress=`` as a plain callable that takes byte counts. A callable
that also has ``begin(total, label)`` (the CLI's progress bars) is told, before each
phase of an operation (``writing``, ``uploading``, ``downloading``, ...), how many
bytes that phase will report. Imports nothing.
"""

from __future__ import annotations

from collections.abc import Callable


def begin(progress: Callable[[int], None] | None, total: int, label: str) -> None:
    """Announce a phase of ``total`` bytes to ``progress``, if it listens for that."""
    start = getattr(progress, "begin", None)
    if start is not None:
        start(total, label)
