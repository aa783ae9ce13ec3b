"""What the structural checks of a user's file find wrong with it, before it is worded.

Owns the two internal verdicts the other modules of the package raise, :class:`_Damaged`
(not what torch.save or safetensors writes) and :class:`_Hostile` (built to harm a
reader), and how a library's error message is quoted (:func:`_first_line`: one line,
bounded, without torch's advice to load unsafely). Neither exception ever leaves the
package: ``pth`` and ``safetensors`` turn them into a
:class:`~registry.errors.CheckpointError` naming the file.

Never reads a file and never imports another module of the package.
"""

from __future__ import annotations

import torch

#: The longest message of torch's that is passed on.
_MAX_QUOTED = 240


class _Damaged(Exception):
    """The file is not what torch.save or safetensors writes; the message says where."""


class _Hostile(Exception):
    """The file is built to harm a reader (a zip bomb, names outside the archive)."""


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message, without torch's advice to load unsafely."""
    text = str(exc)
    unsafe_advice = getattr(torch.serialization, "UNSAFE_MESSAGE", None)
    if unsafe_advice:
        text = text.replace(unsafe_advice, "")
    text = text.strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line if len(line) <= _MAX_QUOTED else line[: _MAX_QUOTED - 1] + "…"
