"""Catalogue queries and writes, each taking an open Session (the API owns the unit of work)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from .models import Alias, Blob, Event, Model, Pack, Tag, TensorRow, Version, utcnow
from .reader import chunks, jsonable

#: Rows or IN-list items per statement here: a row of `tensors` binds 9 parameters,
#: and SQLite allows 32766 in one statement.
_CHUNK = 900


def version_by_digest(session: Session, name: str, digest: str) -> Version | None:
    return session.scalar(
        select(Version).join(Model).where(Model.name == name, Version.digest == digest)
    )


def missing_blobs(session: Session, digests: Iterable[str]) -> set[str]:
    """Which of ``digests`` have no stored blob (any more)."""
    wanted = sorted(set(digests))
    found: set[str] = set()
    for chunk in chunks(wanted, _CHUNK):
        found.update(session.scalars(select(Blob.digest).where(Blob.digest.in_(chunk))))
    return set(wanted) - found


def blobs_without_checksum(session: Session) -> list[Blob]:
    """Blobs stored before checksums existed (schema revision 0001)."""
    return list(session.scalars(select(Blob).where(Blob.checksum.is_(None)).order_by(Blob.pack_id)))


def next_version(session: Session, name: str, wanted: int | None = None) -> tuple[Model, int]:
    """Create the model row if needed and take the next version number (never reused).

    With ``wanted``, that number is taken if no version ever had it (it is above the
    model's last number), else the next one. Callers hold the write lock (SQLite
    ``BEGIN IMMEDIATE``; a row lock elsewhere).
    """
    model = session.scalar(select(Model).where(Model.name == name).with_for_update())
    if model is None:
        model = Model(name=name, last_version=0, created_at=utcnow())
        session.add(model)
        session.flush()
    if wanted is not None and wanted > model.last_version:
        model.last_version = wanted
    else:
        model.last_version += 1
    session.flush()
    return model, model.last_version


def version_tags(session: Session, version_id: int) -> dict[str, str]:
    rows = session.execute(select(Tag.key, Tag.value).where(Tag.version_id == version_id))
    return {key: value for key, value in rows}


def ancestors(session: Session, version_id: int) -> list[int]:
    """The ids of ``version_id``'s parent, grandparent, ... (stops at a repeat)."""
    chain: list[int] = []
    current: int | None = version_id
    while current is not None:
        current = session.scalar(select(Version.parent_id).where(Version.id == current))
        if current is None or current in chain or current == version_id:
            break
        chain.append(current)
    return chain


def add_to_version(
    session: Session,
    version: Version,
    *,
    tags: Mapping[str, str],
    description: str | None = None,
    parent_id: int | None = None,
) -> None:
    """Give an existing version new tags (keys it lacks), and a description or a parent
    where it has none; the caller has checked that nothing is overwritten."""
    if description is not None:
        version.description = description
    if parent_id is not None:
        version.parent_id = parent_id
    if tags:
        session.execute(
            insert(Tag.__table__),
            [{"version_id": version.id, "key": k, "value": v} for k, v in tags.items()],
        )
    session.flush()


def set_alias(session: Session, model_id: int, alias: str, version_id: int) -> int | None:
    """Point ``alias`` of a model at a version, moving it if it pointed elsewhere.

    Returns the id of the version it pointed at before (None for a new alias).
    """
    existing = session.get(Alias, (model_id, alias))
    previous = None
    if existing is None:
        session.add(Alias(model_id=model_id, alias=alias, version_id=version_id))
    else:
        previous = existing.version_id
        existing.version_id = version_id
    session.flush()
    return previous


def alias_target(session: Session, model_id: int, alias: str) -> int | None:
    """The id of the version ``alias`` of a model points at, or None."""
    found = session.get(Alias, (model_id, alias))
    return found.version_id if found is not None else None


def version_ref(session: Session, version_id: int) -> str:
    """``name:version`` of a version by id."""
    name, number = session.execute(
        select(Model.name, Version.version).join(Model).where(Version.id == version_id)
    ).one()
    return f"{name}:{number}"


def version_number(session: Session, version_id: int) -> int | None:
    return session.scalar(select(Version.version).where(Version.id == version_id))


def record_event(
    session: Session,
    kind: str,
    name: str,
    version: int | None,
    version_id: int | None,
    before: Any,
    after: Any,
    *,
    actor: tuple[str, str | None] | None = None,
    at: datetime | None = None,
) -> None:
    """Add an event to the history in the session's transaction (see
    ``Catalog.record_event``, its plain-SQL twin, and ``records.EVENT_KINDS``).

    ``actor`` is (user, host), by default whoever runs this; ``at`` defaults to now.
    """
    if actor is None:
        from ..provenance import actor as current_actor

        actor = current_actor()
    session.execute(
        insert(Event.__table__),
        [
            {
                "at": at or utcnow(),
                "actor": actor[0],
                "host": actor[1],
                "kind": kind,
                "name": name,
                "version": version,
                "version_id": version_id,
                "before": jsonable(before),  # datetimes as ISO 8601, as Catalog writes them
                "after": jsonable(after),
            }
        ],
    )


def _insert_ignoring_duplicates(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:  # pragma: no cover - other databases: skip rows that are already there
        have = {
            r
            for r in session.scalars(
                select(table.c.digest).where(table.c.digest.in_([r["digest"] for r in rows]))
            )
        }
        rows = [r for r in rows if r["digest"] not in have]
        if rows:
            session.execute(insert(table), rows)
        return
    for chunk in chunks(rows, _CHUNK):
        session.execute(dialect_insert(table).on_conflict_do_nothing(), list(chunk))


def add_pack(
    session: Session,
    pack_id: str,
    nbytes: int,
    blobs: Sequence[tuple[str, int, int, str]],
) -> None:
    """Record a written pack and its blobs, as (digest, offset, nbytes, checksum).

    A blob that a concurrent push stored first keeps its first location.
    """
    session.add(Pack(id=pack_id, nbytes=nbytes, created_at=utcnow()))
    session.flush()
    _insert_ignoring_duplicates(
        session,
        Blob.__table__,
        [
            {"digest": d, "pack_id": pack_id, "offset": o, "nbytes": n, "checksum": c}
            for d, o, n, c in blobs
        ],
    )


def heal_blobs(session: Session, pack_id: str, blobs: Sequence[tuple[str, int, int, str]]) -> None:
    """Point damaged stored tensors at good copies of their bytes in ``pack_id``.

    ``blobs`` holds (digest, offset, nbytes, checksum): bytes this push wrote and
    hashed to ``digest`` where the stored copy failed its byte check. Every version
    using the digest reads the good bytes from then on.
    """
    for digest, offset, nbytes, checksum in blobs:
        session.execute(
            update(Blob)
            .where(Blob.digest == digest)
            .values(pack_id=pack_id, offset=offset, nbytes=nbytes, checksum=checksum)
        )


def add_version(
    session: Session,
    model: Model,
    number: int,
    *,
    digest: str,
    arch: str,
    arch_kwargs: Mapping[str, Any],
    description: str | None,
    param_count: int,
    torch_version: str,
    source_format: str,
    tensors: Sequence[Sequence[Any]],
    tags: Mapping[str, str],
    parent_id: int | None = None,
    created_at: datetime | None = None,
    state_metadata: list[Any] | None = None,
    file_metadata: Mapping[str, str] | None = None,
    assumed_metadata: list[Any] | None = None,
    pushed_by: str | None = None,
    pushed_host: str | None = None,
    source_path: str | None = None,
    git_commit: str | None = None,
    git_dirty: bool | None = None,
    registry_version: str | None = None,
    origin_created_at: datetime | None = None,
    arch_module: str | None = None,
) -> Version:
    """Insert a version with its tensor table and tags.

    ``tensors`` holds (name, dtype, shape, digest, nbytes[, storage_group,
    storage_view]) per key, in state-dict order. The provenance keywords
    (``pushed_by`` ... ``registry_version``, see ``provenance.Provenance.columns``)
    say who pushed it and from where; ``origin_created_at`` is, for an imported
    version, when it was first created in the registry it came from.
    """
    version = Version(
        model_id=model.id,
        version=number,
        digest=digest,
        arch=arch,
        arch_kwargs=dict(arch_kwargs),
        description=description,
        parent_id=parent_id,
        total_bytes=sum(t[4] for t in tensors),
        param_count=param_count,
        tensor_count=len(tensors),
        torch_version=torch_version,
        source_format=source_format,
        created_at=created_at or utcnow(),
        state_metadata=state_metadata,
        file_metadata=dict(file_metadata) if file_metadata is not None else None,
        assumed_metadata=assumed_metadata,
        pushed_by=pushed_by,
        pushed_host=pushed_host,
        source_path=source_path,
        git_commit=git_commit,
        git_dirty=git_dirty,
        registry_version=registry_version,
        origin_created_at=origin_created_at,
        arch_module=arch_module,
    )
    session.add(version)
    session.flush()
    rows = [
        {
            "version_id": version.id,
            "position": i,
            "name": entry[0],
            "dtype": entry[1],
            "shape": list(entry[2]),
            "digest": entry[3],
            "nbytes": entry[4],
            "storage_group": entry[5] if len(entry) > 5 else None,
            "storage_view": entry[6] if len(entry) > 6 else None,
        }
        for i, entry in enumerate(tensors)
    ]
    for chunk in chunks(rows, _CHUNK):
        session.execute(insert(TensorRow.__table__), list(chunk))
    if tags:
        session.execute(
            insert(Tag.__table__),
            [{"version_id": version.id, "key": k, "value": v} for k, v in tags.items()],
        )
    return version
