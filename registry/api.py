"""The Python API: :class:`Registry`, one unit of work per call.

torch is imported only by the calls that move weights (push, pull, load), and
SQLAlchemy only by pushes and schema changes: reading the catalogue and editing
tags go through plain DB-API connections (``catalog.reader``), so the metadata
commands start in a fraction of the time.
"""

from __future__ import annotations

import json
import mmap
import os
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config, metadata
from .catalog import revision as schema_revision
from .catalog.reader import (
    PUSH_KEYS,
    SORTS,
    Catalog,
    Location,
    StoredBlob,
    push_event,
    version_snapshot,
)
from .errors import (
    ArchitectureMismatchError,
    ArchitectureNotFoundError,
    CatalogError,
    ConflictError,
    IntegrityError,
    InvalidArgumentError,
    StorageError,
)
from .keyvalue import format_kwargs, parse_date, validate_arch_kwargs, validate_tags
from .records import (
    PROVENANCE_FIELDS,
    Diff,
    Event,
    GcReport,
    ModelVersion,
    Problem,
    PushReport,
    TensorChange,
    TensorInfo,
    VerifyReport,
)
from .refs import parse_ref, validate_alias, validate_name
from .storage import LocalStore, checksum_many, manifest_digest, same_bytes, sha256_many
from .storage.local import view as pack_view

if TYPE_CHECKING:
    import torch
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker
    from torch import nn

    from .architectures import Match
    from .bundle import ExportReport, ImportReport
    from .checkpoints import Checkpoint

PULL_FORMATS = ("pth", "safetensors")
VERIFY_MODES = (True, False, "sha256")
#: Files the catalogue does not know are left alone by gc until they are this old.
GC_GRACE_SECONDS = 3600
_PUSH_ATTEMPTS = 3
_SCHEMA_ATTEMPTS = 6
#: Tensors at least this large are compared on the thread pool.
_PARALLEL_COMPARE = 1 << 20


class Registry:
    """A model registry: a catalogue database plus a content-addressed tensor store.

    ``Registry()`` uses ``REGISTRY_HOME`` (default ``~/.local/share/registry``);
    ``home=``, ``database_url=`` and ``storage_url=`` override the environment.
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        database_url: str | None = None,
        storage_url: str | os.PathLike[str] | None = None,
    ):
        self.settings = config.resolve(home, database_url, storage_url)
        self._sqlite_path = config.sqlite_path(self.settings.database_url)
        self._store = LocalStore(self.settings.storage_path)
        self._schema_checked = False

    def __repr__(self) -> str:
        return f"Registry(home={str(self.settings.home)!r})"

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release database connections."""
        if "_engine" in self.__dict__:
            self._engine.dispose()

    # -- catalogue plumbing -------------------------------------------------------

    @cached_property
    def _engine(self) -> Engine:
        from .catalog.engine import make_engine

        return make_engine(self.settings.database_url)

    @cached_property
    def _writer(self) -> sessionmaker[Session]:
        from sqlalchemy.orm import sessionmaker

        from .catalog.engine import writer

        return sessionmaker(writer(self._engine), expire_on_commit=False)

    @contextmanager
    def _catalog(self, write: bool = False) -> Iterator[Catalog]:
        """A plain DB-API connection in one transaction (see ``catalog.reader``)."""
        empty = False
        if self._sqlite_path is not None and not write and not self._sqlite_path.exists():
            import sqlite3

            from .catalog.schema import empty_sqlite

            errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
            connection: Any = empty_sqlite()  # looking never creates a registry
            qmark = empty = True
        elif self._sqlite_path is not None:
            import sqlite3

            errors = (sqlite3.Error,)
            self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                connection = sqlite3.connect(
                    self._sqlite_path, timeout=config.SQLITE_BUSY_TIMEOUT_S, isolation_level=None
                )
                connection.execute("PRAGMA foreign_keys=ON")
                connection.execute("PRAGMA case_sensitive_like=ON")  # as on PostgreSQL
                connection.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise CatalogError(
                    f"cannot open the catalogue database {self._sqlite_path}: {exc}"
                ) from None
            qmark = True
        else:
            from sqlalchemy.exc import SQLAlchemyError

            errors = (self._engine.dialect.loaded_dbapi.Error,)
            try:
                connection = self._engine.raw_connection()
            except (*errors, SQLAlchemyError) as exc:  # the server is down, refuses us, ...
                detail = "; ".join(
                    line.strip() for line in str(getattr(exc, "orig", exc)).splitlines()
                )
                raise CatalogError(f"cannot open the catalogue database: {detail}") from None
            qmark = self._engine.dialect.paramstyle == "qmark"
        try:
            catalog = Catalog(connection, qmark=qmark)
            if not empty:
                self._ready(catalog)
            with catalog.transaction(write):
                yield catalog
        except errors as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CatalogError(f"catalogue database error: {detail}") from None
        finally:
            connection.close()

    def _ready(self, catalog: Catalog | None = None) -> None:
        """Make sure the schema is this release's: migrate an empty database, refuse others.

        The common case, a database at the right revision, costs one plain query;
        anything else goes through SQLAlchemy and Alembic.
        """
        if self._schema_checked:
            return
        if catalog is not None:
            try:
                with catalog.transaction():
                    current = catalog.revision()
            except Exception:  # no version table yet, or not a registry database
                current = None
            if current == schema_revision.SCHEMA_REVISION:
                self._schema_checked = True
                return
        from sqlalchemy.exc import OperationalError

        from .catalog import schema

        for attempt in range(_SCHEMA_ATTEMPTS):
            try:
                schema.ensure_schema(self._engine)
                break
            except OperationalError as exc:
                # Two first-time users of a new SQLite file can meet while one of them
                # creates it (WAL set-up); SQLite then answers "locked" without waiting.
                if "locked" not in str(exc.orig) or attempt == _SCHEMA_ATTEMPTS - 1:
                    raise CatalogError(f"cannot open the catalogue database: {exc.orig}") from None
                time.sleep(0.05 * 2**attempt)
        self._schema_checked = True

    def database_revision(self) -> str | None:
        """The schema revision stamped in the database (None if it has none yet)."""
        from .catalog import schema

        with self._engine.connect() as connection:
            return schema.current_revision(connection)

    def upgrade_database(self) -> tuple[str | None, str | None]:
        """Apply pending migrations; returns (revision before, revision after).

        Then fills in what a migration cannot compute from the database alone: the
        checksums of tensors stored before revision 0002, read from the tensor store.
        """
        from .catalog import schema

        result = schema.upgrade(self._engine)
        self._schema_checked = False
        self._backfill_checksums()
        return result

    def _backfill_checksums(self) -> int:
        from .catalog import queries

        with self._writer() as session, session.begin():
            blobs = queries.blobs_without_checksum(session)
            maps: dict[str, mmap.mmap] = {}
            for blob in blobs:
                if blob.pack_id not in maps:
                    maps[blob.pack_id] = self._store.map(blob.pack_id)
                data = pack_view(maps[blob.pack_id], blob.offset, blob.nbytes, blob.pack_id)
                if sha256_many([data])[0] != blob.digest:
                    raise IntegrityError(
                        f"stored tensor sha256:{blob.digest[:12]} in pack {blob.pack_id} "
                        "does not match its digest; the tensor store is corrupt"
                    )
                blob.checksum = checksum_many([data])[0]
        return len(blobs)

    # -- reading the catalogue ----------------------------------------------------

    def get(self, ref: str) -> ModelVersion:
        """The version ``ref`` names, with its tensor table."""
        parsed = parse_ref(ref)
        with self._catalog() as catalog:
            return catalog.records([catalog.resolve(parsed)], with_tensors=True)[0]

    def list(
        self,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        *,
        arch: str | None = None,
        since: datetime | str | None = None,
        before: datetime | str | None = None,
        sort: str = "created",
        reverse: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ModelVersion]:
        """Versions matching every filter, newest first unless ``sort`` says otherwise.

        ``name`` is a model name or a glob (``res*``, ``team/*``); ``tags`` must all
        match; ``since``/``before`` bound the creation time (datetimes or ISO 8601
        strings, UTC unless they say otherwise); ``sort`` is ``created`` (newest
        first), ``name``, ``size`` (largest first) or ``params``; ``reverse`` flips
        it; ``limit``/``offset`` give one page.
        """
        filters = _filters(name, tags, arch, since, before)
        if sort not in SORTS:
            raise InvalidArgumentError(f"unknown sort {sort!r}: use {', '.join(SORTS)}")
        if (limit is not None and limit < 0) or offset < 0:
            raise InvalidArgumentError("limit and offset cannot be negative")
        with self._catalog() as catalog:
            rows = catalog.list_versions(
                **filters, sort=sort, reverse=reverse, limit=limit, offset=offset
            )
            return catalog.records(rows)

    def count(
        self,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        *,
        arch: str | None = None,
        since: datetime | str | None = None,
        before: datetime | str | None = None,
    ) -> int:
        """How many versions :meth:`list` would give with these filters and no limit."""
        with self._catalog() as catalog:
            return catalog.count_versions(**_filters(name, tags, arch, since, before))

    def lineage(self, ref: str) -> list[ModelVersion]:
        """The version, then its parent, grandparent, ... as recorded by ``push(parent=)``."""
        parsed = parse_ref(ref)
        with self._catalog() as catalog:
            return catalog.records(catalog.lineage(catalog.resolve(parsed)))

    def children(self, ref: str) -> list[ModelVersion]:
        """The versions whose parent (``push(parent=)``) is the version ``ref`` names."""
        parsed = parse_ref(ref)
        with self._catalog() as catalog:
            return catalog.records(catalog.children(catalog.resolve(parsed)))

    def alias(self, ref: str, alias: str) -> ModelVersion:
        """Point ``NAME:ALIAS`` at the version ``ref`` names, moving it if it pointed elsewhere."""
        parsed = parse_ref(ref)
        validate_alias(alias)
        with self._catalog(write=True) as catalog:
            version = catalog.resolve(parsed)
            previous = catalog.alias_target(version.model_id, alias)
            change = None
            if previous is None or previous[0] != version.id:  # a move to where it is: no change
                catalog.set_alias(version, alias)
                change = catalog.record_event(
                    "alias",
                    version,
                    None if previous is None else {"alias": alias, "version": previous[1]},
                    {"alias": alias, "version": version.version},
                )
            return replace(catalog.records([version])[0], change=change)

    def unalias(self, ref: str) -> ModelVersion:
        """Delete the alias in ``NAME:ALIAS``; returns the version it pointed at."""
        parsed = parse_ref(ref)
        if parsed.alias is None:
            raise InvalidArgumentError(f"{ref!r} names no alias: give NAME:ALIAS")
        with self._catalog(write=True) as catalog:
            version = catalog.resolve(parsed)
            catalog.delete_alias(version.model_id, parsed.alias)
            change = catalog.record_event(
                "unalias", version, {"alias": parsed.alias, "version": version.version}, None
            )
            return replace(catalog.records([version])[0], change=change)

    def describe(self, ref: str, description: str | None) -> ModelVersion:
        """Set (or with None, clear) a version's description."""
        parsed = parse_ref(ref)
        _check_description(description, clearing="describe(ref, None)")
        with self._catalog(write=True) as catalog:
            version = catalog.resolve(parsed)
            change = None
            if description != version.description:
                catalog.set_description(version.id, description)
                change = catalog.record_event(
                    "describe",
                    version,
                    {"description": version.description},
                    {"description": description},
                )
            return replace(catalog.records([catalog.version_by_id(version.id)])[0], change=change)

    def diff(self, a: str, b: str) -> Diff:
        """How version ``b`` differs from version ``a``, tensor by tensor.

        Tensors with the same digest count as identical without being read; only
        tensors that differ are read, to measure the largest absolute difference and
        the relative L2 norm of the change.
        """
        from .tensors import difference, from_buffer, parse_dtype

        opened_a, opened_b = self._views(a, verify=True), self._views(b, verify=True)
        record_a, record_b = opened_a.record, opened_b.record
        info_a = {t.name: t for t in _tensor_infos(opened_a.located)}
        info_b = {t.name: t for t in _tensor_infos(opened_b.located)}

        def value(opened: _Opened, t: TensorInfo) -> torch.Tensor:  # read only
            return from_buffer(opened.views[t.digest], parse_dtype(t.dtype), t.shape)

        added = [t for n, t in info_b.items() if n not in info_a]
        removed = [t for n, t in info_a.items() if n not in info_b]
        reshaped, retyped, changed = [], [], []
        identical = 0
        changed_bytes = sum(t.nbytes for t in added)
        for name, tb in info_b.items():
            ta = info_a.get(name)
            if ta is None:
                continue
            if ta.digest == tb.digest and ta.dtype == tb.dtype and ta.shape == tb.shape:
                identical += 1
                continue
            changed_bytes += tb.nbytes
            if ta.shape != tb.shape:
                reshaped.append((name, ta.shape, tb.shape))
            elif ta.dtype != tb.dtype:
                retyped.append((name, ta.dtype, tb.dtype))
            else:
                max_abs, rel = difference(value(opened_a, ta), value(opened_b, tb))
                changed.append(TensorChange(name, max_abs, rel, tb.nbytes))
        return Diff(
            a=record_a.ref,
            b=record_b.ref,
            added=added,
            removed=removed,
            reshaped=reshaped,
            dtype_changed=retyped,
            changed=changed,
            identical=identical,
            changed_bytes=changed_bytes,
            total_bytes=sum(t.nbytes for t in info_b.values()),
        )

    def remove(self, ref: str, *, force: bool = False) -> ModelVersion:
        """Delete a version from the catalogue; returns it as it was.

        Its tensors stay stored until :meth:`gc` finds no version using them, so other
        versions that share them are never affected. A version an alias points at is
        only deleted with ``force=True``, which deletes those aliases too. Version
        numbers are never reused.
        """
        parsed = parse_ref(ref)
        with self._catalog(write=True) as catalog:
            version = catalog.resolve(parsed)
            record = catalog.records([version])[0]
            if record.aliases and not force:
                names = ", ".join(f"{version.name}:{a}" for a in record.aliases)
                base = (
                    f"{record.ref} is what {names} point{'s' if len(record.aliases) == 1 else ''} "
                    "at; nothing was deleted: move the alias first, or remove it with"
                )
                raise InvalidArgumentError(
                    f"{base} force=True, which deletes the alias too",
                    cli=f"{base} --force, which deletes the alias too",
                )
            for alias in record.aliases:  # deleted with the version: each is history too
                catalog.record_event(
                    "unalias", version, {"alias": alias, "version": version.version}, None
                )
            snapshot = version_snapshot(record)
            children = catalog.children(version)
            if children:  # they lose their parent with it
                snapshot["children"] = [f"{c.name}:{c.version}" for c in children]
            catalog.record_event("remove", version, snapshot, None)
            catalog.delete_version(version.id)
            return record

    def tag(self, ref: str, tags: Mapping[str, Any]) -> ModelVersion:
        """Add or overwrite tags of a version (metadata only: the weights never change).

        The record returned has ``change``: the event with the old and new values of the
        tags that changed (None when none did)."""
        parsed = parse_ref(ref)
        clean = validate_tags(tags)
        if not clean:
            raise InvalidArgumentError("give at least one tag, such as {'stage': 'prod'}")
        with self._catalog(write=True) as catalog:
            version = catalog.resolve(parsed)
            old = catalog.tags_of(version.id)
            changed = {k: v for k, v in clean.items() if old.get(k) != v}
            change = None
            if changed:
                catalog.set_tags(version.id, changed)
                change = catalog.record_event(
                    "tag", version, {k: old[k] for k in changed if k in old}, changed
                )
            return replace(catalog.records([catalog.version_by_id(version.id)])[0], change=change)

    def untag(self, ref: str, keys: list[str] | tuple[str, ...]) -> ModelVersion:
        """Remove tags by key (one key, or a list of them); a key the version does not
        have is an error."""
        parsed = parse_ref(ref)
        if isinstance(keys, str):
            keys = [keys]
        if not keys:
            raise InvalidArgumentError("give at least one tag key to remove")
        with self._catalog(write=True) as catalog:
            version = catalog.resolve(parsed)
            old = catalog.tags_of(version.id)
            removed = catalog.remove_tags(version.id, keys)
            missing = [k for k in keys if k not in removed]
            if missing:
                raise InvalidArgumentError(
                    f"{version.name}:{version.version} has no tag {', '.join(map(repr, missing))}"
                )
            change = catalog.record_event("untag", version, {k: old[k] for k in removed}, {})
            return replace(catalog.records([catalog.version_by_id(version.id)])[0], change=change)

    def log(self, ref_or_name: str | None = None, *, limit: int | None = None) -> list[Event]:
        """The history, newest first: every push and every later change, who and when.

        With no argument, the whole registry's; with a NAME, every event of that model
        (versions since removed included); with a REF naming a version (``name:3``,
        ``name:latest``, ``name:ALIAS``, ``name@sha256:HEX``), that version's, an alias
        moved away from it included (``name:3`` also answers for a removed version).
        Every kind is a recorded event (``records.EVENT_KINDS`` says what their
        ``before`` and ``after`` hold): ``push`` (with the parent it had then), ``tag``,
        ``untag``, ``alias``, ``unalias``, ``describe``, ``remove``, ``import``,
        ``push-update``; pushes the history did not record (versions pushed before
        revision 0004, with actor ``unknown``, and imported ones, dated when they were
        first created) are read from the versions themselves, or from a removal's
        snapshot. ``limit`` keeps the newest that many.

        Raises InvalidReferenceError for a malformed NAME or REF, ModelNotFoundError
        for a name the registry never had, VersionNotFoundError for a version that is
        neither there nor in the history, InvalidArgumentError for a negative limit.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise InvalidArgumentError("limit must be an integer or None")
        if limit is not None and limit < 0:
            raise InvalidArgumentError("limit cannot be negative")
        parsed = None if ref_or_name is None else parse_ref(ref_or_name)
        whole_model = ref_or_name is not None and not any(c in ref_or_name for c in ":@")
        with self._catalog() as catalog:
            name = number = None
            if parsed is not None:
                name = parsed.name
                catalog.model_id(name)  # ModelNotFoundError for a name never used
                if parsed.version is not None:
                    number = parsed.version  # its history outlives the version
                elif not whole_model:
                    number = catalog.resolve(parsed).version
            events = catalog.events(name, number, limit=limit)
            pushes = catalog.pushes(name, number, limit=limit)
            if number is not None and not events and not pushes:
                catalog.resolve(parsed)  # type: ignore[arg-type]  # says why it is not there
        recorded = {(e.name, e.version) for e in events if e.kind == "push"}
        for event in events:  # the push of a removed version, from what its removal kept
            if event.kind == "remove" and (event.name, event.version) not in recorded:
                if isinstance(event.before, dict):
                    made = push_event(event.name, event.version, event.before)
                    if made is not None:
                        pushes.append(made)
        found = sorted(  # at one moment: a version's push before its events, in order made
            events + pushes,
            key=lambda e: (
                e.at,
                e.kind != "push",
                (e.version or 0) if e.kind == "push" else 0,  # pushes in the order made
                e.id or 0,
                e.version or 0,
            ),
            reverse=True,
        )
        return found[:limit] if limit is not None else found

    # -- the store: garbage collection and verification --------------------------

    def gc(self, *, dry_run: bool = False) -> GcReport:
        """Remove stored tensors that no version uses any more; say how many bytes that frees.

        Packs holding only unused tensors are deleted; packs holding some are rewritten
        with just the used ones (their bytes re-checked against their sha256 on the
        way). Files in the store that the catalogue does not know, left by crashed
        pushes, are deleted once they are an hour old (younger ones may belong to a
        push in progress). The catalogue changes in one transaction, committed after
        the rewritten packs are durable and before any file is deleted.
        """
        from .storage.packs import layout, placeholder_names

        with self._catalog(write=True) as catalog:
            live = catalog.live_digests()
            packs = catalog.packs()
            by_pack: dict[str, list[Any]] = {p: [] for p in packs}
            for blob, checksum in catalog.all_blobs():
                by_pack.setdefault(blob.pack_id, []).append((blob, checksum))
            dead_blobs, doomed, rewrites = [], [], []
            freed = 0
            for pack_id, nbytes in packs.items():
                blobs = by_pack.get(pack_id, [])
                keep = [(b, c) for b, c in blobs if b.digest in live]
                dead = [b.digest for b, _ in blobs if b.digest not in live]
                dead_blobs += dead
                if not keep:
                    doomed.append(pack_id)
                    freed += nbytes
                elif dead:
                    rewrites.append((pack_id, keep))
                    sizes = [b.nbytes for b, _ in keep]
                    freed += nbytes - layout(placeholder_names(len(sizes)), sizes).nbytes
            cutoff = time.time() - GC_GRACE_SECONDS
            orphans = [
                (path, st)
                for pack_id, path, st in self._store.files()
                if (pack_id is None or pack_id not in packs) and st.st_mtime < cutoff
            ]
            freed += sum(st.st_size for _, st in orphans)
            report = GcReport(
                dry_run=dry_run,
                bytes_freed=freed,
                blobs_removed=len(dead_blobs),
                packs_removed=len(doomed),
                packs_rewritten=len(rewrites),
                orphan_files_removed=len(orphans),
            )
            if dry_run:
                return report
            written = []
            try:
                for pack_id, keep in rewrites:
                    mapped = self._store.map(pack_id)
                    views = [pack_view(mapped, b.offset, b.nbytes, pack_id) for b, _ in keep]
                    new = self._store.start_pack(views)
                    written.append(new)
                    new.wait()
                    bad = [b.digest for (b, _), d in zip(keep, new.digests) if d != b.digest]
                    if bad:
                        base = (
                            f"pack {pack_id} holds {len(bad)} corrupt tensor"
                            f"{'s' if len(bad) != 1 else ''} (sha256:{bad[0][:12]}...); "
                            "gc stopped without changing anything"
                        )
                        raise IntegrityError(
                            f"{base}: verify() says which versions use them",
                            cli=f"{base}: `registry verify` says which versions use them",
                        )
                    catalog.add_pack_row(new.pack_id, new.nbytes)
                    for (blob, _), offset in zip(keep, new.offsets):
                        catalog.move_blob(blob.digest, new.pack_id, offset)
                catalog.delete_blobs(dead_blobs)
                catalog.delete_pack_rows(doomed + [p for p, _ in rewrites])
            except BaseException:
                for new in written:
                    self._store.abandon(new)
                raise
        for pack_id in doomed + [p for p, _ in rewrites]:
            self._store.discard(pack_id)
        for path, _ in orphans:
            path.unlink(missing_ok=True)
        return report

    def verify(self, ref: str | None = None) -> VerifyReport:
        """Re-hash stored tensors (of one version, or all of them) against their sha256.

        Reports every corrupt tensor (bytes that do not match the digest or the
        checksum) and every missing one (its pack file gone or truncated), naming
        the versions that use it. With ``ref``, counts are of that version's tensors
        (a stored tensor that several of its keys use counts for each key).
        """
        checked_ref = None
        with self._catalog() as catalog:
            if ref is None:
                blobs = catalog.all_blobs()
                checked, checked_bytes = len(blobs), sum(b.nbytes for b, _ in blobs)
            else:
                version = catalog.resolve(parse_ref(ref))
                checked_ref = f"{version.name}:{version.version}"
                seen: dict[str, Any] = {}
                located = catalog.tensor_locations(version.id)
                for loc in located:
                    seen.setdefault(
                        loc.digest,
                        (StoredBlob(loc.digest, loc.pack_id, loc.offset, loc.nbytes), loc.checksum),
                    )
                blobs = list(seen.values())
                # The user reads counts of the version's tensors, however they are stored.
                checked, checked_bytes = len(located), sum(loc.nbytes for loc in located)
        corrupt, missing = [], []
        by_pack: dict[str, list[Any]] = {}
        for blob, checksum in blobs:
            by_pack.setdefault(blob.pack_id, []).append((blob, checksum))
        for pack_id, items in by_pack.items():
            try:
                mapped = self._store.map(pack_id)
            except StorageError:
                missing += [b for b, _ in items]
                continue
            present = []
            for blob, checksum in items:
                if blob.offset + blob.nbytes > len(mapped):
                    missing.append(blob)
                else:
                    present.append((blob, checksum))
            data = [pack_view(mapped, b.offset, b.nbytes, pack_id) for b, _ in present]
            digests = sha256_many(data)
            sums = checksum_many(data)
            for (blob, checksum), digest, fast in zip(present, digests, sums):
                if digest != blob.digest or (checksum and fast != checksum):
                    corrupt.append(blob)
        with self._catalog() as catalog:
            users = catalog.users_of([b.digest for b in corrupt + missing])

        def problems(found: list[Any], kind: str) -> list[Problem]:
            return [
                Problem(b.digest, b.pack_id, kind, tuple(users.get(b.digest, ()))) for b in found
            ]

        return VerifyReport(
            checked=checked,
            checked_bytes=checked_bytes,
            corrupt=problems(corrupt, "corrupt"),
            missing=problems(missing, "missing"),
            ref=checked_ref,
        )

    # -- bundles -----------------------------------------------------------------------

    def export(
        self,
        refs: str | list[str] | tuple[str, ...],
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> ExportReport:
        """Write the versions ``refs`` name, with every tensor they use, to a tar bundle.

        Each tensor is checked against its sha256 on the way out. ``progress`` is
        called with the number of bytes of each tensor written. An existing file is
        replaced only with ``overwrite=True`` (else :class:`OutputExistsError`, raised
        before anything is read).
        """
        from .bundle import EXTRA_KEYS, write_bundle

        if isinstance(refs, str):
            refs = [refs]
        if not refs:
            raise InvalidArgumentError("name at least one version to export")
        from ._files import is_folder_path, refuse_existing

        if is_folder_path(path):
            raise InvalidArgumentError(
                f"{os.fspath(path)} is a folder: give the bundle's file name, such as "
                f"{Path(path) / 'bundle.tar'}"
            )
        if not overwrite:
            refuse_existing(path)
        records: dict[str, ModelVersion] = {}
        extras: dict[str, dict[str, Any]] = {}
        blobs: dict[str, memoryview] = {}
        for ref in refs:
            opened = self._views(ref, verify="sha256")
            record = opened.record
            records.setdefault(record.ref, replace(record, tensors=_tensor_infos(opened.located)))
            extras[record.ref] = {key: getattr(opened, key) for key in EXTRA_KEYS}
            blobs.update(opened.views)
        return write_bundle(
            Path(path), list(records.values()), blobs, progress, extras, overwrite=overwrite
        )

    def import_bundle(
        self,
        path: str | os.PathLike[str],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> ImportReport:
        """Add the versions of a bundle written by :meth:`export`.

        Names, tags, aliases, descriptions, lineage and provenance (who pushed each
        version, from where) are kept, and version numbers where this registry never
        used them (else the next free one). An imported version's ``created_at`` is
        when it entered this registry (so newest first means the same everywhere) and
        ``origin_created_at`` when it was first created. Each imported version is an
        ``import`` event in :meth:`log`, and an alias moved from a version here is an
        ``alias`` event. Versions whose weights are already stored under their name are
        not added again, and tensors already stored are not written again. The whole
        bundle is checked (members, manifest, every digest) before anything is stored;
        a bad bundle changes nothing.
        """
        from sqlalchemy.exc import IntegrityError as DBIntegrityError

        from . import provenance
        from .bundle import Bundle, ImportReport, in_lineage_order
        from .catalog import queries

        who = provenance.actor()
        bundle_path = os.path.abspath(os.fspath(path))

        with Bundle(path) as bundle:
            versions = in_lineage_order(bundle.versions)
            needed = sorted({t[3] for v in versions for t in v.tensors})
            with self._catalog() as catalog:
                present = catalog.known_digests(needed)
            missing = [d for d in needed if d not in present]
            data = []
            for digest in needed:  # every blob is checked, also those not stored again
                blob = bundle.blob(digest)
                if digest in present:
                    continue
                data.append(memoryview(blob))
                if progress is not None:
                    progress(data[-1].nbytes)
        self._ready()
        written = self._store.start_pack(data) if data else None
        committed = False
        notes: list[str] = []
        try:
            if written is not None and written.digests != missing:  # pragma: no cover
                raise IntegrityError("bundle blobs changed while they were being stored")
            checksums = checksum_many(data)
            for attempt in range(_PUSH_ATTEMPTS):
                outcome: list[tuple[str, str, bool]] = []
                ids: dict[str, int] = {}
                refs_here: dict[str, str] = {}  # bundle ref -> the version's ref here
                try:
                    with self._writer() as session, session.begin():
                        if written is not None:
                            queries.add_pack(
                                session,
                                written.pack_id,
                                written.nbytes,
                                [
                                    (d, o, v.nbytes, c)
                                    for d, o, v, c in zip(missing, written.offsets, data, checksums)
                                ],
                            )
                        for v in versions:
                            existing = queries.version_by_digest(session, v.name, v.digest)
                            if existing is not None:
                                here = f"{v.name}:{existing.version}"
                                parent_id = ids.get(v.parent) if v.parent else None
                                changed, kept, added = _add_to_existing(
                                    session,
                                    existing,
                                    here,
                                    tags=v.tags,
                                    description=v.description,
                                    parent=(
                                        (refs_here[v.parent], parent_id)
                                        if parent_id is not None
                                        else None
                                    ),
                                    strict=False,
                                )
                                added_aliases = []
                                for alias in v.aliases:  # only aliases this model lacks
                                    target = queries.alias_target(session, existing.model_id, alias)
                                    if target is None:
                                        queries.set_alias(
                                            session, existing.model_id, alias, existing.id
                                        )
                                        added_aliases.append(alias)
                                        changed += (f"alias {alias}",)
                                    elif target != existing.id:
                                        kept += (f"{v.name}:{alias} points at another version",)
                                if added_aliases:
                                    added["aliases"] = added_aliases
                                if added:
                                    queries.record_event(
                                        session,
                                        "import",
                                        v.name,
                                        existing.version,
                                        existing.id,
                                        {k: None for k in added},
                                        {
                                            "bundle": bundle_path,
                                            "from": v.ref,
                                            "already": here,
                                            **added,
                                        },
                                        actor=who,
                                    )
                                if changed:
                                    notes.append(
                                        f"{v.ref} is {here} here; added {', '.join(changed)}"
                                    )
                                if kept:
                                    notes.append(
                                        f"{v.ref} is {here} here, which keeps its own: "
                                        + "; ".join(kept)
                                    )
                                ids[v.ref] = existing.id
                                refs_here[v.ref] = here
                                outcome.append((v.ref, here, False))
                                continue
                            parent_id = ids.get(v.parent) if v.parent else None
                            if v.parent and parent_id is None:
                                notes.append(
                                    f"{v.ref}: its parent {v.parent} is not in the bundle; "
                                    "lineage not kept"
                                )
                            model, number = queries.next_version(session, v.name, wanted=v.version)
                            row = queries.add_version(
                                session,
                                model,
                                number,
                                digest=v.digest,
                                arch=v.arch,
                                arch_kwargs=v.arch_kwargs,
                                description=v.description,
                                param_count=v.param_count,
                                torch_version=v.torch_version,
                                source_format=v.source_format,
                                tensors=v.tensors,
                                tags=v.tags,
                                parent_id=parent_id,
                                state_metadata=v.state_metadata,
                                file_metadata=v.file_metadata,
                                assumed_metadata=v.assumed_metadata,
                                origin_created_at=v.origin_created_at or v.created_at,
                                **{key: getattr(v, key) for key in PROVENANCE_FIELDS},
                            )
                            queries.record_event(
                                session,
                                "import",
                                v.name,
                                number,
                                row.id,
                                None,
                                {
                                    "bundle": bundle_path,
                                    "from": v.ref,
                                    "origin_created_at": v.origin_created_at or v.created_at,
                                    "aliases": list(v.aliases),
                                },
                                actor=who,
                            )
                            for alias in v.aliases:
                                moved = queries.set_alias(session, model.id, alias, row.id)
                                if moved is not None and moved != row.id:
                                    was = queries.version_number(session, moved)
                                    notes.append(
                                        f"moved {v.name}:{alias} from {v.name}:{was} "
                                        f"to {v.name}:{number}"
                                    )
                                    queries.record_event(
                                        session,
                                        "alias",
                                        v.name,
                                        number,
                                        row.id,
                                        {"alias": alias, "version": was},
                                        {"alias": alias, "version": number},
                                        actor=who,
                                    )
                            ids[v.ref] = row.id
                            refs_here[v.ref] = f"{v.name}:{number}"
                            outcome.append((v.ref, f"{v.name}:{number}", True))
                        if written is not None:
                            written.wait()
                    committed = True
                    break
                except DBIntegrityError:
                    notes.clear()
                    if attempt == _PUSH_ATTEMPTS - 1:
                        raise
        finally:
            if written is not None and not committed:
                self._store.abandon(written)
        return ImportReport(
            versions=outcome,
            tensors_written=len(missing),
            bytes_written=written.nbytes if written else 0,
            notes=tuple(notes),
        )

    # -- push -------------------------------------------------------------------------

    def push(
        self,
        source: Any,
        name: str | None = None,
        *,
        arch: str | None = None,
        arch_kwargs: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
        parent: str | None = None,
        strip_prefix: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ModelVersion:
        """Store weights as a new version of ``name`` and return it.

        ``source`` is a path to a ``.pth``/``.safetensors`` file, a state dict, or an
        ``nn.Module`` (its ``state_dict()``). The weights must be what torch's own
        ``arch(**arch_kwargs).load_state_dict(weights, strict=True)`` accepts, checked
        on the meta device before anything is stored. Without ``arch``, a module is
        recorded by its registered name or import path with the arguments in
        ``arch_kwargs`` or its ``config``/``hparams``; weights alone are matched
        against every known architecture and the one that fits is used. Keys that
        carry a wrapper's prefix (``module.``, ``_orig_mod.``, ``model.``) have it
        stripped where that makes them fit, or as ``strip_prefix`` says. A classifier
        whose head size differs from the default gets ``num_classes`` inferred.
        ``pushed.notes`` says what was done.

        Kept with the version: which keys were one storage (tied weights), the state
        dict's ``_metadata`` (module versions) and a safetensors file's header
        metadata. Weights identical to a version already under ``name`` return that
        version (``pushed.created`` is False) and write nothing, unless the store's copy
        of some tensor turns out damaged: then the good bytes are written and heal
        every version that uses them (``pushed.healed``). ``parent`` names the version
        these weights were fine-tuned from; :meth:`lineage` follows it.
        """
        from . import architectures, fitting
        from .sharing import manifest_terms, storage_layout, to_columns
        from .tensors import check_storable, dtype_name, raw_bytes

        if isinstance(source, (str, os.PathLike)):
            from .checkpoints import check_file

            check_file(source)  # a missing file or a folder says so before its name is judged
        if name is None:
            if not isinstance(source, (str, os.PathLike)):
                raise InvalidArgumentError(
                    "name= is required when pushing a state dict or a module"
                )
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
        else:
            validate_name(name)
        validate_arch_kwargs(arch_kwargs)
        clean_tags = validate_tags(tags)
        _check_description(description)
        if arch is not None and (not isinstance(arch, str) or not arch):
            raise InvalidArgumentError(
                "arch= must name an architecture, e.g. 'resnet18'",
                cli="--arch must name an architecture, e.g. resnet18",
            )
        parent_id = parent_ref = None
        if parent is not None:
            with self._catalog() as catalog:
                parent_row = catalog.resolve(parse_ref(parent))
            parent_id, parent_ref = parent_row.id, f"{parent_row.name}:{parent_row.version}"
        self._ready()
        from . import provenance

        pending = provenance.start(source)  # git answers while the weights are read

        checkpoint = _read_source(source)
        for key, value in checkpoint.state_dict.items():
            check_storable(key, value)
        notes = list(checkpoint.notes)
        encoded = metadata.encode(checkpoint.metadata, notes)
        fitted = fitting.fit(
            source,
            checkpoint.state_dict,
            encoded,
            arch=arch,
            arch_kwargs=arch_kwargs,
            strip_prefix=strip_prefix,
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
        owners, views = [], []  # owners keep the memory behind each view alive
        for value in values:
            owner, view = raw_bytes(value)
            owners.append(owner)
            views.append(view)
        checksums = checksum_many(views)
        state = fitted.state  # the same tensors in the same order; keys maybe without a prefix
        names = list(state)
        shapes = [list(v.shape) for v in values]
        dtypes = [dtype_name(v.dtype) for v in values]
        columns = [to_columns(entry, shape) for entry, shape in zip(shared, shapes)]
        terms = manifest_terms(names, shared)

        import torch
        from sqlalchemy.exc import IntegrityError as DBIntegrityError

        from .catalog import queries

        pushed = pending.result()  # who, where from: kept with a new version
        for _round in range(_PUSH_ATTEMPTS):
            with self._catalog() as catalog:
                stored = catalog.blobs_by_checksum(checksums)
            digests, fresh, damaged = self._match_stored(owners, views, checksums, stored)
            new = [views[i] for i in fresh]
            written = self._store.start_pack(new, progress) if new else None
            if written is not None:
                for i, digest in zip(fresh, written.digests):
                    digests[i] = digest
            digests = [digests[j] if isinstance(j, int) else j for j in digests]  # type: ignore[misc]
            new_digests = set(written.digests if written else ())
            reused = set(digests) - new_digests
            heal = (
                [
                    (digest, offset, views[i].nbytes, checksums[i])
                    for i, digest, offset in zip(fresh, written.digests, written.offsets)
                    if digest in damaged.get(i, ())
                ]
                if written is not None
                else []
            )
            entries = [
                (n, d, s, h, view.nbytes, group, view_column)
                for n, d, s, h, view, (group, view_column) in zip(
                    names, dtypes, shapes, digests, views, columns
                )
            ]
            version_digest = manifest_digest(
                (n, d, s, h, t) for n, d, s, h, t in zip(names, dtypes, shapes, digests, terms)
            )
            tensors_written = sum(d in new_digests for d in digests)
            said = (*notes, _healed_note(heal, names, digests)) if heal else tuple(notes)
            keep_pack = committed = stale = False
            try:
                for attempt in range(_PUSH_ATTEMPTS):
                    try:
                        with self._writer() as session, session.begin():
                            existing = queries.version_by_digest(session, name, version_digest)
                            changed: tuple[str, ...] = ()
                            if existing is not None:  # nothing the user asked for is dropped
                                changed, _kept, added = _add_to_existing(
                                    session,
                                    existing,
                                    f"{name}:{existing.version}",
                                    tags=clean_tags,
                                    description=description,
                                    parent=(parent_ref, parent_id)
                                    if parent_ref is not None
                                    else None,
                                    arch=(
                                        (fitted.arch.name, fitted.kwargs)
                                        if arch is not None or arch_kwargs
                                        else None
                                    ),
                                )
                                if added:  # before: it had none of these
                                    queries.record_event(
                                        session,
                                        "push-update",
                                        name,
                                        existing.version,
                                        existing.id,
                                        {k: None for k in added},
                                        added,
                                        actor=(pushed.user, pushed.host),
                                    )
                            if existing is not None and not heal:
                                result = existing.id, PushReport(False, 0, 0, said, changed=changed)
                                break
                            if queries.missing_blobs(session, reused):
                                # `registry gc` removed stored tensors this push found a
                                # moment ago; look again (and write them) in a new round.
                                stale = True
                                break
                            if written is not None:
                                queries.add_pack(
                                    session,
                                    written.pack_id,
                                    written.nbytes,
                                    [
                                        (d, offset, views[i].nbytes, checksums[i])
                                        for d, offset, i in zip(
                                            written.digests, written.offsets, fresh
                                        )
                                    ],
                                )
                                queries.heal_blobs(session, written.pack_id, heal)
                            written_bytes = written.nbytes if written else 0
                            if existing is not None:
                                result = (
                                    existing.id,
                                    PushReport(
                                        False,
                                        written_bytes,
                                        0,
                                        said,
                                        healed=len(heal),
                                        changed=changed,
                                    ),
                                )
                            else:
                                model, number = queries.next_version(session, name)
                                version = queries.add_version(
                                    session,
                                    model,
                                    number,
                                    digest=version_digest,
                                    arch=fitted.arch.name,
                                    arch_kwargs=fitted.kwargs,
                                    description=description,
                                    param_count=fitted.param_count,
                                    torch_version=torch.__version__,
                                    source_format=checkpoint.source_format,
                                    tensors=entries,
                                    tags=clean_tags,
                                    parent_id=parent_id,
                                    state_metadata=fitted.metadata,
                                    file_metadata=checkpoint.file_metadata,
                                    assumed_metadata=fitted.assumed,
                                    arch_module=arch_module,
                                    **pushed.columns(),
                                )
                                # The push as it was (its parent then, whatever happens
                                # to the parent later), for the history.
                                queries.record_event(
                                    session,
                                    "push",
                                    name,
                                    number,
                                    version.id,
                                    None,
                                    {
                                        key: value
                                        for key, value in {
                                            "digest": f"sha256:{version_digest}",
                                            "arch": fitted.arch.name,
                                            "arch_kwargs": fitted.kwargs,
                                            "parent": parent_ref,
                                            "torch_version": torch.__version__,
                                            **pushed.columns(),
                                        }.items()
                                        if key in PUSH_KEYS
                                    },
                                    actor=(pushed.user, pushed.host),
                                    at=version.created_at,
                                )
                                result = (
                                    version.id,
                                    PushReport(
                                        True,
                                        written_bytes,
                                        tensors_written,
                                        said,
                                        healed=len(heal),
                                    ),
                                )
                            if written is not None:
                                written.wait()  # the pack is durable before the rows naming it
                                keep_pack = True
                        committed = True
                        break
                    except DBIntegrityError:
                        # A concurrent push created the same model or version first; retry.
                        keep_pack = False
                        if attempt == _PUSH_ATTEMPTS - 1:
                            raise
            finally:
                if written is not None and not (committed and keep_pack):
                    self._store.abandon(written)
            if not stale:
                break
        else:
            raise StorageError("stored tensors kept disappearing during the push; push again")
        return self._record(*result)

    def _match_stored(
        self,
        owners: list[torch.Tensor],
        views: list[memoryview],
        checksums: list[str],
        stored: dict[str, list[Any]],
    ) -> tuple[list[Any], list[int], dict[int, set[str]]]:
        """Which tensors the store holds already, and which hold the same bytes.

        Returns, per tensor, its digest if stored, or the index of the earlier tensor
        of this push with the same bytes, or None (new bytes); the indices whose
        bytes are new, each distinct content once; and, per new index, the digests of
        stored copies that had its checksum but not its bytes, or could not be read.
        A checksum match is confirmed byte for byte against the stored (or earlier)
        bytes before it counts: XXH3 is fast, not collision resistant. A stored copy
        that fails the comparison while the push's bytes turn out to have its digest
        is damaged: the caller heals it.
        """
        result: list[Any] = [None] * len(views)
        reps: list[int] = []  # the first tensor with each distinct content
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

        maps: dict[str, mmap.mmap | None] = {}
        for i in reps:
            for blob in stored.get(checksums[i], ()):
                if blob.pack_id not in maps:
                    try:
                        maps[blob.pack_id] = self._store.map(blob.pack_id)
                    except StorageError:
                        maps[blob.pack_id] = None  # a missing pack: its tensors are damaged

        damaged: dict[int, set[str]] = {}

        def stored_digest(i: int) -> str | None:
            for blob in stored.get(checksums[i], ()):
                if blob.nbytes != views[i].nbytes:
                    continue
                mapped = maps[blob.pack_id]
                try:
                    if mapped is not None and same_bytes(
                        pack_view(mapped, blob.offset, blob.nbytes, blob.pack_id), views[i]
                    ):
                        return blob.digest
                except StorageError:
                    pass  # a truncated pack
                damaged.setdefault(i, set()).add(blob.digest)
            return None

        # Comparing is memory-bound and numpy releases the GIL: large tensors on every
        # core, small ones here (a thread hop costs more than comparing them).
        large = [
            i for i in reps if views[i].nbytes >= _PARALLEL_COMPARE and stored.get(checksums[i])
        ]
        found: dict[int, str | None] = {}
        with ThreadPoolExecutor(max_workers=config.HASH_THREADS) as pool:
            futures = {i: pool.submit(stored_digest, i) for i in large}
            for i in reps:
                if i not in futures:
                    found[i] = stored_digest(i) if stored.get(checksums[i]) else None
            for i, future in futures.items():
                found[i] = future.result()
        fresh = [i for i in reps if found[i] is None]
        for i in reps:
            result[i] = found[i]
        return result, fresh, damaged

    def _record(self, version_id: int, report: PushReport) -> ModelVersion:
        with self._catalog() as catalog:
            record = catalog.records([catalog.version_by_id(version_id)])[0]
        return replace(record, pushed=report)

    # -- reading weights ----------------------------------------------------------

    def _open(self, ref: str, verify: bool | str) -> _Opened:
        opened = self._views(ref, verify)
        opened.state = _tensors(opened.located, opened.views, opened.state_metadata)
        return opened

    def _views(self, ref: str, verify: bool | str) -> _Opened:
        """The version, where its tensors are, and a checked view of each distinct blob."""
        if verify not in VERIFY_MODES:
            raise InvalidArgumentError(
                f"verify={verify!r}: use True (checksums), 'sha256' (full digests) or False"
            )
        parsed = parse_ref(ref)
        for attempt in range(2):
            with self._catalog() as catalog:
                row = catalog.resolve(parsed)
                record = catalog.records([row])[0]
                located = catalog.tensor_locations(row.id)
                state_metadata, file_metadata, assumed = catalog.version_metadata(row.id)
            if len(located) != record.tensor_count:
                raise IntegrityError(
                    f"{record.ref} lists {record.tensor_count} tensors but the catalogue "
                    f"locates {len(located)}; the catalogue is damaged"
                )
            try:
                maps = {p: self._store.map(p) for p in dict.fromkeys(b.pack_id for b in located)}
                break
            except StorageError:
                # `registry gc` may have just moved these tensors to a new pack; look again.
                if attempt:
                    raise
        views: dict[str, memoryview] = {}
        for blob in located:
            if blob.digest not in views:
                views[blob.digest] = pack_view(
                    maps[blob.pack_id], blob.offset, blob.nbytes, blob.pack_id
                )
        if verify:
            bad = _corrupt_blobs(views, {b.digest: b.checksum for b in located}, verify)
            if bad:
                names = [t.name for t in located if t.digest in bad]
                shown = ", ".join(names[:5]) + (
                    f" and {len(names) - 5} more" if len(names) > 5 else ""
                )
                base = (
                    f"{record.ref}: stored bytes of {len(names)} tensor"
                    f"{'s' if len(names) != 1 else ''} do not match their digest ({shown}); "
                    "the tensor store is corrupt: pushing the original weights again heals it"
                )
                raise IntegrityError(
                    f"{base}, and verify() finds every damaged tensor",
                    cli=f"{base}, and `registry verify` finds every damaged tensor",
                )
        return _Opened(record, located, views, state_metadata, file_metadata, assumed)

    def load_state_dict(self, ref: str, *, verify: bool | str = True) -> dict[str, torch.Tensor]:
        """The stored state dict of ``ref``: an ``OrderedDict`` in the original key order.

        It is what was pushed, by torch's rules: keys that were one storage (tied
        weights) share one storage again, every other key has memory of its own
        (whatever its value), and the state dict's ``_metadata`` (module versions)
        is set as it was, if it had one. Tensors are copy-on-write views of the tensor
        store (or copies, for a second key with the same bytes): writing to them never
        changes what is stored. Every tensor's bytes are checked against the XXH3-128
        checksum stored at push (~30 GB/s); ``verify="sha256"`` re-computes the sha256
        digests instead (~2 GB/s a core), ``verify=False`` skips the check.
        """
        return self._open(ref, verify).state

    def load(
        self,
        ref: str,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        strict: bool = True,
        verify: bool | str = True,
    ) -> nn.Module:
        """Rebuild the version's architecture with its stored arguments, weights in, eval mode.

        The weights go in through the module's own ``load_state_dict`` (on the meta
        device, assigned without a copy), with the module versions they were pushed
        with. ``device`` is where the module ends up; ``dtype`` casts floating-point
        tensors (e.g. ``torch.bfloat16``; integer buffers keep theirs);
        ``strict=False`` tolerates keys the architecture no longer has or lacks (new
        parameters keep their fresh initialisation). ``verify`` is as for
        :meth:`load_state_dict`.
        """
        from . import architectures

        _check_dtype(dtype)
        opened = self._open(ref, verify)
        record = opened.record
        try:
            architecture = architectures.resolve_stored(record.arch, record.arch_module)
        except ArchitectureNotFoundError as exc:
            raise ArchitectureNotFoundError(
                f"{exc}; {record.ref} was stored as {record.arch}"
                f"({format_kwargs(record.arch_kwargs)})"
            ) from None
        return architectures.instantiate(
            architecture,
            record.arch_kwargs,
            _cast(opened.state, dtype),
            device,
            strict=strict,
            metadata=opened.module_metadata,
        )

    def load_into(
        self,
        module: nn.Module,
        ref: str,
        *,
        strict: bool = True,
        verify: bool | str = True,
    ) -> nn.Module:
        """Copy the weights of ``ref`` into a module the caller built; returns that module.

        The module keeps its device, dtypes and mode; shapes must match (and with
        ``strict``, the keys).
        """
        import warnings

        from .architectures import with_metadata

        opened = self._open(ref, verify)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module.load_state_dict(
                    with_metadata(opened.state, opened.module_metadata), strict=strict
                )
        except Exception as exc:  # torch's RuntimeError, or a module's own check
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            detail = "; ".join(lines[1:] or lines[:1]) or type(exc).__name__
            raise ArchitectureMismatchError(
                f"{ref} does not fit {type(module).__name__}: {detail}"
            ) from None
        return module

    def identify(
        self, source: Any, *, limit: int = 5, strip_prefix: str | None = None
    ) -> list[Match]:
        """The known architectures whose key/shape signature best fits these weights.

        Keys under a wrapper's prefix (``module.``, ``_orig_mod.``, ``model.``) are
        tried without it too, as :meth:`push` does.
        """
        from . import fitting

        checkpoint = _read_source(source)
        return fitting.identify(checkpoint.state_dict, limit, strip_prefix)

    def architectures(self) -> list[tuple[str, str]]:
        """(name, source) of every architecture that can be rebuilt by name."""
        from . import architectures

        return architectures.available()

    def pull(
        self,
        ref: str,
        path: str | os.PathLike[str] | None = None,
        *,
        format: str | None = None,
        overwrite: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> Path:
        """Write the weights of ``ref`` to a file plain torch (or safetensors) reads back.

        The format follows ``format``, else the file's suffix (``.safetensors``), else
        ``pth``; a ``format`` the suffix contradicts (safetensors into ``x.pth``)
        raises InvalidArgumentError. The default file name is ``NAME-vVERSION.pth``
        (``.safetensors``), in the current folder, or in ``path`` when that is a
        folder (an existing one, or a path ending in ``/``, which is created). An
        existing file is never replaced unless ``overwrite=True``
        (:class:`OutputExistsError`, raised before anything is read). Every tensor is
        verified against its digest on the way out; the file gets the mode the umask
        gives any new file. Returns the path written.
        """
        from ._files import pull_target, refuse_existing

        if format is not None and format not in PULL_FORMATS:
            raise InvalidArgumentError(f"unknown format {format!r}: choose pth or safetensors")
        with self._catalog() as catalog:
            row = catalog.resolve(parse_ref(ref))
        exact = f"{row.name}:{row.version}"  # the same version, even if `ref` moves meanwhile
        target, format = pull_target(path, format, f"{row.name.replace('/', '-')}-v{row.version}")
        if target.is_dir():
            raise StorageError(f"cannot write {target}: it is a folder")
        if not overwrite:
            refuse_existing(target)
        opened = self._open(exact, verify="sha256")
        _write_weights(opened, target, format, progress, overwrite=overwrite)
        return target


class _Opened:
    """A version opened for reading: its record, tensor locations, checked views of its
    blobs, what its source carried besides tensors, and (once built) its state dict."""

    def __init__(
        self,
        record: ModelVersion,
        located: list[Location],
        views: dict[str, memoryview],
        state_metadata: Any,
        file_metadata: Any,
        assumed_metadata: Any,
    ):
        self.record, self.located, self.views = record, located, views
        self.state_metadata = state_metadata
        self.file_metadata = file_metadata
        self.assumed_metadata = assumed_metadata
        self.state: Any = None

    @property
    def module_metadata(self) -> Any:
        """The ``_metadata`` a module loading these weights reads: as pushed, else the
        module versions recorded at push for weights that carried none, else none."""
        return metadata.decode(
            self.state_metadata if self.state_metadata is not None else self.assumed_metadata
        )


def _add_to_existing(
    session: Session,
    existing: Any,
    ref: str,
    *,
    tags: Mapping[str, str],
    description: str | None,
    parent: tuple[str, int] | None,
    arch: tuple[str, Mapping[str, Any]] | None = None,
    strict: bool = True,
) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, Any]]:
    """Give a version that already holds the given weights what the caller asked for.

    Tags it lacks are added, and a description or parent where it has none. Anything
    that would replace what the version has (another description, parent,
    architecture or tag value) is a conflict: with ``strict`` (a push) it raises
    :class:`ConflictError` and changes nothing; otherwise (an import) the version keeps
    what it has. Returns one phrase per change, one per conflict kept, and the changes
    as a dict (``tags``, ``description``, ``parent``) for the event that records them.
    """
    from .catalog import queries

    conflicts: list[str] = []
    python_fix: list[str] = []
    cli_fix: list[str] = []
    if arch is not None and (existing.arch, dict(existing.arch_kwargs or {})) != (
        arch[0],
        dict(arch[1]),
    ):
        conflicts.append(
            f"its architecture is {existing.arch}({format_kwargs(existing.arch_kwargs or {})}), "
            f"not {arch[0]}({format_kwargs(arch[1])})"
        )
    new_description = description if existing.description is None else None
    if description is not None and existing.description not in (None, description):
        conflicts.append(f"its description is {existing.description!r}, not {description!r}")
        python_fix.append("change it with describe()")
        cli_fix.append("change it with `registry describe`")
    parent_id = None
    if parent is not None and existing.parent_id != parent[1]:
        if existing.parent_id is not None:
            was = queries.version_ref(session, existing.parent_id)
            conflicts.append(f"its parent is {was}, not {parent[0]}")
        elif parent[1] == existing.id or existing.id in queries.ancestors(session, parent[1]):
            conflicts.append(f"{parent[0]} descends from it, so it cannot be its parent")
        else:
            parent_id = parent[1]
    stored_tags = queries.version_tags(session, existing.id)
    clashing = [k for k, v in tags.items() if k in stored_tags and stored_tags[k] != v]
    if clashing:
        conflicts.append(
            ", ".join(f"its tag {k} is {stored_tags[k]!r}, not {tags[k]!r}" for k in clashing)
        )
        python_fix.append("change it with tag()")
        cli_fix.append("change it with `registry tag`")
    if conflicts and strict:
        if len(python_fix) < len(conflicts):  # an architecture or a parent: fixed for good
            python_fix.append("to record those, push under another name=")
            cli_fix.append("to record those, push under another --name")
        base = f"identical weights are already stored as {ref}, but " + "; ".join(conflicts)
        python = f"{base}; nothing was changed ({'; '.join(python_fix)})"
        cli = f"{base}; nothing was changed ({'; '.join(cli_fix)})"
        raise ConflictError(python, cli=cli)
    new_tags = {k: v for k, v in tags.items() if k not in stored_tags}
    queries.add_to_version(
        session, existing, tags=new_tags, description=new_description, parent_id=parent_id
    )
    added: dict[str, Any] = {}
    changed = [f"tag {k}={v}" for k, v in new_tags.items()]
    if new_tags:
        added["tags"] = new_tags
    if new_description is not None:
        added["description"] = new_description
        changed.append(f"description {new_description!r}")
    if parent_id is not None:
        added["parent"] = parent[0]  # type: ignore[index]
        changed.append(f"parent {parent[0]}")  # type: ignore[index]
    return tuple(changed), tuple(conflicts), added


def _filters(
    name: str | None,
    tags: Mapping[str, str] | None,
    arch: str | None,
    since: datetime | str | None,
    before: datetime | str | None,
) -> dict[str, Any]:
    """Validated keyword arguments for the catalogue's list and count queries."""
    if name is not None:
        if any(c in name for c in "*?"):
            if not name.replace("*", "a").replace("?", "a"):
                raise InvalidArgumentError("empty name pattern")
            validate_name(name.replace("*", "a").replace("?", "a"))
        else:
            validate_name(name)
    if arch is not None and (not isinstance(arch, str) or not arch):
        raise InvalidArgumentError("arch must be a non-empty string")
    return {
        "name": name,
        "tags": validate_tags(tags),
        "arch": arch,
        "since": parse_date(since, "since"),
        "before": parse_date(before, "before"),
    }


def _corrupt_blobs(
    views: Mapping[str, memoryview], checksums: Mapping[str, str | None], mode: bool | str
) -> set[str]:
    """Digests whose bytes fail the check: the checksum where known, else the sha256."""
    if mode == "sha256":
        fast, full = [], list(views)
    else:
        fast = [d for d in views if checksums.get(d)]
        full = [d for d in views if not checksums.get(d)]
    bad = {d for d, a in zip(fast, checksum_many([views[d] for d in fast])) if a != checksums[d]}
    bad |= {d for d, a in zip(full, sha256_many([views[d] for d in full])) if a != d}
    return bad


def _tensors(
    located: list[Location], views: Mapping[str, memoryview], state_metadata: Any = None
) -> dict[str, torch.Tensor]:
    """The state dict over ``views``, with exactly the storage sharing recorded at push
    (see ``registry.sharing``), and its ``_metadata`` if it had one."""
    from collections import OrderedDict

    from .sharing import materialize

    tensors = materialize(located, views)
    state: OrderedDict[str, torch.Tensor] = OrderedDict(
        (t.name, tensor) for t, tensor in zip(located, tensors)
    )
    decoded = metadata.decode(state_metadata)
    if decoded is not None:
        state._metadata = decoded  # type: ignore[attr-defined]
    return state


def _tensor_infos(located: list[Location]) -> tuple[TensorInfo, ...]:
    """The tensor table that a version's locations already carry (no second query)."""
    return tuple(
        TensorInfo(t.name, t.dtype, tuple(t.shape), t.digest, t.nbytes, t.shared) for t in located
    )


def _check_description(description: Any, *, clearing: str | None = None) -> None:
    """A description is None or text with something in it."""
    if description is not None and not isinstance(description, str):
        raise InvalidArgumentError("description must be a string or None")
    if description is not None and not description.strip():
        how = f": to remove one, {clearing}" if clearing else ""
        raise InvalidArgumentError(
            f"an empty description says nothing{how}",
            cli=f"an empty description says nothing{': to remove one, use --clear' if clearing else ''}",
        )


def _check_dtype(dtype: Any) -> None:
    """``dtype`` for :meth:`Registry.load`: None or a floating-point ``torch.dtype``."""
    import torch

    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InvalidArgumentError(
            f"dtype={dtype!r}: give a floating-point torch.dtype (torch.bfloat16, "
            "torch.float16, ...) or None; integer buffers always keep theirs"
        )


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Floating tensors cast to ``dtype``; keys that were the same view of one storage
    (tied weights) share their cast tensor."""
    if dtype is None:
        return state
    cast: dict[tuple[Any, ...], torch.Tensor] = {}
    out = type(state)()
    for key, value in state.items():
        if value.is_floating_point() and value.dtype != dtype:
            same = (
                value.untyped_storage()._cdata,
                value.storage_offset(),
                tuple(value.shape),
                value.stride(),
                value.dtype,
            )
            if same not in cast:
                cast[same] = value.to(dtype)
            value = cast[same]
        out[key] = value
    if hasattr(state, "_metadata"):
        out._metadata = state._metadata  # type: ignore[attr-defined]
    return out


def _read_source(source: Any) -> Checkpoint:
    """The state dict, source format, notes and metadata of a path, a mapping or a module."""
    import warnings

    import torch

    from .checkpoints import Checkpoint, read_checkpoint, unwrap

    if isinstance(source, (str, os.PathLike)):
        return read_checkpoint(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(source, torch.nn.Module):
            state, meta, notes = unwrap(source.state_dict(), "the module's state dict")
            return Checkpoint(state, "module", notes, metadata=meta)
        if isinstance(source, Mapping):
            state, meta, notes = unwrap(source, "the given state dict")
            return Checkpoint(state, "state_dict", notes, metadata=meta)
    raise InvalidArgumentError(
        f"cannot push a {type(source).__name__}: give a file path, a state dict or an nn.Module"
    )


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


class _Counting:
    """A binary file that reports how many bytes went through each write."""

    def __init__(self, raw: Any, progress: Callable[[int], None]):
        self._raw, self._progress = raw, progress

    def write(self, data: Any) -> int:
        written = self._raw.write(data)
        self._progress(written)
        return written

    def flush(self) -> None:
        self._raw.flush()

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, *args: Any) -> int:
        return self._raw.seek(*args)


def _write_weights(
    opened: _Opened,
    target: Path,
    format: str,
    progress: Callable[[int], None] | None = None,
    *,
    overwrite: bool,
) -> None:
    """Write atomically: a temporary file in the target folder, then rename.

    A ``.pth`` is the state dict as pushed (storage sharing and ``_metadata``
    included); a ``.safetensors`` file cannot share storage, so each key gets its own
    bytes, and its header carries the pushed file's metadata, ``format: pt`` and the
    registry's keys.
    """
    import torch

    from ._files import replacing
    from .sharing import contiguous_strides

    state, record = opened.state, opened.record
    with replacing(target, overwrite=overwrite) as tmp:
        if format == "safetensors":
            from safetensors.torch import save_file

            seen: set[int] = set()
            unshared = {}
            for key, value in state.items():
                storage = value.untyped_storage()._cdata if value.numel() else None
                # safetensors refuses shared or strided tensors: give repeats their own copy.
                if storage in seen or value.stride() != contiguous_strides(value.shape):
                    value = value.clone(memory_format=torch.contiguous_format)
                seen.add(storage)
                unshared[key] = value
            registry_keys = {
                "registry.ref": record.ref,
                "registry.digest": f"sha256:{record.digest}",
                "registry.arch": record.arch,
                "registry.arch_kwargs": json.dumps(record.arch_kwargs, sort_keys=True),
            }
            save_file(
                unshared,
                str(tmp),
                metadata=metadata.safetensors_header(opened.file_metadata, registry_keys),
            )
            if progress is not None:
                progress(record.total_bytes)
        else:
            with open(tmp, "wb") as raw:
                torch.save(state, _Counting(raw, progress) if progress else raw)
