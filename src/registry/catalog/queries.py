"""Catalogue queries and writes, each taking an open Session (the API owns the unit of work)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from .models import Alias, Blob, Model, Pack, Tag, TensorRow, Version, utcnow
from .reader import chunks

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


def set_alias(session: Session, model_id: int, alias: str, version_id: int) -> None:
    """Point ``alias`` of a model at a version, moving it if it pointed elsewhere."""
    existing = session.get(Alias, (model_id, alias))
    if existing is None:
        session.add(Alias(model_id=model_id, alias=alias, version_id=version_id))
    else:
        existing.version_id = version_id
    session.flush()


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
) -> Version:
    """Insert a version with its tensor table and tags.

    ``tensors`` holds (name, dtype, shape, digest, nbytes[, storage_group,
    storage_view]) per key, in state-dict order.
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
