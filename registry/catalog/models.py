"""ORM models of the catalogue (SQLAlchemy 2.0 declarative, named constraints).

The schema is created and changed only by the Alembic migrations in
``registry/migrations``; a test checks that these models and the migrations agree.

    models ─┬─< versions ─┬─< tensors >── blobs >── packs
            │             ├─< tags
            └─< aliases >─┘
                          └─< events (name and number kept after the version goes)

A *blob* is one tensor's raw bytes, keyed by their sha256, stored once at
(pack, offset, nbytes) however many versions use it. *tensors* maps a version's
state-dict keys (in their original order) to blobs, with dtype and shape, and records
which keys were one storage at push: storing equal bytes once is the store's business,
and never makes two keys share memory when they are loaded.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the catalogue; use UTC-aware datetimes")
        return (
            value.astimezone(timezone.utc).replace(tzinfo=None)
            if dialect.name == "sqlite"
            else value
        )

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Model(Base):
    """A model name; ``last_version`` only grows, so version numbers are never reused."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    last_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    versions: Mapped[list[Version]] = relationship(back_populates="model", passive_deletes=True)


class Version(Base):
    """One pushed state dict: its architecture, digest and bookkeeping."""

    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version"),
        UniqueConstraint("model_id", "digest"),
        Index(None, "digest"),
        Index(None, "created_at"),
        Index(None, "arch"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    arch: Mapped[str] = mapped_column(String(255))
    arch_kwargs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    description: Mapped[str | None] = mapped_column(Text)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id", ondelete="SET NULL"))
    total_bytes: Mapped[int] = mapped_column(BigInteger)
    param_count: Mapped[int] = mapped_column(BigInteger)
    tensor_count: Mapped[int] = mapped_column(Integer)
    torch_version: Mapped[str] = mapped_column(String(64))
    source_format: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The state dict's ``_metadata`` as pushed: ``[[module prefix, {"version": 1}], ...]``
    #: in order; NULL when the weights carried none (a .safetensors file, a plain dict).
    state_metadata: Mapped[list[Any] | None] = mapped_column(JSON)
    #: A pushed .safetensors file's header metadata (str -> str); NULL otherwise.
    file_metadata: Mapped[dict[str, str] | None] = mapped_column(JSON)
    #: Module versions that load gives the architecture when the weights carried none
    #: and its modules refuse weights without them (recorded at push); else NULL.
    assumed_metadata: Mapped[list[Any] | None] = mapped_column(JSON)
    # Provenance (revision 0004; NULL for versions pushed before it).
    pushed_by: Mapped[str | None] = mapped_column(String(255))
    pushed_host: Mapped[str | None] = mapped_column(String(255))
    #: The absolute path of the pushed file; NULL for a state dict or a module.
    source_path: Mapped[str | None] = mapped_column(Text)
    #: HEAD of the git repository holding the pusher's working folder, and whether its
    #: tracked files had uncommitted changes; NULL outside a repository.
    git_commit: Mapped[str | None] = mapped_column(String(64))
    git_dirty: Mapped[bool | None] = mapped_column(Boolean)
    registry_version: Mapped[str | None] = mapped_column(String(64))
    #: For an imported version: when it was first created, in the registry it came
    #: from (``created_at`` is when it entered this one).
    origin_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The module that registered the architecture's name in code, if it was.
    arch_module: Mapped[str | None] = mapped_column(String(255))

    model: Mapped[Model] = relationship(back_populates="versions")
    tensors: Mapped[list[TensorRow]] = relationship(
        order_by="TensorRow.position", passive_deletes=True, cascade="all, delete-orphan"
    )
    tags: Mapped[list[Tag]] = relationship(passive_deletes=True, cascade="all, delete-orphan")


class Pack(Base):
    """One file of the tensor store, written once by one push and never rewritten."""

    __tablename__ = "packs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nbytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Blob(Base):
    """Where one tensor's bytes live: (pack, offset, nbytes), keyed by their sha256.

    ``checksum`` is the XXH3-128 of the same bytes: a fast check that every load can
    afford, and the index a push uses to find candidate duplicates (confirmed byte
    for byte, never trusted alone). NULL for blobs from before revision 0002 until
    ``registry db upgrade`` fills it in.
    """

    __tablename__ = "blobs"
    __table_args__ = (Index(None, "pack_id"), Index(None, "checksum"))

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    pack_id: Mapped[str] = mapped_column(ForeignKey("packs.id"))
    offset: Mapped[int] = mapped_column(BigInteger)
    nbytes: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(32))


class TensorRow(Base):
    """A state-dict entry of a version: key, dtype, shape and the blob holding its bytes."""

    __tablename__ = "tensors"
    __table_args__ = (
        UniqueConstraint("version_id", "name"),
        Index(None, "digest"),
    )

    version_id: Mapped[int] = mapped_column(
        ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(1024))
    dtype: Mapped[str] = mapped_column(String(32))
    shape: Mapped[list[int]] = mapped_column(JSON)
    digest: Mapped[str] = mapped_column(ForeignKey("blobs.digest"))
    nbytes: Mapped[int] = mapped_column(BigInteger)
    #: For a key that shared its storage with other keys at push (tied weights): the
    #: position of the group's first key; NULL for a key with a storage of its own.
    storage_group: Mapped[int | None] = mapped_column(Integer)
    #: Where a grouped key sits in the shared storage, ``[byte offset, [strides]]``;
    #: NULL means offset 0 and contiguous (the usual tie).
    storage_view: Mapped[list[Any] | None] = mapped_column(JSON)


class Tag(Base):
    """A key/value label on a version; changing tags never touches weights."""

    __tablename__ = "tags"
    __table_args__ = (Index(None, "key", "value"),)

    version_id: Mapped[int] = mapped_column(
        ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Alias(Base):
    """A movable name (``production``, ``staging``) for one version of a model."""

    __tablename__ = "aliases"

    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))


class Event(Base):
    """A change to the catalogue that is not a push: who, when, what before and after.

    ``kind`` is one of ``tag``, ``untag``, ``alias``, ``unalias``, ``describe``,
    ``remove``, ``import``, ``push-update``. ``name`` and ``version`` keep the model's
    name and the version's number after the version is removed (numbers are never
    reused); ``version_id`` is then cleared.
    """

    __tablename__ = "events"
    __table_args__ = (Index(None, "name", "at"), Index(None, "at"), Index(None, "version_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(255))
    host: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int | None] = mapped_column(Integer)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id", ondelete="SET NULL"))
    before: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    after: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)


class PendingPack(Base):
    """A pack being written: taken in its own committed transaction before the first
    byte goes to the store, removed by the transaction that names the pack (or by the
    writer when it gives up, or by gc once the writer is known to be gone).

    ``gc`` leaves a pack file that no version names alone while its writer runs: a
    writer on gc's own machine (same ``host``, ``boot_id`` and pid namespace
    ``pid_ns``) is running while a process ``pid`` started at ``pid_started`` (clock
    ticks after boot) exists; one elsewhere is presumed running until ``started_at``
    is older than gc's grace period. ``purpose`` is ``push``, ``import`` or ``gc``.
    """

    __tablename__ = "pending_packs"

    pack_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    boot_id: Mapped[str | None] = mapped_column(String(64))
    pid_ns: Mapped[str | None] = mapped_column(String(64))
    pid: Mapped[int] = mapped_column(Integer)
    pid_started: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
