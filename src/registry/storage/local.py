"""Packs in a local folder, written atomically and read through mmap.

Layout under the store root::

    packs/3f/3fa1c9....pack    immutable pack files, fanned out by id prefix
    tmp/                       packs being written (same filesystem, for rename)

A pack is written to ``tmp/``, fsync'd, renamed into ``packs/`` and the folder
fsync'd before the catalogue row that points at it is committed: a crash at any
point leaves at worst an unreferenced file, never a version with missing data.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import StorageError
from .packs import BlobSpec, layout

_PACK_ID_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class PackWritten:
    """A pack that is durably on disk: its id, size and each blob's offset."""

    pack_id: str
    nbytes: int
    offsets: dict[str, int]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """Content-addressed tensor bytes in pack files under ``root``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

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

    def write_pack(self, blobs: list[BlobSpec]) -> PackWritten:
        """Write ``blobs`` durably as one new pack; one fsync for the whole push."""
        plan = layout(blobs)
        pack_id = uuid.uuid4().hex
        final = self.pack_path(pack_id)
        tmp_dir = self.root / "tmp"
        try:
            self._ensure_dir(tmp_dir)
            self._ensure_dir(final.parent)
            tmp = tmp_dir / f"{pack_id}.pack.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            try:
                with open(fd, "wb", buffering=0, closefd=True) as f:
                    _write_all(f, memoryview(plan.header))
                    position = len(plan.header)
                    for blob in plan.order:
                        gap = plan.offsets[blob.digest] - position
                        if gap:
                            _write_all(f, memoryview(bytes(gap)))
                        _write_all(f, blob.data)
                        position += gap + blob.nbytes
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            _fsync_dir(final.parent)
        except OSError as exc:
            raise StorageError(f"cannot write to the tensor store at {self.root}: {exc}") from exc
        return PackWritten(pack_id=pack_id, nbytes=plan.nbytes, offsets=plan.offsets)

    def discard(self, pack_id: str) -> None:
        """Remove a pack that no catalogue row references (e.g. after a failed commit)."""
        self.pack_path(pack_id).unlink(missing_ok=True)

    def map(self, pack_id: str) -> mmap.mmap:
        """A fresh copy-on-write map of a pack.

        Tensors built on it are writable, but writes stay private to this map: they
        never reach the pack file, nor any other map of it. Callers use one map per
        call so a model that was trained after loading cannot leak into the next load.
        """
        path = self.pack_path(pack_id)
        try:
            with open(path, "rb") as f:
                return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except FileNotFoundError:
            raise StorageError(
                f"pack {pack_id} is missing from the tensor store at {self.root}"
            ) from None
        except (OSError, ValueError) as exc:
            raise StorageError(f"cannot read pack {path}: {exc}") from exc


def view(mapped: mmap.mmap, offset: int, nbytes: int, pack_id: str) -> memoryview:
    """A zero-copy view of ``nbytes`` at ``offset`` of a mapped pack, bounds-checked."""
    if offset < 0 or nbytes < 0 or offset + nbytes > len(mapped):
        raise StorageError(
            f"pack {pack_id} is truncated: needs bytes {offset}..{offset + nbytes}, has {len(mapped)}"
        )
    return memoryview(mapped)[offset : offset + nbytes]


def _write_all(f, data: memoryview) -> None:  # type: ignore[no-untyped-def]
    data = data.cast("B") if data.format != "B" or data.ndim != 1 else data
    while data:
        try:
            written = f.write(data)
        except InterruptedError:
            continue
        if not written:
            raise OSError(errno.EIO, "short write")
        data = data[written:]
