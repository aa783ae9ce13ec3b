"""Writing a file so that readers see the old one or the whole new one, never a part;
and whether a place may be written at all (a read-only mount, a folder of another user).
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from .errors import OutputExistsError, StorageError

#: File suffixes whose format is known: what `pull` writes for each.
SUFFIX_FORMATS = {".safetensors": "safetensors", ".pth": "pth", ".pt": "pth"}


def unwritable_folder(path: Path) -> Path | None:
    """The nearest existing folder at or above ``path`` if this user may not create
    files in it, else None (what a write there would need, asked without writing)."""
    folder = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    return None if os.access(folder, os.W_OK | os.X_OK) else folder


def sqlite_unwritable(path: Path) -> str | None:
    """Why the SQLite database file at ``path`` cannot be written by this process, or
    None if it can: the file and its WAL files (``-wal``, ``-shm``) must be writable,
    and so must its folder, where SQLite creates them; a file that does not exist yet
    needs its nearest existing folder writable. Asked without writing anything."""
    if path.exists():
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if _refuses_writes(file):
                return f"{file} is not writable"
    folder = unwritable_folder(path.parent)
    return f"the folder {folder} is not writable" if folder is not None else None


def _refuses_writes(file: Path, rounds: int = 3) -> bool:
    """Whether ``file`` exists and this process may not write it. The last connection
    to close removes ``-wal`` and ``-shm`` and the next one makes them again, so one
    failed access may mean only that the file was gone at that moment (found by the
    soak test): it refuses only if the access failed in each of ``rounds`` rounds,
    each time just after the file was seen to exist."""
    for _ in range(rounds):
        if not file.exists() or os.access(file, os.W_OK):
            return False
    return True


def sqlite_read_only_uri(path: Path) -> str | None:
    """A ``file:`` URI (for ``sqlite3.connect(uri, uri=True)``) that reads the SQLite
    database at ``path`` where a plain open cannot, else None.

    A database in WAL mode can be opened only by a process that may create its
    ``-shm`` file (SQLite's wal.html, "Read-Only Databases"): on read-only media, a
    read-only mount, or a folder of another user, a plain open fails with "unable to
    open database file" once the last writer has closed it (and removed ``-shm``). The
    URI opens it ``mode=ro&immutable=1``: no locks and no ``-shm``, every write refused
    ("attempt to write a readonly database"). That is right only while nobody writes
    the file, so it is given only when the folder may not be written, ``-shm`` does
    not exist (no connection has the database open anywhere) and no ``-wal`` file
    holds changes that reading the main file alone would miss.
    """
    shm = path.with_name(path.name + "-shm")
    wal = path.with_name(path.name + "-wal")
    try:
        if not path.is_file() or shm.exists() or (wal.exists() and wal.stat().st_size > 0):
            return None
    except OSError:
        return None
    if unwritable_folder(path.parent) is None:
        return None
    return f"file:{quote(str(path.absolute()))}?mode=ro&immutable=1"


def suffix_format(path: str | os.PathLike[str]) -> str | None:
    """The weights format a file name asks for by its suffix, or None if it says none."""
    return SUFFIX_FORMATS.get(Path(path).suffix.lower())


def is_folder_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a folder: an existing one, or one spelled with a trailing slash."""
    text = os.fspath(path)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def pull_target(
    path: str | os.PathLike[str] | None, format: str | None, stem: str
) -> tuple[Path, str]:
    """Where a pull writes, and in which format: ``path``, or ``STEM.FORMAT`` in the
    current folder (no ``path``) or in the folder ``path`` names; the format is
    ``format``, else the suffix's, else ``pth``. Raises InvalidArgumentError when
    ``format`` contradicts the suffix."""
    if path is None or is_folder_path(path):
        format = format or "pth"
        folder = Path.cwd() if path is None else Path(path)
        return folder / f"{stem}.{format}", format
    wanted = suffix_format(path)
    if format is not None and wanted is not None and wanted != format:
        from .errors import InvalidArgumentError

        base = (
            f"contradicts the file name {os.fspath(path)!r} (a {wanted} file): change one of them"
        )
        raise InvalidArgumentError(f"format={format!r} {base}", cli=f"--format {format} {base}")
    return Path(path), format or wanted or "pth"


def output_exists(target: Path) -> OutputExistsError:
    """The error for an output file that is there already, with the advice for Python
    users (``overwrite=True``) and for the command line (``--force``)."""
    base = f"{target} exists; nothing was written"
    return OutputExistsError(
        f"{base} (pass overwrite=True to replace it)", cli=f"{base} (use --force to replace it)"
    )


def refuse_existing(target: str | os.PathLike[str]) -> None:
    """Raise :func:`output_exists` if anything (a link included) is at ``target``."""
    if os.path.lexists(target):
        raise output_exists(Path(target))


@contextmanager
def replacing(target: Path, *, durable: bool = False, overwrite: bool = True) -> Iterator[Path]:
    """A new, empty temporary file beside ``target`` that becomes ``target`` if the block
    succeeds.

    The file gets the mode any new file of the user gets (0666 less the umask), even
    when the block's writer (safetensors' ``save_file``) recreates it with its own.
    It is fsync'd first if ``durable``. With ``overwrite=False`` an existing
    ``target`` is never replaced, not even one created while the block ran (the file
    is linked into place, which fails if the name is taken): that raises
    :class:`OutputExistsError`. On any error the temporary file is removed, and OS
    errors become :class:`StorageError` naming ``target``.
    """
    folder = target.parent if str(target.parent) else Path(".")
    if not overwrite:
        refuse_existing(target)  # say so before any work is done
    tmp = folder / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        mode = os.stat(tmp).st_mode & 0o777  # what the umask made of 0666
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        yield tmp
        if os.stat(tmp).st_mode & 0o777 != mode:
            os.chmod(tmp, mode)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if overwrite:
            os.replace(tmp, target)
        else:
            _link_into_place(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OutputExistsError):
            raise
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _link_into_place(tmp: Path, target: Path) -> None:
    """Give ``tmp`` the name ``target`` unless that name is taken, atomically where the
    file system has hard links."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise output_exists(target) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        refuse_existing(target)  # no hard links here: check, then rename
        os.replace(tmp, target)
        return
    tmp.unlink()
