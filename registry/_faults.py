"""Named points where a test may stop a writing operation: the crash harness's hook.

Code that changes durable state (a catalogue statement, a commit, a pack written,
renamed, uploaded or deleted) calls :func:`point` with a name just before the
change. Outside tests nothing is installed and a call costs one global lookup. The
crash tests (``tests/crashing.py``) run an operation in a child process, install a
hook that counts the points passed and SIGKILLs the process at the Nth one, and then
check what the registry looks like; other tests install a hook that raises
``OSError(ENOSPC)`` at a write.

The names are stable and dotted by layer: ``sql`` (before any statement),
``sql.commit`` / ``sql.committed`` (around a COMMIT), ``pack.*`` (a local pack's
temporary file, chunks, header, fsync, rename, deletion), ``object.*`` (a bucket's
parts, completion, HEAD, deletion, abort). Must import nothing of ours.
"""

from __future__ import annotations

from collections.abc import Callable

#: The installed hook, called with each point's name; None outside tests.
hook: Callable[[str], None] | None = None


def point(name: str) -> None:
    """Pass the point ``name``: call the installed hook, if any (it may kill the process
    or raise, which is what it is for)."""
    if hook is not None:
        hook(name)
