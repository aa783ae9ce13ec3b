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
import threading
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
        self._maps: dict[str, mmap.mmap] = {}
        self._lock = threading.Lock()

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
                    for blob in plan.order:
                        _write_all(f, blob.data)
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
        with self._lock:
            self._maps.pop(pack_id, None)
        self.pack_path(pack_id).unlink(missing_ok=True)

    def _map(self, pack_id: str) -> mmap.mmap:
        with self._lock:
            mapped = self._maps.get(pack_id)
            if mapped is not None:
                return mapped
            path = self.pack_path(pack_id)
            try:
                with open(path, "rb") as f:
                    # Copy-on-write: tensors built on the map are writable, but
                    # writes never reach the pack file.
                    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            except FileNotFoundError:
                raise StorageError(f"pack {pack_id} is missing from the tensor store at {self.root}") from None
            except OSError as exc:
                raise StorageError(f"cannot read pack {path}: {exc}") from exc
            self._maps[pack_id] = mapped
            return mapped

    def read(self, pack_id: str, offset: int, nbytes: int) -> memoryview:
        """A zero-copy view of ``nbytes`` at ``offset`` in a pack."""
        mapped = self._map(pack_id)
        if offset < 0 or offset + nbytes > len(mapped):
            raise StorageError(
                f"pack {pack_id} is truncated: needs bytes {offset}..{offset + nbytes}, "
                f"has {len(mapped)}"
            )
        return memoryview(mapped)[offset : offset + nbytes]

    def close(self) -> None:
        """Forget cached maps; views handed out keep their map alive until released."""
        with self._lock:
            self._maps.clear()


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
