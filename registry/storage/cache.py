"""The read-through cache of an object store: byte ranges of packs, kept on local disk.

Reading a version from an object store fetches only the byte ranges its tensors use;
they are written here, so the next read of them needs no network and is mapped like
a local pack. Layout under the cache folder (``Settings.pack_cache_dir``)::

    <store>/STORE                 the store's URL (what ``registry cache info`` shows)
    <store>/3f/3fa1c9....pack     a sparse file as long as the pack: fetched ranges filled
    <store>/3f/3fa1c9....ranges   JSON: the pack file's inode and the filled [start, end)s
    <store>/.lock                 flock'd while a .ranges record is rewritten

``<store>`` is a digest of the endpoint, bucket and prefix, so two stores never share
an entry. The cache is never trusted: readers check every tensor (XXH3 or sha256)
before use and call :meth:`CacheEntry.forget` for a range that fails, which is then
fetched again. A ``.ranges`` file names the inode of its pack file, so an entry that
``prune`` removed while another process was filling it is never believed.

The cache is bounded: after each fill, entries are removed least recently used first
until it holds at most ``max_bytes`` (``REGISTRY_CACHE_MAX_SIZE``, bytes on disk, not
apparent sizes). Several processes may share the folder: ranges are merged under an
``flock``; writes of the same range write the same bytes (packs are immutable).

Nothing here imports torch, boto3 or the catalogue.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import StorageError

Range = tuple[int, int]  # [start, end)


def merge(ranges: Sequence[Range], gap: int = 0) -> list[Range]:
    """Sorted, non-overlapping ranges covering ``ranges``; neighbours at most ``gap``
    bytes apart become one."""
    out: list[list[int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def subtract(wanted: Sequence[Range], present: Sequence[Range]) -> list[Range]:
    """The parts of ``wanted`` that ``present`` (merged) does not cover."""
    missing: list[Range] = []
    for start, end in merge(wanted):
        cursor = start
        for a, b in present:
            if b <= cursor or a >= end:
                continue
            if a > cursor:
                missing.append((cursor, a))
            cursor = max(cursor, b)
            if cursor >= end:
                break
        if cursor < end:
            missing.append((cursor, end))
    return missing


@dataclass(frozen=True)
class CacheInfo:
    """What the cache holds: its folder, entries (packs), bytes on disk and its bound."""

    path: Path
    packs: int
    nbytes: int
    max_bytes: int
    stores: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "packs": self.packs,
            "bytes": self.nbytes,
            "max_bytes": self.max_bytes,
            "stores": list(self.stores),
        }


class PackCache:
    """The cache folder of one object store (see the module docstring)."""

    def __init__(self, root: Path, store_url: str, max_bytes: int):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.folder = self.root / hashlib.sha256(store_url.encode()).hexdigest()[:16]
        self.store_url = store_url
        #: Bytes the cache folder held at the last prune plus what this process fetched
        #: since; None before the first prune.
        self._estimate: int | None = None

    def entry(self, pack_id: str, size: int) -> CacheEntry:
        """The entry of ``pack_id`` (``size`` bytes), created empty if there is none.

        A new entry is made whole under a temporary name (a sparse file of the pack's
        length: only fetched ranges take disk space) and linked into place, so no
        process ever sees one of another length; an existing file is never resized.
        """
        path = self._path(pack_id)
        try:
            if not path.parent.is_dir():
                path.parent.mkdir(parents=True, exist_ok=True)
            if not (self.folder / "STORE").is_file():
                (self.folder / "STORE").write_text(self.store_url + "\n")
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                fd = self._create(path, size)
        except OSError as exc:
            raise StorageError(f"cannot use the read cache at {self.folder}: {exc}") from exc
        if os.fstat(fd).st_size != size:  # not this pack's file: never trust or resize it
            os.close(fd)
            raise StorageError(
                f"the read cache's copy of pack {pack_id} ({path}) is not the pack's size; "
                "run `registry cache clear`"
            )
        return CacheEntry(path, fd, size, self.folder / ".lock")

    @staticmethod
    def _create(path: Path, size: int) -> int:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, size)
            try:
                os.link(tmp, path)
            except FileExistsError:  # another process made it first: use theirs
                os.close(fd)
                fd = os.open(path, os.O_RDWR)
        except BaseException:
            os.close(fd)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        return fd

    def _path(self, pack_id: str) -> Path:
        return self.folder / pack_id[:2] / f"{pack_id}.pack"

    def known_size(self, pack_id: str) -> int | None:
        """The size of ``pack_id`` if the cache has an entry for it (no network needed)."""
        try:
            return self._path(pack_id).stat().st_size
        except OSError:
            return None

    def prune(self, max_bytes: int | None = None) -> tuple[int, int]:
        """Remove entries, least recently used first, until the whole cache folder holds
        at most ``max_bytes`` (default: the configured bound); returns (entries removed,
        bytes freed)."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        entries = sorted(_entries(self.root), key=lambda e: e[2])  # oldest use first
        total = sum(size for _, size, _ in entries)
        removed = freed = 0
        for pack, size, _used in entries:
            if total <= limit:
                break
            _remove_entry(pack)
            total -= size
            removed += 1
            freed += size
        self._estimate = total
        return removed, freed

    def fetched(self, nbytes: int) -> None:
        """Keep the bound after a fetch put ``nbytes`` in the cache: scan the folder (a
        ``prune``) only on the first fetch and when the bytes counted since the last
        scan could pass the bound; a scan per fetch made reading a bucket pack by pack
        (``verify``) quadratic in the number of packs."""
        if self._estimate is not None:
            self._estimate += nbytes
        if self._estimate is None or self._estimate > self.max_bytes:
            self.prune()

    def info(self) -> CacheInfo:
        """Entries, bytes on disk and stores of the whole cache folder."""
        entries = _entries(self.root)
        stores = tuple(
            sorted(
                (p / "STORE").read_text().strip()
                for p in (self.root.iterdir() if self.root.is_dir() else ())
                if (p / "STORE").is_file()
            )
        )
        return CacheInfo(
            self.root, len(entries), sum(s for _, s, _ in entries), self.max_bytes, stores
        )

    def clear(self) -> tuple[int, int]:
        """Remove every entry of every store; returns (entries removed, bytes freed)."""
        entries = _entries(self.root)
        if self.root.is_dir():
            shutil.rmtree(self.root, ignore_errors=True)
        return len(entries), sum(s for _, s, _ in entries)


def _entries(root: Path) -> list[tuple[Path, int, float]]:
    """(pack file, bytes on disk, last use) of every entry under ``root``; records and
    temporary files left without a pack (a prune during a fetch, a killed process)
    are removed on the way."""
    found: list[tuple[Path, int, float]] = []
    if not root.is_dir():
        return found
    for stray in [*root.glob("*/*/*.ranges"), *root.glob("*/*/*.tmp")]:
        pack = stray.parent / (stray.name.split(".")[0] + ".pack")
        try:
            if not pack.exists() and time.time() - stray.stat().st_mtime > 60:
                stray.unlink(missing_ok=True)
        except OSError:
            pass
    for pack in root.glob("*/*/*.pack"):
        try:
            st = pack.stat()
            ranges = pack.with_suffix(".ranges")
            used = ranges.stat().st_mtime if ranges.exists() else st.st_mtime
        except FileNotFoundError:  # pruned meanwhile by another process
            continue
        found.append((pack, st.st_blocks * 512, used))
    return found


def _remove_entry(pack: Path) -> None:
    # The pack first: a reader that still has it open keeps its bytes (and its .ranges
    # names the old inode, so nobody believes it for a new file of the same name).
    pack.unlink(missing_ok=True)
    pack.with_suffix(".ranges").unlink(missing_ok=True)


class CacheEntry:
    """One pack's cache file, open: which ranges it holds, filling them, mapping it."""

    def __init__(self, path: Path, fd: int, size: int, lock: Path):
        self.path, self._fd, self.size = path, fd, size
        self._inode = os.fstat(fd).st_ino
        self._ranges_path = path.with_suffix(".ranges")
        self._lock_path = lock  # one per store: never removed, so it always excludes

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def present(self) -> list[Range]:
        """The filled ranges, as recorded (empty if the record is of another file)."""
        try:
            record = json.loads(self._ranges_path.read_text())
        except (FileNotFoundError, ValueError):
            return []
        if not isinstance(record, dict) or record.get("inode") != self._inode:
            return []
        try:
            return merge([(int(a), int(b)) for a, b in record.get("ranges", ())])
        except (TypeError, ValueError):
            return []

    def missing(self, wanted: Sequence[Range]) -> list[Range]:
        return subtract(wanted, self.present())

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Put fetched bytes at ``offset`` (not yet recorded as present: see :meth:`add`)."""
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written

    def add(self, ranges: Sequence[Range]) -> None:
        """Record ``ranges`` as filled (after :meth:`write`), and mark the entry used.
        Advisory: if the record cannot be written (a `cache clear` meanwhile, a full
        disk), the ranges are fetched again next time."""
        try:
            with self._locked():
                self._save(merge([*self.present(), *ranges]))
        except OSError:
            pass

    def forget(self, ranges: Sequence[Range]) -> None:
        """Record ``ranges`` as not filled (their bytes failed a check)."""
        try:
            with self._locked():
                self._save(subtract(self.present(), merge(ranges)))
        except FileNotFoundError:
            pass  # the entry went (cleared): nothing is recorded as present

    def touch(self) -> None:
        """Mark the entry used now (the pruning order)."""
        try:
            os.utime(self._ranges_path)
        except OSError:
            pass

    def map(self) -> mmap.mmap:
        """The file mapped copy-on-write: views are the cached bytes, writes stay private."""
        if self.size == 0:
            return mmap.mmap(-1, 1)
        return mmap.mmap(self._fd, self.size, access=mmap.ACCESS_COPY)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _save(self, ranges: list[Range]) -> None:
        tmp = self._ranges_path.with_suffix(f".ranges.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"inode": self._inode, "ranges": ranges}))
        os.replace(tmp, self._ranges_path)
