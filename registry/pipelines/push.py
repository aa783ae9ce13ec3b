"""The push pipeline: check, read, fit, match what is stored, write one pack, commit.

1. **Check** the request (name, tags, description, parent) before reading anything.
2. **Read** the user's checkpoint (``checkpoints.read_source``: ``weights_only``
   loads, never a pickle fallback) and **fit** it to an architecture by torch's own
   ``load_state_dict(strict=True)`` on the meta device (``fitting``).
3. **Match**: one read of the catalogue asks which stored blobs have these tensors'
   XXH3 checksums; each candidate is confirmed (never trusted alone): byte for byte
   against a local pack, by the sha256 of this push's bytes against the stored
   digest where the store is remote (no download to push a fine-tune).
4. **Write** the tensors whose bytes are new as one pack (``Store.start_pack``), hashed
   with sha256 while they are written; the pack's ``pending_packs`` row is committed
   first (``pending.start_pending_pack``), so gc leaves it alone while this process runs.
5. **Commit** the rows in one short write transaction, after the pack is durable. A
   :class:`Contention` (a concurrent writer, or ``gc`` removing a blob this push
   found) rolls it back; the push starts over from step 3, at most _ATTEMPTS times.

A crash anywhere leaves at worst an unreferenced pack, never a version naming bytes
that are not there; gc collects that pack once this process is gone. Must never
import ``api`` or ``cli``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import config, metadata
from ..catalog.gateway import Catalog, Contention, Gateway, StoredBlob, VersionRow
from ..errors import InvalidArgumentError, StorageError, VersionNotFoundError
from ..keyvalue import check_description, validate_arch_kwargs, validate_tags
from ..records import ModelVersion, PushReport
from ..refs import parse_ref, validate_name
from ..storage import (
    PackMissing,
    PackReader,
    PackWritten,
    Store,
    checksum_many,
    manifest_digest,
    same_bytes,
    sha256_many,
)
from .merge import add_to_existing
from .pending import give_up, start_pending_pack, wait_pending

if TYPE_CHECKING:
    from ..provenance import Provenance

_ATTEMPTS = 5
#: Tensors at least this large are compared on the thread pool.
_PARALLEL_COMPARE = 1 << 20


@dataclass
class Request:
    """What the user asked for, checked: the model name and what goes with the version."""

    name: str
    tags: dict[str, str]
    description: str | None
    parent: tuple[str, int] | None  # (ref, version id)
    arch: str | None
    arch_kwargs: Mapping[str, Any] | None
    strip_prefix: str | None


@dataclass
class Prepared:
    """The weights read, fitted and hashed: per key (in state-dict order) its bytes."""

    names: list[str]
    dtypes: list[str]
    shapes: list[list[int]]
    owners: list[Any]  # the tensors keeping each view's memory alive
    views: list[memoryview]
    checksums: list[str]
    columns: list[tuple[Any, Any]]  # (storage group, storage view) per key
    terms: list[Any]  # each key's storage-sharing term in the manifest
    fitted: Any
    checkpoint: Any
    arch_module: str | None
    notes: list[str]


@dataclass
class Plan:
    """One round's match against the store: per key its digest, and what to write."""

    digests: list[str]
    fresh: list[int]  # indices whose bytes are new, each distinct content once
    #: per fresh index, digests of stored copies with its checksum that failed the check
    damaged: dict[int, set[str]] = field(default_factory=dict)
    heal: list[tuple[str, int, int, str]] = field(default_factory=list)
    written: PackWritten | None = None


def check_request(
    gateway: Gateway,
    source: Any,
    name: str | None,
    *,
    arch: str | None,
    arch_kwargs: Mapping[str, Any] | None,
    tags: Mapping[str, Any] | None,
    description: str | None,
    parent: str | None,
    strip_prefix: str | None,
) -> Request:
    """Validate everything before a byte is read; InvalidArgumentError says what is wrong."""
    if isinstance(source, (str, os.PathLike)):
        from ..checkpoints import check_file

        check_file(source)  # a missing file or a folder says so before its name is judged
    if name is None:
        name = _name_from_file(source)
    else:
        validate_name(name)
    validate_arch_kwargs(arch_kwargs)
    clean_tags = validate_tags(tags)
    check_description(description)
    if arch is not None and (not isinstance(arch, str) or not arch):
        raise InvalidArgumentError(
            "arch= must name an architecture, e.g. 'resnet18'",
            cli="--arch must name an architecture, e.g. resnet18",
        )
    parent_pair = None
    if parent is not None:
        with gateway.read() as catalog:
            row = catalog.resolve(parse_ref(parent))
        parent_pair = (f"{row.name}:{row.version}", row.id)
    return Request(name, clean_tags, description, parent_pair, arch, arch_kwargs, strip_prefix)


def _name_from_file(source: Any) -> str:
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidArgumentError("name= is required when pushing a state dict or a module")
    name = Path(source).stem
    try:
        validate_name(name)
    except InvalidArgumentError:
        base = (
            f"the file name {Path(source).name!r} does not make a model name (letters, "
            "digits, '.', '_' and '-', in parts separated by '/')"
        )
        raise InvalidArgumentError(
            f"{base}: name the model with name=", cli=f"{base}: name the model with --name"
        ) from None
    return name


def prepare(source: Any, request: Request) -> Prepared:
    """Read the checkpoint, check every value is storable, fit it, and hash its bytes."""
    from .. import architectures, fitting
    from ..checkpoints import read_source
    from ..sharing import manifest_terms, storage_layout, to_columns
    from ..tensors import check_storable, dtype_name, raw_bytes

    checkpoint = read_source(source)
    for key, value in checkpoint.state_dict.items():
        check_storable(key, value)
    notes = list(checkpoint.notes)
    encoded = metadata.encode(checkpoint.metadata, notes)
    fitted = fitting.fit(
        source,
        checkpoint.state_dict,
        encoded,
        arch=request.arch,
        arch_kwargs=request.arch_kwargs,
        strip_prefix=request.strip_prefix,
        notes=notes,
    )
    arch_module = architectures.registering_module(fitted.arch.name)
    if arch_module == "__main__":
        notes.append(
            f"{fitted.arch.name!r} is registered by the running script (__main__): another "
            "process can load this version only once it registers the name too; register "
            "it in an importable module, and the registry records that module with the "
            "version and imports it on load"
        )
    values = list(checkpoint.state_dict.values())
    shared = storage_layout(values)
    owners, views = [], []
    for value in values:
        owner, view = raw_bytes(value)
        owners.append(owner)
        views.append(view)
    names = list(fitted.state)  # the same tensors in the same order; keys maybe without a prefix
    shapes = [list(v.shape) for v in values]
    return Prepared(
        names=names,
        dtypes=[dtype_name(v.dtype) for v in values],
        shapes=shapes,
        owners=owners,
        views=views,
        checksums=checksum_many(views),
        columns=[to_columns(entry, shape) for entry, shape in zip(shared, shapes)],
        terms=manifest_terms(names, shared),
        fitted=fitted,
        checkpoint=checkpoint,
        arch_module=arch_module,
        notes=notes,
    )


def push(
    gateway: Gateway,
    store: Store,
    request: Request,
    pushed: Provenance,
    prepared: Prepared,
    progress: Callable[[int], None] | None = None,
) -> ModelVersion:
    """Store ``prepared`` as a new version (or find it stored); returns its record."""
    gone: set[str] = set()  # packs found missing once: damage if still named next time
    asked = False  # whether the catalogue said it accepts writes
    for attempt in range(_ATTEMPTS):
        with gateway.read() as catalog:  # the one question: which of these are stored
            stored = catalog.blobs_by_checksum(prepared.checksums)
        try:
            plan = match_stored(store, prepared, stored, missing_ok=gone)
        except PackGone as exc:  # gc moved or removed it after the question: ask again
            gone.add(exc.pack_id)
            continue
        new = [prepared.views[i] for i in plan.fresh]
        if new and not asked:
            # The pack goes to the store before the rows go to the catalogue: ask the
            # catalogue first, so a read-only user is refused before anything is written.
            gateway.check_writable()
            asked = True
        plan.written = start_pending_pack(gateway, store, new, "push", progress) if new else None
        keep = False
        try:
            _settle_digests(prepared, plan)
            record, report = _commit(gateway, request, pushed, prepared, plan)
            keep = report.bytes_written > 0  # committed rows name the pack
        except Contention:
            if attempt == _ATTEMPTS - 1:
                raise
            continue
        finally:
            if plan.written is not None and not keep:
                give_up(gateway, store, plan.written)
        return replace(record, pushed=report)
    raise Contention(  # pragma: no cover - every attempt found a pack gone
        "the tensor store kept changing under this push (a gc running?); push again"
    )


class PackGone(StorageError):
    """A pack the catalogue named a moment ago cannot be read: gc moved or removed it
    (``pack_id`` says which); the push asks the catalogue again."""

    def __init__(self, pack_id: str):
        super().__init__(f"pack {pack_id} went away during the push")
        self.pack_id = pack_id


def _settle_digests(prepared: Prepared, plan: Plan) -> None:
    """Fill in the digests the pack writer computed; list damaged stored copies to heal."""
    written = plan.written
    if written is not None:
        for i, digest in zip(plan.fresh, written.digests):
            plan.digests[i] = digest
    plan.digests = [plan.digests[j] if isinstance(j, int) else j for j in plan.digests]  # type: ignore[misc]
    if written is not None:
        plan.heal = [
            (digest, offset, prepared.views[i].nbytes, prepared.checksums[i])
            for i, digest, offset in zip(plan.fresh, written.digests, written.offsets)
            if digest in plan.damaged.get(i, ())
        ]


def _commit(
    gateway: Gateway, request: Request, pushed: Provenance, prepared: Prepared, plan: Plan
) -> tuple[ModelVersion, PushReport]:
    """One write transaction: the pack's rows, then the version (or the existing one's
    additions); the pack is durable before the commit. Returns (the version's record as
    committed, report)."""
    p, name = prepared, request.name
    version_digest = manifest_digest(
        (n, d, s, h, t) for n, d, s, h, t in zip(p.names, p.dtypes, p.shapes, plan.digests, p.terms)
    )
    said = (
        (*p.notes, _healed_note(plan.heal, p.names, plan.digests)) if plan.heal else tuple(p.notes)
    )
    written = plan.written
    if written is not None:
        # The pack is durable (uploaded and its size confirmed) before the transaction
        # that names it starts: no lock is held while bytes travel.
        wait_pending(written)
    with gateway.write() as catalog:
        if request.parent is not None:
            _check_parent(catalog, *request.parent)
        existing = catalog.version_by_digest(name, version_digest, hold=True)
        changed: tuple[str, ...] = ()
        if existing is not None:
            changed = _update_existing(catalog, existing, request, pushed, prepared)
            if not plan.heal:
                record = catalog.records([catalog.version_by_id(existing.id)])[0]
                return record, PushReport(False, 0, 0, said, changed=changed)
        if written is not None:
            catalog.add_pack(
                written.pack_id,
                written.nbytes,
                [
                    (d, offset, p.views[i].nbytes, p.checksums[i])
                    for d, offset, i in zip(written.digests, written.offsets, plan.fresh)
                ],
            )
            catalog.heal_blobs(written.pack_id, plan.heal)
        written_bytes = written.nbytes if written else 0
        if existing is not None:
            report = PushReport(
                False, written_bytes, 0, said, healed=len(plan.heal), changed=changed
            )
            version_id = existing.id
        else:
            version_id = _add_version(catalog, request, pushed, prepared, plan, version_digest)
            new_digests = set(written.digests if written else ())
            tensors_written = sum(d in new_digests for d in plan.digests)
            report = PushReport(True, written_bytes, tensors_written, said, healed=len(plan.heal))
        record = catalog.records([catalog.version_by_id(version_id)])[0]
    return record, report


def _check_parent(catalog: Catalog, ref: str, version_id: int) -> None:
    """VersionNotFoundError unless the parent found before the push (``ref``, by id) is
    still there, and kept there until the commit: a removal meanwhile must not leave
    the version an id another version may take next (SQLite reuses the highest id)."""
    try:
        row = catalog.version_by_id(version_id)
    except VersionNotFoundError:
        row = None
    if row is not None and f"{row.name}:{row.version}" == ref:
        try:
            catalog.hold_version(row)  # a removal now waits for this push's commit
            return
        except VersionNotFoundError:
            pass
    raise VersionNotFoundError(
        f"the parent {ref} was removed while this push ran; nothing was pushed"
    )


def _update_existing(
    catalog: Catalog, existing: VersionRow, request: Request, pushed: Provenance, prepared: Prepared
) -> tuple[str, ...]:
    """Give the version that has these weights what the push asked for (or conflict)."""
    fitted = prepared.fitted
    changed, _kept, added = add_to_existing(
        catalog,
        existing,
        tags=request.tags,
        description=request.description,
        parent=request.parent,
        arch=(fitted.arch.name, fitted.kwargs)
        if request.arch is not None or request.arch_kwargs
        else None,
    )
    if added:  # before: it had none of these
        catalog.record_event(
            "push-update",
            existing,
            {k: None for k in added},
            added,
            actor=(pushed.user, pushed.host),
        )
    return changed


def _add_version(
    catalog: Catalog,
    request: Request,
    pushed: Provenance,
    prepared: Prepared,
    plan: Plan,
    version_digest: str,
) -> int:
    """Insert the new version, its tensor table and tags, and its push event."""
    import torch

    p, fitted = prepared, prepared.fitted
    model_id, number = catalog.next_version(request.name)
    row = catalog.add_version(
        model_id,
        number,
        {
            "digest": version_digest,
            "arch": fitted.arch.name,
            "arch_kwargs": dict(fitted.kwargs),
            "description": request.description,
            "parent_id": request.parent[1] if request.parent else None,
            "param_count": fitted.param_count,
            "torch_version": torch.__version__,
            "source_format": p.checkpoint.source_format,
            "state_metadata": fitted.metadata,
            "file_metadata": p.checkpoint.file_metadata,
            "assumed_metadata": fitted.assumed,
            "arch_module": p.arch_module,
            **pushed.columns(),
        },
        [
            (n, d, s, h, view.nbytes, group, view_column)
            for n, d, s, h, view, (group, view_column) in zip(
                p.names, p.dtypes, p.shapes, plan.digests, p.views, p.columns
            )
        ],
        request.tags,
    )
    facts = {
        "digest": f"sha256:{version_digest}",
        "arch": fitted.arch.name,
        "arch_kwargs": fitted.kwargs,
        "parent": request.parent[0] if request.parent else None,
        "torch_version": torch.__version__,
        **pushed.columns(),
    }
    catalog.record_push(row, facts, actor=(pushed.user, pushed.host))
    return row.id


def match_stored(
    store: Store,
    prepared: Prepared,
    stored: dict[str, list[StoredBlob]],
    missing_ok: set[str] | frozenset[str] = frozenset(),
) -> Plan:
    """Which tensors the store holds already, and which hold the same bytes.

    Per tensor: its digest if stored, or the index of the earlier tensor of this push
    with the same bytes, or None (new bytes). ``fresh`` lists the indices whose bytes
    are new, each distinct content once; ``damaged`` (per new index) the digests of
    stored copies that had its checksum but not its bytes, or could not be read. A
    checksum match is confirmed byte for byte against the stored (or earlier) bytes
    before it counts: XXH3 is fast, not collision resistant. A stored copy that fails
    the comparison while the push's bytes turn out to have its digest is damaged: the
    commit heals it.

    A pack that cannot be opened or is too short raises :class:`PackGone` (gc may have
    moved its tensors since the catalogue was asked), unless it is in ``missing_ok``
    (asked again, and still named): then its tensors count as damaged.
    """
    views, checksums = prepared.views, prepared.checksums
    result, reps = _dedupe_within(prepared)
    if store.remote:
        return _match_by_digest(store, prepared, stored, result, reps, missing_ok)
    opened: dict[str, PackReader | None] = {}
    for i in reps:
        for blob in stored.get(checksums[i], ()):
            if blob.pack_id not in opened:
                try:
                    opened[blob.pack_id] = store.open(blob.pack_id)
                except PackMissing:
                    if blob.pack_id not in missing_ok:
                        raise PackGone(blob.pack_id) from None
                    opened[blob.pack_id] = None  # still named, still missing: damaged
    damaged: dict[int, set[str]] = {}

    def stored_digest(i: int) -> str | None:
        for blob in stored.get(checksums[i], ()):
            if blob.nbytes != views[i].nbytes:
                continue
            pack = opened[blob.pack_id]
            try:
                if pack is not None and same_bytes(pack.view(blob.offset, blob.nbytes), views[i]):
                    return blob.digest
            except StorageError:  # a truncated pack
                if blob.pack_id not in missing_ok:
                    raise PackGone(blob.pack_id) from None
            damaged.setdefault(i, set()).add(blob.digest)
        return None

    # Comparing is memory-bound and numpy releases the GIL: large tensors on every
    # core, small ones here (a thread hop costs more than comparing them).
    large = [i for i in reps if views[i].nbytes >= _PARALLEL_COMPARE and stored.get(checksums[i])]
    found: dict[int, str | None] = {}
    with ThreadPoolExecutor(max_workers=config.HASH_THREADS) as pool:
        futures = {i: pool.submit(stored_digest, i) for i in large}
        for i in reps:
            if i not in futures:
                found[i] = stored_digest(i) if stored.get(checksums[i]) else None
        for i, future in futures.items():
            found[i] = future.result()
    for i in reps:
        result[i] = found[i]
    return Plan(digests=result, fresh=[i for i in reps if found[i] is None], damaged=damaged)


def _match_by_digest(
    store: Store,
    prepared: Prepared,
    stored: dict[str, list[StoredBlob]],
    result: list[Any],
    reps: list[int],
    missing_ok: set[str] | frozenset[str],
) -> Plan:
    """``match_stored`` for a remote store: a checksum match is confirmed by the sha256
    of this push's bytes against the stored blob's digest (a cryptographic identity),
    instead of downloading the stored copy to compare, and the pack holding it must
    exist (a lost object's tensors are written again and healed). Bytes damaged inside
    an object that exists are not noticed here; loads and ``verify`` check every byte
    they fetch."""
    views, checksums = prepared.views, prepared.checksums
    candidates = [
        i for i in reps if any(b.nbytes == views[i].nbytes for b in stored.get(checksums[i], ()))
    ]
    digests = dict(zip(candidates, sha256_many([views[i] for i in candidates])))
    same = {
        i: [b for b in stored.get(checksums[i], ()) if b.digest == digests.get(i)] for i in reps
    }
    # The pack holding a confirmed copy must exist (one HeadObject per pack): a lost
    # object's tensors are written again, and the commit points them at the new copy.
    packs = sorted({b.pack_id for blobs in same.values() for b in blobs})
    lost = store.missing(packs) if packs else set()
    damaged: dict[int, set[str]] = {}
    for i in reps:
        for blob in same[i]:
            if blob.pack_id not in lost:
                result[i] = blob.digest
                break
            if blob.pack_id not in missing_ok:
                raise PackGone(blob.pack_id)  # gc may have moved it: ask again first
            damaged.setdefault(i, set()).add(blob.digest)
    return Plan(digests=result, fresh=[i for i in reps if result[i] is None], damaged=damaged)


def _dedupe_within(prepared: Prepared) -> tuple[list[Any], list[int]]:
    """Tensors of this push with the same bytes as an earlier one: (per tensor the
    earlier index or None, the first tensor of each distinct content)."""
    views, checksums, owners = prepared.views, prepared.checksums, prepared.owners
    result: list[Any] = [None] * len(views)
    reps: list[int] = []
    seen: dict[tuple[str, int], list[int]] = {}  # (checksum, nbytes) -> reps
    same_memory: dict[tuple[int, int], int] = {}  # (address, nbytes) -> rep
    for i, (view, checksum) in enumerate(zip(views, checksums)):
        key = (checksum, view.nbytes)
        address = (owners[i].data_ptr(), view.nbytes)
        earlier = same_memory.get(address)  # tied weights: the very same memory
        if earlier is None:
            earlier = next((j for j in seen.get(key, ()) if same_bytes(views[j], view)), None)
        if earlier is not None:
            result[i] = earlier
            continue
        same_memory[address] = i
        seen.setdefault(key, []).append(i)
        reps.append(i)
    return result, reps


def _healed_note(
    heal: list[tuple[str, int, int, str]], names: list[str], digests: list[str]
) -> str:
    healed = {digest for digest, *_ in heal}
    keys = [n for n, d in zip(names, digests) if d in healed]
    shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    count = len(healed)
    return (
        f"healed {count} damaged stored tensor{'s' if count != 1 else ''} ({shown}): the "
        "store's copy did not match its digest; the good bytes pushed now replace it for "
        "every version that uses it"
    )
