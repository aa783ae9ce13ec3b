"""Packs in a local folder, written atomically and read through mmap.

Layout under the store root::

    packs/3f/3fa1c9....pack    immutable pack files, fanned out by id prefix
    tmp/                       packs being written (same filesystem, for rename)

A pack is written to ``tmp/``, fsync'd, renamed into ``packs/`` and the folder
fsync'd before the catalogue row that points at it is committed: a crash at any
point leaves at worst an unreferenced file, never a version with missing data.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .._faults import point
from .._files import unwritable_folder
from .._progress import begin
from ..config import HASH_THREADS
from ..errors import StorageError, StoreReadOnlyError
from . import _libc
from .base import PackMissing, PackWritten, StoredFile, checked_range, new_pack_id
from .hashing import sha256_hex
from .packs import layout, placeholder_names

#: Bytes per write(2) call.
_WRITE_CHUNK = 1 << 20
#: Ask the kernel to start writing back after this many new bytes.
_WRITEBACK_CHUNK = 32 << 20

_PACK_ID_RE = re.compile(r"[0-9a-f]{32}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """Content-addressed tensor bytes in pack files under ``root`` (a ``base.Store``)."""

    remote = False

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    @property
    def url(self) -> str:
        return str(self.root)

    def missing(self, pack_ids: Sequence[str]) -> set[str]:
        """Which of ``pack_ids`` have no pack file."""
        return {p for p in pack_ids if not self.pack_path(p).is_file()}

    def check_writable(self, deleting: bool = False) -> None:
        """Raise StoreReadOnlyError if the store's folder (or the first existing folder
        above it) may not be written by this user."""
        folder = unwritable_folder(self.root)
        if folder is not None:
            raise StoreReadOnlyError(
                f"the tensor store refused to write: {folder} is not writable by this user"
            )

    def open_ranges(
        self,
        wanted: Mapping[str, Sequence[tuple[int, int]]],
        progress: Callable[[int], None] | None = None,
        fresh: bool = False,
    ) -> dict[str, MappedPack]:
        """Map each pack ``wanted`` names (its bytes are all here: nothing to fetch, and
        nothing cached, so ``fresh`` changes nothing)."""
        return {pack_id: self.open(pack_id) for pack_id in wanted}

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def pack_path(self, pack_id: str) -> Path:
        if not _PACK_ID_RE.fullmatch(pack_id):
            raise StorageError(f"invalid pack id {pack_id!r} in the catalogue")
        return self.root / "packs" / pack_id[:2] / f"{pack_id}.pack"

    def _ensure_dir(self, path: Path) -> None:
        if path.is_dir():
            return
        path.mkdir(parents=True, exist_ok=True)
        _fsync_dir(path.parent)

    def write_pack(self, buffers: Sequence[memoryview]) -> PackWritten:
        """Write ``buffers`` (distinct contents) as one new pack and wait until it is durable."""
        written = self.start_pack(buffers)
        written.wait()
        return written

    def start_pack(
        self,
        buffers: Sequence[memoryview],
        progress: Callable[[int], None] | None = None,
        pack_id: str | None = None,
    ) -> PackWritten:
        """Write ``buffers`` (distinct contents) as one new pack, hashing as it goes.

        The sha256 of each buffer is computed on a thread pool while this thread
        writes the bytes (both release the GIL), and the kernel is asked to start
        writing back each chunk as soon as it is in the page cache, so the single
        fsync has little left to do. The header, which names each blob by its digest,
        has a length that does not depend on the names: it is written with
        placeholders first and overwritten once the digests are known.

        Returns when the bytes are written and the digests known; the fsync, the
        rename into place and the folder's fsync run on a thread, so the caller can
        prepare its catalogue rows meanwhile and ``wait()`` before committing them.
        """
        sizes = [b.nbytes for b in buffers]
        plan = layout(placeholder_names(len(buffers)), sizes)
        begin(progress, sum(sizes), "writing")
        pack_id = pack_id or new_pack_id()
        final = self.pack_path(pack_id)
        tmp = self.root / "tmp" / f"{pack_id}.pack.tmp"
        # One core writes, the others hash; whatever hashing is left when the writing
        # is done, the writer takes on too.
        with ThreadPoolExecutor(max_workers=max(1, HASH_THREADS - 1)) as pool:
            # Largest first, so one huge tensor does not run alone at the end.
            order = sorted(range(len(buffers)), key=lambda i: -sizes[i])
            futures = {i: pool.submit(sha256_hex, buffers[i]) for i in order}
            try:
                self._ensure_dir(tmp.parent)
                self._ensure_dir(final.parent)
                point("pack.create")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            except OSError as exc:
                raise StorageError(
                    f"cannot write to the tensor store at {self.root}: {exc}"
                ) from exc
            try:
                _write_all(fd, memoryview(bytes(len(plan.header))))
                position = len(plan.header)
                flushed = 0
                for buffer, offset in zip(buffers, plan.offsets):
                    if offset > position:
                        _write_all(fd, memoryview(bytes(offset - position)))
                    _write_all(fd, buffer)
                    position = offset + buffer.nbytes
                    if progress is not None:
                        progress(buffer.nbytes)
                    if position - flushed >= _WRITEBACK_CHUNK:
                        _start_writeback(fd, flushed, position - flushed)
                        flushed = position
                digests = _finish_hashing(buffers, futures)
                header = layout(digests, sizes).header
                if len(header) != len(plan.header):  # pragma: no cover - by design
                    raise AssertionError("pack header length changed")
                point("pack.header")
                os.pwrite(fd, header, 0)
            except BaseException as exc:
                os.close(fd)
                tmp.unlink(missing_ok=True)
                if isinstance(exc, OSError):
                    raise StorageError(
                        f"cannot write to the tensor store at {self.root}: {exc}"
                    ) from exc
                raise
        sealer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry-seal")
        sealed = sealer.submit(self._seal, fd, tmp, final)
        sealer.shutdown(wait=False)
        return PackWritten(
            pack_id=pack_id,
            nbytes=plan.nbytes,
            digests=digests,
            offsets=plan.offsets,
            sealed=sealed,
        )

    def _seal(self, fd: int, tmp: Path, final: Path) -> None:
        try:
            try:
                point("pack.fsync")
                os.fsync(fd)
            finally:
                os.close(fd)
            point("pack.rename")
            try:
                os.replace(tmp, final)
            except FileNotFoundError:
                raise PackMissing(
                    f"pack {final.stem} was removed from the tensor store at {self.root} "
                    "before it was whole (by a gc?)"
                ) from None
            point("pack.renamed")
            _fsync_dir(final.parent)
        except PackMissing:
            raise
        except OSError as exc:  # no version names the pack: none of it may stay
            tmp.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            raise StorageError(f"cannot write to the tensor store at {self.root}: {exc}") from exc

    def abandon(self, written: PackWritten) -> None:
        """Remove a pack the catalogue will not reference, once its writing has settled."""
        try:
            written.wait()
        except StorageError:
            return  # it cleaned up after itself
        self.delete(written.pack_id)

    def list(self) -> list[StoredFile]:
        """Pack files and unfinished temporary files on disk, packs first.

        A file that goes while the folder is read (a push renaming its temporary file,
        another gc deleting a pack) is left out, as if listed a moment later."""
        found: list[StoredFile | None] = []
        packs = self.root / "packs"
        if packs.is_dir():
            for path in sorted(packs.glob("*/*.pack")):
                if _PACK_ID_RE.fullmatch(path.stem):
                    found.append(self._stored(path.stem, path))
        tmp = self.root / "tmp"
        if tmp.is_dir():
            for path in sorted(tmp.glob("*.tmp")):
                stem = path.name.split(".", 1)[0]
                found.append(
                    self._stored(stem if _PACK_ID_RE.fullmatch(stem) else None, path, False)
                )
        return [f for f in found if f is not None]

    def _stored(self, pack_id: str | None, path: Path, finished: bool = True) -> StoredFile | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        key = path.relative_to(self.root).as_posix()
        return StoredFile(pack_id, key, st.st_size, st.st_mtime, finished)

    def delete_file(self, stored: StoredFile) -> None:
        """Remove one file ``list()`` gave (a pack or an unfinished temporary file)."""
        parts = Path(stored.key).parts
        if not parts or parts[0] not in ("packs", "tmp") or ".." in parts:
            raise StorageError(f"{stored.key} is not a file of the tensor store at {self.root}")
        point("pack.delete")
        (self.root / stored.key).unlink(missing_ok=True)

    def delete(self, pack_id: str) -> None:
        """Remove a pack that no catalogue row references (e.g. after a failed commit)."""
        point("pack.delete")
        self.pack_path(pack_id).unlink(missing_ok=True)

    def open(self, pack_id: str) -> MappedPack:
        """A fresh copy-on-write map of a pack.

        Tensors built on it are writable, but writes stay private to this map: they
        never reach the pack file, nor any other map of it. Callers use one map per
        call so a model that was trained after loading cannot leak into the next load.
        """
        path = self.pack_path(pack_id)
        try:
            # Non-blocking, and only a regular file: a FIFO put in a pack's place must
            # not hang the reader, nor a device feed it.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise StorageError(f"cannot read pack {path}: not a regular file")
                if st.st_size == 0:  # mmap refuses an empty file; it holds no tensor
                    return MappedPack(pack_id, bytearray())
                return MappedPack(pack_id, mmap.mmap(fd, 0, access=mmap.ACCESS_COPY))
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise PackMissing(
                f"pack {pack_id} is missing from the tensor store at {self.root}"
            ) from None
        except StorageError:
            raise
        except (OSError, ValueError) as exc:
            raise StorageError(f"cannot read pack {path}: {exc}") from exc


class MappedPack:
    """A pack mapped copy-on-write: views of it are zero-copy and private to this map."""

    def __init__(self, pack_id: str, mapped: mmap.mmap | bytearray):
        self.pack_id, self._mapped = pack_id, mapped

    def __len__(self) -> int:
        return len(self._mapped)

    def view(self, offset: int, nbytes: int) -> memoryview:
        """A zero-copy view of ``nbytes`` at ``offset``, bounds-checked."""
        checked_range(self.pack_id, len(self._mapped), offset, nbytes)
        return memoryview(self._mapped)[offset : offset + nbytes]

    def refetch(self, ranges: Sequence[tuple[int, int]]) -> bool:
        """False: the pack file is the only copy, there is nowhere else to read from."""
        return False


def _write_all(fd: int, data: memoryview) -> None:
    """Write all of ``data``, at most _WRITE_CHUNK bytes per call.

    One write of a whole 9 MB tensor was now and then 10x slower here (kernel 6.18,
    ext4) than the same bytes in 1 MB writes, which never were (measured in the push
    benchmark); torch.save's own writes are small too.
    """
    data = data.cast("B") if data.format != "B" or data.ndim != 1 else data
    while data:
        point("pack.write")
        try:
            written = os.write(fd, data[:_WRITE_CHUNK])
        except InterruptedError:
            continue
        if not written:
            raise OSError(errno.EIO, "short write")
        data = data[written:]


def _finish_hashing(buffers: Sequence[memoryview], futures: dict[int, Future[str]]) -> list[str]:
    """Hash inline what the pool has not started, then collect every digest in order."""
    for i in reversed(list(futures)):  # smallest last-queued first
        if futures[i].cancel():
            done: Future[str] = Future()
            done.set_result(sha256_hex(buffers[i]))
            futures[i] = done
    return [futures[i].result() for i in range(len(buffers))]


_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Start (not wait for) writeback of a written range; fsync still makes it durable.
    Linux's sync_file_range(2); a no-op where libc has none."""
    fn = _libc.function(
        "sync_file_range",
        (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint),
        ctypes.c_int,
    )
    if fn is not None:
        fn(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)
