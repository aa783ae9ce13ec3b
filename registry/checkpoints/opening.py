"""Which of a user's files are opened at all, and how: the first step of reading one.

Owns the refusal of everything but a regular file (a folder, a FIFO, which would block
the reader for ever, a socket, a device), :func:`check_file`, the non-blocking open
that looks again at what it opened (:func:`_open`: the path may have been replaced
since it was checked), the mapping of an operating-system error while reading to a
:class:`~registry.errors.CheckpointError` naming the file (:func:`_reading`), and
telling the format by the file's first bytes, not its name (:func:`_sniff`).

Never reads a file's contents (``_sniff`` is handed its first bytes), never parses a
format, never imports torch or another module of the package.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..errors import CheckpointError, MissingFileError, NotACheckpointError, RegistryError

_NOT_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _not_a_file(path: Path, mode: int) -> CheckpointError | None:
    if stat.S_ISDIR(mode):
        return CheckpointError(f"{path} is a folder, not a checkpoint file")
    for test, kind in _NOT_FILES:
        if test(mode):
            return CheckpointError(f"{path} is {kind}, not a checkpoint file")
    if not stat.S_ISREG(mode):
        return CheckpointError(f"{path} is not a regular file, so not a checkpoint file")
    return None


def check_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, if it names a regular file (symbolic links are followed).

    Raises MissingFileError if nothing is there; CheckpointError for a folder, a FIFO,
    a socket or a device, or a path that cannot be looked at (no permission to a
    folder on the way, a loop of links, a NUL byte in the name).
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise MissingFileError(path) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {_strerror(exc)}") from None
    except ValueError as exc:  # "embedded null byte"
        raise CheckpointError(f"cannot read {str(path)!r}: {exc}") from None
    refusal = _not_a_file(path, mode)
    if refusal is not None:
        raise refusal
    return path


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """An OSError while reading ``path`` ourselves becomes a CheckpointError naming it."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, RegistryError):
            raise
        raise CheckpointError(f"cannot read {path}: {_strerror(exc)}") from None


def _open(path: Path) -> BinaryIO:
    """``path`` opened for reading; never blocks (O_NONBLOCK), refuses all but a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    with _reading(path):
        fd = os.open(path, flags)
        try:
            refusal = _not_a_file(path, os.fstat(fd).st_mode)  # replaced since check_file?
        except BaseException:
            os.close(fd)
            raise
        if refusal is not None:
            os.close(fd)
            raise refusal
        return os.fdopen(fd, "rb")


def _sniff(path: Path, head: bytes) -> str:
    """The format the first bytes say: "zip" (torch.save), "legacy" (a raw pickle, the
    pre-1.6 torch.save), or "safetensors"."""
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":  # legacy (non-zip) torch.save: a raw pickle stream
        return "legacy"
    if len(head) >= 9:
        (length,) = struct.unpack("<Q", head[:8])
        if 2 <= length <= 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    why = ""
    if not head:
        why = ": it is empty (0 bytes)"
    elif len(head) < 16:
        why = f": it has only {len(head)} bytes"
    raise NotACheckpointError(
        f"{path} is not a PyTorch checkpoint (.pth) or a safetensors file{why}"
    )
