"""Maintenance of the store: ``gc`` (collect unused tensors), ``verify`` (re-hash them),
and the checksum backfill that ``registry db upgrade`` runs after migrating.

Each works on the catalogue through the gateway and on packs through the ``Store``
interface only. Must never import torch, ``api`` or ``cli``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..catalog.gateway import Catalog, Contention, Gateway, StoredBlob
from ..errors import IntegrityError
from ..liveness import running
from ..records import GcReport, Problem, VerifyReport
from ..refs import parse_ref
from ..storage import PackMissing, PackWritten, Store, StoredFile, checksum_many, sha256_many
from ..storage.packs import layout, placeholder_names

#: Files the catalogue does not know are left alone by gc until they are this old.
GC_GRACE_SECONDS = 3600
#: Unfinished uploads and temporary files are left alone this long: a slow upload of
#: a big pack may still be running (S3 dates an upload from its start).
GC_UNFINISHED_GRACE_SECONDS = 24 * 3600
#: How many times gc and verify look again after a concurrent writer's change.
_ATTEMPTS = 5


@dataclass
class _GcPlan:
    """What gc will do: blobs no version uses, packs to delete or rewrite, orphan files."""

    dead_blobs: list[str] = field(default_factory=list)
    doomed: list[str] = field(default_factory=list)
    rewrites: list[tuple[str, list[StoredBlob]]] = field(default_factory=list)
    orphans: list[StoredFile] = field(default_factory=list)
    dead_pending: list[str] = field(default_factory=list)  # pending_packs rows to drop
    freed: int = 0  # bytes


def gc(
    gateway: Gateway, store: Store, *, dry_run: bool = False, grace: float | None = None
) -> GcReport:
    """Remove stored tensors that no version uses any more (see ``Registry.gc``).

    The catalogue changes in one write transaction, committed after the rewritten
    packs are durable and before any file is deleted; concurrent pushes wait for it
    (``Catalog.lock_for_gc``). A :class:`Contention` starts it over, at most _ATTEMPTS
    times. A dry run only reads. Raises CatalogReadOnlyError or StoreReadOnlyError,
    before anything changes, when the catalogue or the store refuses writes;
    IntegrityError (nothing changed) when a pack to rewrite holds corrupt bytes.
    """
    if dry_run:
        with gateway.read() as catalog:
            return _report(_plan(catalog, store, grace), dry_run=True)
    gateway.check_writable()  # before a pack is rewritten
    store.check_writable(deleting=True)  # before a catalogue row is deleted
    for attempt in range(_ATTEMPTS):
        try:
            return _collect(gateway, store, grace)
        except Contention:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _report(plan: _GcPlan, *, dry_run: bool) -> GcReport:
    return GcReport(
        dry_run=dry_run,
        bytes_freed=plan.freed,
        blobs_removed=len(plan.dead_blobs),
        packs_removed=len(plan.doomed),
        packs_rewritten=len(plan.rewrites),
        orphan_files_removed=len(plan.orphans),
    )


def _collect(gateway: Gateway, store: Store, grace: float | None) -> GcReport:
    """One attempt: plan and act in one write transaction, then delete the files."""
    written: list[PackWritten] = []
    try:
        with gateway.write() as catalog:
            catalog.lock_for_gc()  # what is used cannot change until this commits
            plan = _plan(catalog, store, grace)
            for pack_id, keep in plan.rewrites:
                new = _rewrite(store, pack_id, keep)
                written.append(new)
                catalog.add_pack(new.pack_id, new.nbytes, pending=False)
                for blob, offset in zip(keep, new.offsets):
                    catalog.move_blob(blob.digest, new.pack_id, offset)
            catalog.delete_blobs(plan.dead_blobs)
            catalog.delete_pack_rows(plan.doomed + [p for p, _ in plan.rewrites])
            catalog.drop_pending(plan.dead_pending)  # their writers fail if they commit
    except BaseException:  # rolled back: the new packs are nobody's
        for new in written:
            store.abandon(new)
        raise
    for pack_id in plan.doomed + [p for p, _ in plan.rewrites]:
        store.delete(pack_id)
    for orphan in plan.orphans:
        store.delete_file(orphan)
    return _report(plan, dry_run=False)


def _plan(catalog: Catalog, store: Store, grace: float | None = None) -> _GcPlan:
    """Which blobs no version uses, which packs hold only those (deleted) or some of
    them (rewritten), which files the catalogue does not know are garbage
    (``_plan_orphans``), and how many bytes all that frees (the pack format's sizes)."""
    live = catalog.live_digests()
    packs = catalog.packs()
    by_pack: dict[str, list[StoredBlob]] = {p: [] for p in packs}
    for blob, _checksum in catalog.all_blobs():
        by_pack.setdefault(blob.pack_id, []).append(blob)
    plan = _GcPlan()
    for pack_id, nbytes in packs.items():
        blobs = by_pack.get(pack_id, [])
        keep = [b for b in blobs if b.digest in live]
        plan.dead_blobs += [b.digest for b in blobs if b.digest not in live]
        if not keep:
            plan.doomed.append(pack_id)
            plan.freed += nbytes
        elif len(keep) < len(blobs):
            plan.rewrites.append((pack_id, keep))
            sizes = [b.nbytes for b in keep]
            plan.freed += nbytes - layout(placeholder_names(len(sizes)), sizes).nbytes
    _plan_orphans(catalog, store, packs, plan, grace)
    return plan


def _plan_orphans(
    catalog: Catalog, store: Store, packs: dict[str, int], plan: _GcPlan, grace: float | None
) -> None:
    """Which files no version names are garbage, and which ``pending_packs`` rows go.

    The store is listed before the rows are read: a writer commits its row before its
    first byte, so every file listed whose writer still runs has its row in the read.
    A file whose writer is known gone (a process of this machine that has ended) is
    garbage at once; one whose writer runs is never; any other (a writer elsewhere,
    no row: a crash before rows existed, gc's own rewrite) once older than ``grace``
    seconds (None: GC_GRACE_SECONDS for a pack, GC_UNFINISHED_GRACE_SECONDS for an
    unfinished file or upload). A row goes with its file, and a row without one once
    its writer is gone or its age is past the unfinished grace.
    """
    files = store.list()
    pending = catalog.pending_packs()
    now = time.time()
    finished_limit = now - (GC_GRACE_SECONDS if grace is None else grace)
    unfinished_limit = now - (GC_UNFINISHED_GRACE_SECONDS if grace is None else grace)
    judged: dict[str, bool | None] = {}

    def writer_running(pack_id: str) -> bool | None:
        if pack_id not in judged:
            judged[pack_id] = running(pending[pack_id].writer)
        return judged[pack_id]

    with_files = set()
    for f in files:
        if f.finished and f.pack_id in packs:
            continue
        if f.pack_id in pending:
            with_files.add(f.pack_id)
            alive = writer_running(f.pack_id)
            if alive:
                continue
            if alive is False:
                plan.orphans.append(f)
                continue
        if f.mtime < (finished_limit if f.finished else unfinished_limit):
            plan.orphans.append(f)
    collected = {f.pack_id for f in plan.orphans if f.pack_id in pending}
    plan.dead_pending = sorted(
        collected
        | {
            p
            for p, row in pending.items()
            if p not in with_files
            and (
                writer_running(p) is False
                or (writer_running(p) is None and row.started_at.timestamp() < unfinished_limit)
            )
        }
    )
    plan.freed += sum(f.size for f in plan.orphans)


def _rewrite(store: Store, pack_id: str, keep: list[StoredBlob]) -> PackWritten:
    """A new, durable pack with just ``keep``'s bytes from ``pack_id``, each re-checked
    against its sha256 on the way (IntegrityError, and nothing changed, if one fails)."""
    pack = store.open_ranges({pack_id: [(b.offset, b.nbytes) for b in keep]})[pack_id]
    for attempt in range(2):
        new = store.start_pack([pack.view(b.offset, b.nbytes) for b in keep])
        try:
            new.wait()
            bad = [b for b, d in zip(keep, new.digests) if d != b.digest]
        except BaseException:
            store.abandon(new)
            raise
        if not bad:
            return new
        store.abandon(new)
        # A cached copy of a remote pack may be what is damaged: read those again.
        if attempt or not pack.refetch([(b.offset, b.nbytes) for b in bad]):
            break
    base = (
        f"pack {pack_id} holds {len(bad)} corrupt tensor"
        f"{'s' if len(bad) != 1 else ''} (sha256:{bad[0].digest[:12]}...); "
        "gc stopped without changing anything"
    )
    raise IntegrityError(
        f"{base}: verify() says which versions use them",
        cli=f"{base}: `registry verify` says which versions use them",
    )


def verify(gateway: Gateway, store: Store, ref: str | None = None) -> VerifyReport:
    """Re-hash stored tensors (of one version, or all of them) against their sha256
    and their checksum (see ``Registry.verify``).

    The store is read after the catalogue, so a concurrent ``gc`` may have moved a
    tensor to a new pack, or deleted it as unused, meanwhile: a tensor whose pack is
    missing or short is looked up again, and counts as missing only where the
    catalogue still says it is.
    """
    checked_ref = None
    with gateway.read() as catalog:
        if ref is None:
            blobs = catalog.all_blobs()
            checked, checked_bytes = len(blobs), sum(b.nbytes for b, _ in blobs)
        else:
            version = catalog.resolve(parse_ref(ref))
            checked_ref = f"{version.name}:{version.version}"
            seen: dict[str, tuple[StoredBlob, str | None]] = {}
            located = catalog.tensor_locations(version.id)
            for loc in located:
                seen.setdefault(
                    loc.digest,
                    (StoredBlob(loc.digest, loc.pack_id, loc.offset, loc.nbytes), loc.checksum),
                )
            blobs = list(seen.values())
            # The user reads counts of the version's tensors, however they are stored.
            checked, checked_bytes = len(located), sum(loc.nbytes for loc in located)
    corrupt, missing = _check_blobs(store, blobs)
    for _attempt in range(_ATTEMPTS):
        if not missing:
            break
        with gateway.read() as catalog:
            now = catalog.locate_blobs([b.digest for b in missing])
        # Gone from the catalogue: gc deleted it as unused; where it was: missing.
        moved = [now[b.digest] for b in missing if b.digest in now and now[b.digest][0] != b]
        missing = [b for b in missing if b.digest in now and now[b.digest][0] == b]
        if not moved:
            break
        more_corrupt, more_missing = _check_blobs(store, moved)
        corrupt += more_corrupt
        missing += more_missing
    with gateway.read() as catalog:
        users = catalog.users_of([b.digest for b in corrupt + missing])

    def problems(found: list[StoredBlob], kind: str) -> list[Problem]:
        return [Problem(b.digest, b.pack_id, kind, tuple(users.get(b.digest, ()))) for b in found]

    return VerifyReport(
        checked=checked,
        checked_bytes=checked_bytes,
        corrupt=problems(corrupt, "corrupt"),
        missing=problems(missing, "missing"),
        ref=checked_ref,
    )


def _check_blobs(
    store: Store, blobs: list[tuple[StoredBlob, str | None]]
) -> tuple[list[StoredBlob], list[StoredBlob]]:
    """(corrupt, missing): bytes that fail their digest or checksum; packs gone or short."""
    corrupt: list[StoredBlob] = []
    missing: list[StoredBlob] = []
    by_pack: dict[str, list[tuple[StoredBlob, str | None]]] = {}
    for blob, checksum in blobs:
        by_pack.setdefault(blob.pack_id, []).append((blob, checksum))
    for pack_id, items in by_pack.items():
        try:  # from the store itself, not a cache of it (a remote pack: HeadObject)
            pack = store.open_ranges({pack_id: []}, fresh=True)[pack_id]
            # A remote pack reads what will be checked from the bucket again, in parallel.
            pack.refetch(
                [(b.offset, b.nbytes) for b, _ in items if b.offset + b.nbytes <= len(pack)]
            )
        except PackMissing:
            missing += [b for b, _ in items]
            continue
        present = []
        for blob, checksum in items:
            if blob.offset + blob.nbytes > len(pack):
                missing.append(blob)
            else:
                present.append((blob, checksum))
        data = [pack.view(b.offset, b.nbytes) for b, _ in present]
        for (blob, checksum), digest, fast in zip(present, sha256_many(data), checksum_many(data)):
            if digest != blob.digest or (checksum and fast != checksum):
                corrupt.append(blob)
    return corrupt, missing


def backfill_checksums(gateway: Gateway, store: Store) -> int:
    """Fill in the checksum of every blob stored before revision 0002, read from the
    store and checked against its sha256 first; returns how many were filled in."""
    with gateway.write() as catalog:
        blobs = catalog.blobs_without_checksum()
        packs: dict[str, Any] = {}
        for blob in blobs:
            if blob.pack_id not in packs:
                packs[blob.pack_id] = store.open(blob.pack_id)
            data = packs[blob.pack_id].view(blob.offset, blob.nbytes)
            if sha256_many([data])[0] != blob.digest:
                raise IntegrityError(
                    f"stored tensor sha256:{blob.digest[:12]} in pack {blob.pack_id} "
                    "does not match its digest; the tensor store is corrupt"
                )
            catalog.set_checksum(blob.digest, checksum_many([data])[0])
    return len(blobs)


def reader_grants(gateway: Gateway, role: str, *, run: bool = False) -> list[str]:
    """The statements that let the PostgreSQL role ``role`` read this catalogue and
    nothing more (CONNECT, USAGE on the schema, SELECT on every table now and on
    those later migrations add). With ``run``, they are executed in one transaction as
    this connection's (privileged) role. Raises InvalidArgumentError for a name no
    role can have, NotFoundError (with ``run``) when there is no such role,
    CatalogError on SQLite (whose read-only access is the file's permissions) or
    when the connection may not grant them.
    """
    with gateway.read() as catalog:  # SQLite says no here, before a file is created
        statements = catalog.reader_grants(role)
    if run:
        with gateway.write() as catalog:
            statements = catalog.grant_reader(role)
    return statements
