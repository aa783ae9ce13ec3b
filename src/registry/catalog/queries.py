"""Catalogue queries and writes, each taking an open Session (the API owns the unit of work)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Select, func, insert, select
from sqlalchemy.orm import Session

from ..errors import AmbiguousReferenceError, ModelNotFoundError, VersionNotFoundError
from ..records import ModelVersion, TensorInfo
from ..refs import Ref
from .models import Alias, Blob, Model, Pack, Tag, TensorRow, Version, utcnow

#: Bound parameters per IN (...) query; SQLite's default limit is 32766.
_CHUNK = 900


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def find_model(session: Session, name: str) -> Model | None:
    return session.scalar(select(Model).where(Model.name == name))


def _missing_model(session: Session, name: str) -> ModelNotFoundError:
    names = session.scalars(select(Model.name)).all()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ModelNotFoundError(f"no model named {name!r} in the registry{hint}")


def resolve(session: Session, ref: Ref) -> Version:
    """The version a parsed reference names, or a NotFound/Ambiguous error that says why."""
    model = find_model(session, ref.name)
    if model is None:
        raise _missing_model(session, ref.name)
    query = select(Version).where(Version.model_id == model.id)
    if ref.version is not None:
        found = session.scalar(query.where(Version.version == ref.version))
        if found is None:
            latest = session.scalar(
                select(func.max(Version.version)).where(Version.model_id == model.id)
            )
            hint = f" (latest is {ref.name}:{latest})" if latest else ""
            raise VersionNotFoundError(f"{ref.name} has no version {ref.version}{hint}")
        return found
    if ref.alias is not None:
        found = session.scalar(
            query.join(Alias, Alias.version_id == Version.id).where(
                Alias.model_id == model.id, Alias.alias == ref.alias
            )
        )
        if found is None:
            raise VersionNotFoundError(f"{ref.name} has no alias {ref.alias!r}")
        return found
    if ref.digest_prefix is not None:
        prefix = ref.digest_prefix
        matches = session.scalars(
            query.where(Version.digest >= prefix, Version.digest < prefix + "g").limit(2)
        ).all()
        if not matches:
            raise VersionNotFoundError(f"{ref.name} has no version with digest sha256:{prefix}...")
        if len(matches) > 1:
            raise AmbiguousReferenceError(
                f"sha256:{prefix} matches several versions of {ref.name}; give more hex digits"
            )
        return matches[0]
    found = session.scalar(query.order_by(Version.version.desc()).limit(1))
    if found is None:
        raise VersionNotFoundError(f"{ref.name} has no versions")
    return found


def version_by_digest(session: Session, name: str, digest: str) -> Version | None:
    return session.scalar(
        select(Version).join(Model).where(Model.name == name, Version.digest == digest)
    )


def blobs_by_checksum(session: Session, checksums: Iterable[str]) -> dict[str, list[Blob]]:
    """Stored blobs whose checksum is one of ``checksums``: candidates, not proof."""
    found: dict[str, list[Blob]] = {}
    for chunk in _chunks(sorted(set(checksums))):
        for blob in session.scalars(select(Blob).where(Blob.checksum.in_(chunk))):
            found.setdefault(blob.checksum or "", []).append(blob)
    return found


def blobs_without_checksum(session: Session) -> list[Blob]:
    """Blobs stored before checksums existed (schema revision 0001)."""
    return list(session.scalars(select(Blob).where(Blob.checksum.is_(None)).order_by(Blob.pack_id)))


def next_version(session: Session, name: str) -> tuple[Model, int]:
    """Create the model row if needed and take the next version number (never reused).

    Callers hold the write lock (SQLite ``BEGIN IMMEDIATE``; a row lock elsewhere).
    """
    model = session.scalar(select(Model).where(Model.name == name).with_for_update())
    if model is None:
        model = Model(name=name, last_version=0, created_at=utcnow())
        session.add(model)
        session.flush()
    model.last_version += 1
    session.flush()
    return model, model.last_version


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
    for chunk in _chunks(rows):
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
    tensors: Sequence[tuple[str, str, Sequence[int], str, int]],
    tags: Mapping[str, str],
) -> Version:
    """Insert a version with its tensor table and tags."""
    version = Version(
        model_id=model.id,
        version=number,
        digest=digest,
        arch=arch,
        arch_kwargs=dict(arch_kwargs),
        description=description,
        total_bytes=sum(t[4] for t in tensors),
        param_count=param_count,
        tensor_count=len(tensors),
        torch_version=torch_version,
        source_format=source_format,
        created_at=utcnow(),
    )
    session.add(version)
    session.flush()
    rows = [
        {
            "version_id": version.id,
            "position": i,
            "name": name,
            "dtype": dtype,
            "shape": list(shape),
            "digest": tdigest,
            "nbytes": nbytes,
        }
        for i, (name, dtype, shape, tdigest, nbytes) in enumerate(tensors)
    ]
    for chunk in _chunks(rows):
        session.execute(insert(TensorRow), list(chunk))
    if tags:
        session.execute(
            insert(Tag), [{"version_id": version.id, "key": k, "value": v} for k, v in tags.items()]
        )
    return version


def tensor_locations(session: Session, version_id: int) -> list[tuple[TensorRow, Blob]]:
    """The version's tensors in state-dict order, each with where its bytes are."""
    rows = session.execute(
        select(TensorRow, Blob)
        .join(Blob, Blob.digest == TensorRow.digest)
        .where(TensorRow.version_id == version_id)
        .order_by(TensorRow.position)
    ).all()
    return [(t, b) for t, b in rows]


def _labels(
    session: Session, versions: Sequence[Version]
) -> tuple[dict[int, dict[str, str]], dict[int, list[str]], dict[int, str]]:
    """Tags, aliases and parent refs of many versions in three queries."""
    ids = [v.id for v in versions]
    tags: dict[int, dict[str, str]] = {i: {} for i in ids}
    aliases: dict[int, list[str]] = {i: [] for i in ids}
    parents: dict[int, str] = {}
    parent_ids = sorted({v.parent_id for v in versions if v.parent_id is not None})
    for chunk in _chunks(ids):
        for vid, key, value in session.execute(
            select(Tag.version_id, Tag.key, Tag.value)
            .where(Tag.version_id.in_(chunk))
            .order_by(Tag.key)
        ):
            tags[vid][key] = value
        for vid, alias in session.execute(
            select(Alias.version_id, Alias.alias)
            .where(Alias.version_id.in_(chunk))
            .order_by(Alias.alias)
        ):
            aliases[vid].append(alias)
    for chunk in _chunks(parent_ids):
        for vid, name, number in session.execute(
            select(Version.id, Model.name, Version.version).join(Model).where(Version.id.in_(chunk))
        ):
            parents[vid] = f"{name}:{number}"
    return tags, aliases, parents


def records(
    session: Session,
    versions: Sequence[Version],
    names: Mapping[int, str],
    *,
    with_tensors: bool = False,
) -> list[ModelVersion]:
    """Turn ORM versions into API records."""
    tags, aliases, parents = _labels(session, versions)
    out = []
    for v in versions:
        tensors: tuple[TensorInfo, ...] = ()
        if with_tensors:
            tensors = tuple(
                TensorInfo(t.name, t.dtype, tuple(t.shape), t.digest, t.nbytes)
                for t in session.scalars(
                    select(TensorRow)
                    .where(TensorRow.version_id == v.id)
                    .order_by(TensorRow.position)
                )
            )
        out.append(
            ModelVersion(
                name=names[v.model_id],
                version=v.version,
                digest=v.digest,
                arch=v.arch,
                arch_kwargs=dict(v.arch_kwargs or {}),
                created_at=v.created_at,
                total_bytes=v.total_bytes,
                param_count=v.param_count,
                tensor_count=v.tensor_count,
                torch_version=v.torch_version,
                source_format=v.source_format,
                description=v.description,
                tags=tags[v.id],
                aliases=tuple(aliases[v.id]),
                parent=parents.get(v.parent_id) if v.parent_id is not None else None,
                tensors=tensors,
            )
        )
    return out


def list_query(name: str | None = None, tags: Mapping[str, str] | None = None) -> Select[Any]:
    """Versions (with their model name), newest first, filtered by name and tags (ANDed)."""
    query = select(Version, Model.name).join(Model)
    if name is not None:
        query = query.where(Model.name == name)
    for key, value in (tags or {}).items():
        query = query.where(
            Version.id.in_(select(Tag.version_id).where(Tag.key == key, Tag.value == value))
        )
    return query.order_by(Version.created_at.desc(), Version.id.desc())
