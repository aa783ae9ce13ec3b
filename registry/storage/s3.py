"""Packs as objects in an S3-compatible store (AWS S3, MinIO, SeaweedFS, R2), via boto3.

Layout under ``s3://bucket/prefix``::

    packs/3f/3fa1c9....pack    immutable pack objects, the same format as local packs

Why boto3: it reads the endpoint (``AWS_ENDPOINT_URL``), credentials, region and
profiles exactly as every other AWS tool does, and it measured fast enough here (the
network, not the client, bounds a push; see the README's table). The calls used are
the plain ones every S3-compatible store implements: PutObject, the multipart upload
calls, HeadObject, ranged GetObject, ListObjectsV2, ListMultipartUploads, DeleteObject.

- **Writing** (``start_pack``): the tensors are hashed (sha256) on threads while the
  pack is uploaded; packs above one part go up as a multipart upload, parts in
  parallel, the first part (which holds the header naming each blob by its digest)
  last. The upload completes, and its size is confirmed by HeadObject, before
  ``PackWritten.wait()`` returns, so the catalogue never names a missing object. Any
  failure aborts the multipart upload (no hidden parts left to pay for); an upload a
  crashed process left behind is listed by ``list()`` and aborted by ``gc`` after its
  grace period (a day for unfinished uploads: a slow upload may be running).
- **Reading** (``open_ranges``): only the byte ranges asked for are fetched (ranged
  GETs in parallel), into the read-through cache (``cache.py``); a reader maps the
  cache file copy-on-write, exactly as a local pack is mapped. Callers check every
  tensor before use and ``refetch`` what fails.
- **Refusals**: a write the credentials may not make raises ``StoreReadOnlyError``
  before anything was changed; other failures are ``StorageError`` naming the store.

Nothing here imports torch or the catalogue; boto3 is imported on first use.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from email.utils import parsedate_to_datetime
from functools import cached_property
from typing import Any

from .._faults import point
from .._progress import begin
from ..config import HASH_THREADS, ObjectStoreLocation
from ..errors import ConfigurationError, StorageError, StoreReadOnlyError
from .base import PackMissing, PackWritten, StoredFile, checked_range, new_pack_id
from .cache import PackCache, Range, merge, subtract
from .hashing import sha256_hex
from .packs import layout, placeholder_names

#: Bytes per uploaded part and per ranged GET; S3 needs parts of at least 5 MiB.
PART_BYTES = 16 << 20
#: Packs up to this size are one PutObject.
SINGLE_PUT_BYTES = 16 << 20
#: Parallel requests per store (uploads of parts, ranged GETs).
CONCURRENCY = 8
#: Bytes of a GET's body written to the cache at a time.
_READ_CHUNK = 1 << 20
#: Wanted ranges closer than this are fetched as one (alignment padding, tiny gaps).
_FETCH_GAP = 4096
#: A key under the prefix that is never written: deleting it tells whether we may write.
_WRITE_PROBE = ".registry-write-check"

_PACK_KEY_RE = re.compile(r"packs/[0-9a-f]{2}/([0-9a-f]{32})\.pack")
_PACK_ID_RE = re.compile(r"[0-9a-f]{32}")
_REFUSED = {"AccessDenied", "AllAccessDisabled", "Forbidden", "403"}
_REJECTED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccountProblem", "ExpiredToken"}
_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}


class S3Store:
    """Content-addressed tensor bytes as pack objects under ``s3://bucket/prefix``
    (a ``base.Store``), read through a local :class:`cache.PackCache`."""

    remote = True

    def __init__(self, location: ObjectStoreLocation, cache: PackCache):
        self.location = location
        self.cache = cache
        self._pool_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"S3Store({self.location.url!r})"

    @property
    def url(self) -> str:
        return self.location.url

    # -- plumbing ------------------------------------------------------------------

    @cached_property
    def client(self) -> Any:
        """A boto3 S3 client: endpoint, credentials, region from the usual AWS settings."""
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ConfigurationError(
                f"REGISTRY_STORAGE_URL={self.url} needs boto3: pip install 'registry[s3]'"
            ) from None

        try:
            return boto3.session.Session().client(
                "s3",
                config=Config(
                    max_pool_connections=CONCURRENCY * 2,
                    retries={"mode": "standard", "max_attempts": 5},
                    connect_timeout=10,
                    read_timeout=120,
                ),
            )
        except Exception as exc:  # a bad profile or region setting
            raise StorageError(f"cannot use the object store {self.url}: {exc}") from None

    @property
    def pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="registry-s3")
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def key(self, pack_id: str) -> str:
        if not _PACK_ID_RE.fullmatch(pack_id):
            raise StorageError(f"invalid pack id {pack_id!r} in the catalogue")
        return f"{self.location.prefix}packs/{pack_id[:2]}/{pack_id}.pack"

    def _call(self, what: str, operation: str, /, **kwargs: Any) -> Any:
        """Run one client call; its failures become StorageError (StoreReadOnlyError for a
        refused write) naming the store and ``what`` was being done."""
        from botocore.exceptions import BotoCoreError, ClientError

        if operation in _WRITES:
            point(f"object.{operation}")
        try:
            return getattr(self.client, operation)(Bucket=self.location.bucket, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            detail = error.get("Message") or code
            if code in _REFUSED and operation in _WRITES:
                raise StoreReadOnlyError(
                    f"the tensor store refused to write ({what} in {self.url}): {code}: "
                    f"{detail}; these credentials may only read"
                ) from None
            if code in _MISSING:
                raise _Missing(f"{what}: no such object in {self.url}") from None
            if code in _REJECTED:
                raise StorageError(
                    f"the tensor store {self.url} rejected these credentials ({what}): "
                    f"{code}: {detail}; check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or the profile"
                ) from None
            if code == "NoSuchBucket":
                raise StorageError(
                    f"the bucket of {self.url} does not exist: create it, or fix "
                    "REGISTRY_STORAGE_URL"
                ) from None
            raise StorageError(
                f"the tensor store {self.url} failed {what}: {code}: {detail}"
            ) from None
        except BotoCoreError as exc:  # no credentials, endpoint unreachable, ...
            raise StorageError(
                f"cannot reach the tensor store {self.url} ({what}): {exc}"
            ) from None

    # -- writing -------------------------------------------------------------------

    def start_pack(
        self,
        buffers: Sequence[memoryview],
        progress: Callable[[int], None] | None = None,
        pack_id: str | None = None,
    ) -> PackWritten:
        """Upload ``buffers`` (distinct contents) as one new pack object, hashing as it goes.

        Returns once the digests are known (the upload may still run); ``wait()`` on the
        result returns once the object is complete and its size confirmed. Raises
        StoreReadOnlyError, before anything is written, if the credentials may not write.
        """
        sizes = [b.nbytes for b in buffers]
        plan = layout(placeholder_names(len(buffers)), sizes)
        pack_id = pack_id or new_pack_id()
        key = self.key(pack_id)
        segments = [(offset, buffer) for offset, buffer in zip(plan.offsets, buffers)]
        hasher = ThreadPoolExecutor(max_workers=max(1, HASH_THREADS - 1))
        order = sorted(range(len(buffers)), key=lambda i: -sizes[i])
        hashes = {i: hasher.submit(sha256_hex, buffers[i]) for i in order}
        hasher.shutdown(wait=False)
        sealed: Future[None] = Future()
        begin(progress, plan.nbytes, "uploading")
        if plan.nbytes <= SINGLE_PUT_BYTES:
            digests = [hashes[i].result() for i in range(len(buffers))]
            header = layout(digests, sizes).header
            body = _gather(0, plan.nbytes, header, segments)
            self._call("uploading a pack", "put_object", Key=key, Body=body)
            if progress is not None:
                progress(plan.nbytes)
            self.pool.submit(self._seal, key, plan.nbytes, None, [], sealed)
        else:
            upload = self._call(
                "starting a pack upload", "create_multipart_upload", Key=key,
                ChecksumAlgorithm="CRC32",
            )["UploadId"]  # fmt: skip
            # Part 1 holds the whole header (its names are the digests, known last).
            first = max(PART_BYTES, len(plan.header))
            parts = [(0, min(first, plan.nbytes))] + [
                (start, min(start + PART_BYTES, plan.nbytes))
                for start in range(first, plan.nbytes, PART_BYTES)
            ]
            futures: list[Future[dict[str, Any]]] = [Future()]
            try:
                for number, (start, end) in enumerate(parts[1:], start=2):
                    futures.append(
                        self.pool.submit(
                            self._upload_part,
                            key,
                            upload,
                            number,
                            start,
                            end,
                            None,
                            segments,
                            progress,
                        )
                    )
                digests = [hashes[i].result() for i in range(len(buffers))]
            except BaseException:
                for future in futures[1:]:
                    future.cancel()
                self._abort(key, upload)
                raise
            header = layout(digests, sizes).header
            futures[0] = self.pool.submit(
                self._upload_part, key, upload, 1, *parts[0], header, segments, progress
            )
            threading.Thread(
                target=self._seal, args=(key, plan.nbytes, upload, futures, sealed),
                name="registry-seal", daemon=True,
            ).start()  # fmt: skip
        return PackWritten(pack_id, plan.nbytes, digests, plan.offsets, sealed=sealed)

    def _upload_part(
        self,
        key: str,
        upload: str,
        number: int,
        start: int,
        end: int,
        header: bytes | None,
        segments: list[tuple[int, memoryview]],
        progress: Callable[[int], None] | None,
    ) -> dict[str, Any]:
        body = _gather(start, end, header, segments)
        answer = self._call(
            f"uploading part {number} of a pack", "upload_part",
            Key=key, UploadId=upload, PartNumber=number, Body=body, ChecksumAlgorithm="CRC32",
        )  # fmt: skip
        if progress is not None:
            progress(end - start)
        part = {"PartNumber": number, "ETag": answer["ETag"]}
        if answer.get("ChecksumCRC32"):
            part["ChecksumCRC32"] = answer["ChecksumCRC32"]
        return part

    def _seal(
        self,
        key: str,
        nbytes: int,
        upload: str | None,
        parts: list[Future[dict[str, Any]]],
        sealed: Future[None],
    ) -> None:
        """Complete the upload (if multipart), confirm the object's size; settle ``sealed``."""
        try:
            if upload is not None:
                try:
                    # Wait for all parts, or the first failure: then the parts not yet
                    # started are cancelled and those running finish before the abort,
                    # so the abort leaves no part behind.
                    wait(parts, return_when=FIRST_EXCEPTION)
                    done = [future.result() for future in parts]
                    self._call(
                        "completing a pack upload", "complete_multipart_upload",
                        Key=key, UploadId=upload, MultipartUpload={"Parts": done},
                    )  # fmt: skip
                except BaseException:
                    for future in parts:
                        future.cancel()
                    wait(parts)
                    self._abort(key, upload)
                    raise
            size = self._call("checking an uploaded pack", "head_object", Key=key)["ContentLength"]
            if size != nbytes:
                self._quiet_delete(key)
                raise StorageError(
                    f"the tensor store {self.url} holds {size} bytes of pack {key}, not "
                    f"{nbytes}: the upload was not kept"
                )
        except BaseException as exc:
            sealed.set_exception(exc)
        else:
            sealed.set_result(None)

    def _abort(self, key: str, upload: str) -> None:
        try:
            self._call("aborting a pack upload", "abort_multipart_upload", Key=key, UploadId=upload)
        except StorageError:
            pass  # gc aborts it later, once it is older than its grace period

    def _quiet_delete(self, key: str) -> None:
        try:
            self._call("deleting a pack", "delete_object", Key=key)
        except StorageError:
            pass

    def abandon(self, written: PackWritten) -> None:
        """Remove a pack the catalogue will not reference, once its upload has settled."""
        try:
            written.wait()
        except StorageError:
            return  # it was aborted
        self._quiet_delete(self.key(written.pack_id))

    def check_writable(self, deleting: bool = False) -> None:
        """Raise StoreReadOnlyError unless these credentials may upload here (and, with
        ``deleting``, delete).

        Uploading is asked by starting a multipart upload of a probe key and aborting
        it at once (no object is ever made); deleting by deleting a key that is never
        written (success for a writer, AccessDenied for a reader; on a versioned bucket
        that leaves a delete marker, which holds no data)."""
        key = self.location.prefix + "packs/" + _WRITE_PROBE  # listed: gc aborts a leak
        upload = self._call("checking write access", "create_multipart_upload", Key=key)["UploadId"]
        self._abort(key, upload)
        if deleting:
            self._call("checking delete access", "delete_object", Key=key)

    def missing(self, pack_ids: Sequence[str]) -> set[str]:
        """Which of ``pack_ids`` the bucket has no object for (HeadObject, in parallel;
        the cache is not asked)."""

        def gone(pack_id: str) -> bool:
            try:
                self._call(f"looking for pack {pack_id}", "head_object", Key=self.key(pack_id))
            except _Missing:
                return True
            return False

        ids = list(dict.fromkeys(pack_ids))
        return {p for p, g in zip(ids, self.pool.map(gone, ids)) if g}

    # -- reading -------------------------------------------------------------------

    def open(self, pack_id: str) -> CachedPack:
        """A reader of ``pack_id`` that fetches what it is asked for on first view."""
        return self.open_ranges({pack_id: []})[pack_id]

    def open_ranges(
        self,
        wanted: Mapping[str, Sequence[tuple[int, int]]],
        progress: Callable[[int], None] | None = None,
        fresh: bool = False,
    ) -> dict[str, CachedPack]:
        """Readers of the packs ``wanted`` names, with the (offset, nbytes) ranges given
        fetched already: what the cache lacks (``fresh``: all of them, the cache's copy
        replaced), in parallel ranged GETs."""
        readers = {pack_id: self._reader(pack_id, fresh) for pack_id in wanted}
        jobs = []
        for pack_id, ranges in wanted.items():
            jobs += readers[pack_id].plan([(o, o + n) for o, n in ranges], fresh)
        if jobs:
            begin(progress, sum(end - start for _, start, end in jobs), "downloading")
        self._fetch(jobs, progress)
        return readers

    def _reader(self, pack_id: str, fresh: bool = False) -> CachedPack:
        key = self.key(pack_id)
        size = None if fresh else self.cache.known_size(pack_id)
        if size is None:
            try:
                size = self._call(f"opening pack {pack_id}", "head_object", Key=key)[
                    "ContentLength"
                ]
            except _Missing:
                raise self._pack_missing(pack_id) from None
        return CachedPack(self, pack_id, size)

    def _pack_missing(self, pack_id: str) -> PackMissing:
        return PackMissing(f"pack {pack_id} is missing from the tensor store at {self.url}")

    def _fetch(
        self, jobs: list[tuple[CachedPack, int, int]], progress: Callable[[int], None] | None
    ) -> None:
        """Run ranged GETs (reader, start, end) in parallel; record them in the cache."""
        if not jobs:
            return
        futures = [
            self.pool.submit(reader.fetch_range, start, end, progress)
            for reader, start, end in jobs
        ]
        try:
            for future in futures:
                future.result()  # the first failure ends the wait: the rest are cancelled
        finally:
            for future in futures:
                future.cancel()
            wait(futures)  # those already running finish before the cache is updated
            for reader in {id(r): r for r, _, _ in jobs}.values():
                reader.settle()
        self.cache.fetched(sum(end - start for _, start, end in jobs))

    def read_range(
        self, pack_id: str, start: int, end: int, sink: Callable[[int, bytes], None]
    ) -> None:
        """Stream bytes ``start .. end`` of a pack object to ``sink(offset, chunk)`` as
        they arrive (1 MiB at a time: no buffer of the whole range is held)."""
        from botocore.exceptions import BotoCoreError

        try:
            answer = self._call(
                f"reading pack {pack_id}", "get_object",
                Key=self.key(pack_id), Range=f"bytes={start}-{end - 1}",
            )  # fmt: skip
            answered = answer.get("ContentRange") or ""
            if not answered.startswith(f"bytes {start}-{end - 1}/"):
                answer["Body"].close()
                raise StorageError(
                    f"the tensor store {self.url} answered a read of bytes {start}..{end} of "
                    f"pack {pack_id} with {answered or 'the whole object'}; it must honour "
                    "ranged GETs"
                )
            position = start
            for chunk in answer["Body"].iter_chunks(_READ_CHUNK):
                if position + len(chunk) > end:
                    raise StorageError(f"pack {pack_id} in {self.url} sent more than was asked")
                try:
                    sink(position, chunk)
                except OSError as exc:  # the cache's disk, not the store
                    raise StorageError(
                        f"cannot write to the read cache at {self.cache.folder}: "
                        f"{exc.strerror or exc}"
                    ) from None
                position += len(chunk)
        except _Missing:
            raise self._pack_missing(pack_id) from None
        except (OSError, BotoCoreError) as exc:  # the connection broke mid-body
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"reading pack {pack_id} from {self.url} failed: {exc}") from None
        if position != end:
            raise StorageError(
                f"pack {pack_id} in {self.url} is truncated: needs bytes {start}..{end}, "
                f"got {position - start}"
            )

    # -- listing and deleting ------------------------------------------------------

    def list(self) -> list[StoredFile]:
        """Pack objects, then unfinished multipart uploads (``key`` ``upload:KEY:ID``).

        ``mtime`` is on this machine's clock: the store's timestamps are shifted by
        the difference between its clock (the answer's Date) and ours."""
        found: list[StoredFile] = []
        token: str | None = None
        prefix = self.location.prefix
        while True:
            args = {"Prefix": prefix + "packs/", **({"ContinuationToken": token} if token else {})}
            answer = self._call("listing packs", "list_objects_v2", **args)
            skew = _clock_skew(answer)
            for item in answer.get("Contents", ()):
                match = _PACK_KEY_RE.fullmatch(item["Key"][len(prefix) :])
                found.append(
                    StoredFile(
                        match.group(1) if match else None,
                        item["Key"],
                        int(item["Size"]),
                        item["LastModified"].timestamp() + skew,
                    )
                )
            if not answer.get("IsTruncated"):
                break
            token = answer["NextContinuationToken"]
        marker: dict[str, str] = {}
        while True:
            answer = self._call(
                "listing unfinished uploads",
                "list_multipart_uploads",
                Prefix=prefix + "packs/",
                **marker,
            )
            skew = _clock_skew(answer)
            for item in answer.get("Uploads", ()) or ():
                match = _PACK_KEY_RE.fullmatch(item["Key"][len(prefix) :])
                found.append(
                    StoredFile(
                        match.group(1) if match else None,
                        f"upload:{item['Key']}:{item['UploadId']}",
                        0,
                        item["Initiated"].timestamp() + skew,
                        finished=False,
                    )
                )
            if not answer.get("IsTruncated"):
                break
            marker = {
                "KeyMarker": answer["NextKeyMarker"],
                "UploadIdMarker": answer["NextUploadIdMarker"],
            }
        return found

    def delete(self, pack_id: str) -> None:
        """Remove a pack object no catalogue row references."""
        self._call(f"deleting pack {pack_id}", "delete_object", Key=self.key(pack_id))

    def delete_file(self, stored: StoredFile) -> None:
        """Remove one object ``list()`` gave, or abort one unfinished upload."""
        packs = self.location.prefix + "packs/"
        if stored.key.startswith("upload:"):
            key, _, upload = stored.key[len("upload:") :].rpartition(":")
            if not key.startswith(packs):
                raise StorageError(f"{stored.key} is not an upload of the tensor store {self.url}")
            try:
                self._call(
                    "aborting an unfinished upload",
                    "abort_multipart_upload",
                    Key=key,
                    UploadId=upload,
                )
            except _Missing:
                pass  # another gc aborted it first
            return
        if not stored.key.startswith(packs) or ".." in stored.key.split("/"):
            raise StorageError(f"{stored.key} is not an object of the tensor store {self.url}")
        self._call("deleting an unused object", "delete_object", Key=stored.key)


_WRITES = {
    "put_object", "create_multipart_upload", "upload_part", "complete_multipart_upload",
    "abort_multipart_upload", "delete_object",
}  # fmt: skip


class _Missing(PackMissing):
    """The object asked for does not exist (callers that can say which pack do)."""


def _clock_skew(answer: dict[str, Any]) -> float:
    """Our clock minus the store's, from the answer's Date header (0 if it has none)."""
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return time.time() - parsedate_to_datetime(date).timestamp() if date else 0.0
    except (TypeError, ValueError):
        return 0.0


def _gather(
    start: int, end: int, header: bytes | None, segments: list[tuple[int, memoryview]]
) -> bytearray:
    """Bytes ``start .. end`` of a pack: the header (if given; else zeros there), the
    blobs at their offsets, zeros in the alignment gaps."""
    out = bytearray(end - start)
    if header is not None and start < len(header):
        piece = header[start : min(end, len(header))]
        out[: len(piece)] = piece
    for offset, buffer in segments:
        size = buffer.nbytes
        if offset >= end or offset + size <= start:
            continue
        lo, hi = max(start, offset), min(end, offset + size)
        flat = buffer if buffer.format == "B" and buffer.ndim == 1 else buffer.cast("B")
        out[lo - start : hi - start] = flat[lo - offset : hi - offset]
    return out  # boto3 sends a bytearray as it is: no second copy


class CachedPack:
    """A pack of an object store, read through the cache: views are copy-on-write maps
    of the cache file, fetched on demand (with REGISTRY_CACHE_MAX_SIZE=0 the file is
    removed once fetched: this reader keeps its bytes, nobody else does)."""

    def __init__(self, store: S3Store, pack_id: str, size: int):
        self.pack_id, self._store, self._size = pack_id, store, size
        self._entry = store.cache.entry(pack_id, size)
        self._present = self._entry.present()
        self._fetched: list[Range] = []
        self._lock = threading.Lock()
        self._mapped: Any = None

    def __len__(self) -> int:
        return self._size

    def plan(
        self, wanted: Sequence[Range], fresh: bool = False
    ) -> list[tuple[CachedPack, int, int]]:
        """The GETs (self, start, end) that fill what ``wanted`` needs and the cache lacks
        (``fresh``: all of ``wanted``)."""
        for start, end in wanted:
            checked_range(self.pack_id, self._size, start, end - start)
        jobs = []
        needed = merge(wanted) if fresh else subtract(wanted, self._present)
        for start, end in merge(needed, gap=_FETCH_GAP):
            for lo in range(start, end, PART_BYTES):
                jobs.append((self, lo, min(end, lo + PART_BYTES)))
        if not jobs:
            self._entry.touch()
        return jobs

    def fetch_range(self, start: int, end: int, progress: Callable[[int], None] | None) -> None:
        self._store.read_range(self.pack_id, start, end, self._entry.write)
        with self._lock:
            self._fetched.append((start, end))
        if progress is not None:
            progress(end - start)

    def settle(self) -> None:
        """Record what was fetched as present in the cache."""
        with self._lock:
            fetched, self._fetched = self._fetched, []
        if fetched:
            self._entry.add(fetched)
            self._present = merge([*self._present, *fetched])

    def view(self, offset: int, nbytes: int) -> memoryview:
        """``nbytes`` at ``offset``: fetched first if the cache lacks them."""
        checked_range(self.pack_id, self._size, offset, nbytes)
        if subtract([(offset, offset + nbytes)], self._present):
            self._store._fetch(self.plan([(offset, offset + nbytes)]), None)
        if self._mapped is None:
            self._mapped = self._entry.map()
        return memoryview(self._mapped)[offset : offset + nbytes]

    def refetch(self, ranges: Sequence[tuple[int, int]]) -> bool:
        """Forget (offset, nbytes) ranges whose bytes failed a check and fetch them again
        from the store; True (their views now show the store's bytes)."""
        spans = [(o, o + n) for o, n in ranges]
        self._entry.forget(spans)
        self._present = subtract(self._present, merge(spans))
        self._store._fetch(self.plan(spans), None)
        return True
