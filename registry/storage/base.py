"""The Store interface: what the pipelines ask of wherever packs live.

A *pack* is one immutable file of tensor bytes (``packs.py`` fixes its layout),
written once by one push or gc rewrite and never changed. The push, read and
maintenance pipelines use only the operations below, so a store backed by an object
store can sit behind them without either pipeline changing:

- ``start_pack(buffers, progress)`` writes a new pack, hashing each buffer on the
  way, and returns a :class:`PackWritten` whose ``wait()`` returns once the pack is
  durable under its final name (the caller commits catalogue rows only after that);
- ``abandon(written)`` removes a pack the catalogue will not name;
- ``open(pack_id)`` gives a :class:`PackReader` whose ``view(offset, nbytes)`` is a
  bounds-checked, read-only-to-the-store view of a byte range;
- ``open_ranges({pack_id: [(offset, nbytes), ...]}, progress)`` opens several packs
  for reading those ranges: a remote store fetches them all (in parallel) first, so
  the views that follow need no network (``fresh=True``: read from the store itself,
  not from a cache, as ``verify`` must); the caller checks every tensor and asks
  ``reader.refetch(ranges)`` for the ones that fail (True if that may have changed
  them: a cached copy was damaged; False for a local pack, whose bytes are all there
  is);
- ``check_writable(deleting=False)`` raises StoreReadOnlyError if the store would
  refuse a write (with ``deleting``, a delete); it changes nothing;
- ``missing(pack_ids)`` says which of those packs the store does not have (asked of
  the store itself, not of a cache);
- ``remote`` is True where reading stored bytes costs a network transfer (the push then
  confirms a checksum match by its sha256 instead of reading the stored copy back);
- ``list()`` names every pack and unfinished upload/temporary file in the store;
- ``delete(pack_id)`` / ``delete_file(stored)`` remove one.

Nothing here imports torch, the catalogue or SQLAlchemy.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import StorageError


@dataclass(frozen=True)
class PackWritten:
    """A written pack: its id, size in bytes, and each blob's sha256 and byte offset.

    Its bytes are all written when this exists; ``wait()`` returns once they are also
    durable under the pack's final name.
    """

    pack_id: str
    nbytes: int
    digests: list[str]
    offsets: list[int]
    sealed: Future[None] = field(repr=False, compare=False)

    def wait(self) -> None:
        """Block until the pack is durable; raises StorageError if that failed."""
        self.sealed.result()


@dataclass(frozen=True)
class StoredFile:
    """One file (or object) in the store: a pack, or an unfinished one (a temporary
    file, a multipart upload: ``finished`` False).

    ``pack_id`` is the pack it is (or is becoming), None for a name that is no pack's;
    ``key`` is what ``Store.delete_file`` takes; ``mtime`` is seconds since the epoch
    (an upload's: when it started).
    """

    pack_id: str | None
    key: str
    size: int
    mtime: float
    finished: bool = True


class PackReader(Protocol):
    """An opened pack: byte ranges of it as memoryviews."""

    pack_id: str

    def __len__(self) -> int: ...

    def view(self, offset: int, nbytes: int) -> memoryview:
        """``nbytes`` bytes at ``offset``; StorageError if the pack is shorter."""
        ...

    def refetch(self, ranges: Sequence[tuple[int, int]]) -> bool:
        """Read (offset, nbytes) ranges again from their origin, not a cached copy (bytes
        that failed a check; what ``verify`` checks); True if their views may now differ."""
        ...


class Store(Protocol):
    """Where packs live (see the module docstring for the contract of each operation)."""

    remote: bool

    @property
    def url(self) -> str: ...

    def start_pack(
        self,
        buffers: Sequence[memoryview],
        progress: Callable[[int], None] | None = None,
        pack_id: str | None = None,
    ) -> PackWritten: ...

    def abandon(self, written: PackWritten) -> None: ...

    def open(self, pack_id: str) -> PackReader: ...

    def open_ranges(
        self,
        wanted: Mapping[str, Sequence[tuple[int, int]]],
        progress: Callable[[int], None] | None = None,
        fresh: bool = False,
    ) -> Mapping[str, PackReader]: ...

    def check_writable(self, deleting: bool = False) -> None: ...

    def missing(self, pack_ids: Sequence[str]) -> set[str]: ...

    def list(self) -> list[StoredFile]: ...

    def delete(self, pack_id: str) -> None: ...

    def delete_file(self, stored: StoredFile) -> None: ...


class PackMissing(StorageError):
    """The store has no pack of that id (deleted, or never written): callers that may
    race ``gc`` look the tensors up again; anything else about the store is a plain
    StorageError."""


def new_pack_id() -> str:
    """A new pack's id: 32 random hex digits (a writer records it before writing)."""
    return uuid.uuid4().hex


def checked_range(pack_id: str, size: int, offset: int, nbytes: int) -> None:
    """Raise StorageError unless ``offset .. offset + nbytes`` lies in a pack of ``size``."""
    if offset < 0 or nbytes < 0 or offset + nbytes > size:
        raise StorageError(
            f"pack {pack_id} is truncated: needs bytes {offset}..{offset + nbytes}, has {size}"
        )
