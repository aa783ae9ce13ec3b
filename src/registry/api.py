"""The Python API: :class:`Registry`, one unit of work per call.

torch is imported only by the calls that move weights (push, pull, load), and
SQLAlchemy only by pushes and schema changes: reading the catalogue and editing
tags go through plain DB-API connections (``catalog.reader``), so the metadata
commands start in a fraction of the time.
"""

from __future__ import annotations

import mmap
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config
from .catalog import revision as schema_revision
from .catalog.reader import Catalog
from .errors import (
    CatalogError,
    IntegrityError,
    InvalidArgumentError,
    StorageError,
)
from .keyvalue import validate_arch_kwargs, validate_tags
from .records import ModelVersion, PushReport
from .refs import parse_ref, validate_name
from .storage import LocalStore, checksum_many, manifest_digest, same_bytes, sha256_many
from .storage.local import view as pack_view

if TYPE_CHECKING:
    import torch
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker
    from torch import nn

PULL_FORMATS = ("pth", "safetensors")
VERIFY_MODES = (True, False, "sha256")
_PUSH_ATTEMPTS = 3
_SCHEMA_ATTEMPTS = 6


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
        if self._sqlite_path is not None:
            import sqlite3

            errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
            self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                connection: Any = sqlite3.connect(
                    self._sqlite_path, timeout=config.SQLITE_BUSY_TIMEOUT_S, isolation_level=None
                )
                connection.execute("PRAGMA foreign_keys=ON")
                connection.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise CatalogError(
                    f"cannot open the catalogue database {self._sqlite_path}: {exc}"
                ) from None
            qmark = True
        else:
            connection = self._engine.raw_connection()
            errors = (self._engine.dialect.loaded_dbapi.Error,)
            qmark = self._engine.dialect.paramstyle == "qmark"
        try:
            catalog = Catalog(connection, qmark=qmark)
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
        self, name: str | None = None, tags: Mapping[str, str] | None = None
    ) -> list[ModelVersion]:
        """Versions newest first, optionally of one model and with all the given tags."""
        if name is not None:
            validate_name(name)
        tags = validate_tags(tags)
        with self._catalog() as catalog:
            return catalog.records(catalog.list_versions(name, tags))

    def tag(self, ref: str, tags: Mapping[str, Any]) -> ModelVersion:
        """Add or overwrite tags of a version (metadata only: the weights never change)."""
        parsed = parse_ref(ref)
        clean = validate_tags(tags)
        if not clean:
            raise InvalidArgumentError("give at least one tag, as KEY=VALUE")
        with self._catalog(write=True) as catalog:
            version = catalog.resolve(parsed)
            catalog.set_tags(version.id, clean)
            return catalog.records([catalog.version_by_id(version.id)])[0]

    def untag(self, ref: str, keys: list[str] | tuple[str, ...]) -> ModelVersion:
        """Remove tags by key; a key the version does not have is an error."""
        parsed = parse_ref(ref)
        if not keys:
            raise InvalidArgumentError("give at least one tag key to remove")
        with self._catalog(write=True) as catalog:
            version = catalog.resolve(parsed)
            removed = catalog.remove_tags(version.id, keys)
            missing = [k for k in keys if k not in removed]
            if missing:
                raise InvalidArgumentError(
                    f"{version.name}:{version.version} has no tag {', '.join(map(repr, missing))}"
                )
            return catalog.records([catalog.version_by_id(version.id)])[0]

    # -- push -------------------------------------------------------------------------

    def push(
        self,
        source: Any,
        name: str | None = None,
        *,
        arch: str,
        arch_kwargs: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> ModelVersion:
        """Store weights as a new version of ``name`` and return it.

        ``source`` is a path to a ``.pth``/``.safetensors`` file, a state dict, or an
        ``nn.Module`` (its ``state_dict()``). The weights are checked against ``arch``
        built with ``arch_kwargs`` before anything is stored. Weights identical to a
        version already under ``name`` return that version (``pushed.created`` is
        False) and write nothing.
        """
        from . import architectures
        from .tensors import check_storable, dtype_name, raw_bytes

        if name is None:
            if not isinstance(source, (str, os.PathLike)):
                raise InvalidArgumentError(
                    "name= is required when pushing a state dict or a module"
                )
            name = Path(source).stem
        validate_name(name)
        kwargs = validate_arch_kwargs(arch_kwargs)
        clean_tags = validate_tags(tags)
        if not isinstance(arch, str) or not arch:
            raise InvalidArgumentError("arch= must name an architecture, e.g. 'resnet18'")
        self._ready()

        architecture = architectures.resolve(arch)
        expected = architectures.signature(architecture, kwargs)
        state, source_format, notes = _read_source(source)
        for key, value in state.items():
            check_storable(key, value)
        architectures.check_weights(
            expected.shapes,
            {k: list(v.shape) for k, v in state.items()},
            architecture.label(kwargs),
        )

        owners, views = [], []  # owners keep the memory behind each view alive
        for value in state.values():
            owner, view = raw_bytes(value)
            owners.append(owner)
            views.append(view)
        checksums = checksum_many(views)
        with self._catalog() as catalog:
            stored = catalog.blobs_by_checksum(checksums)
        digests, fresh = self._match_stored(owners, views, checksums, stored)
        new = [views[i] for i in fresh]
        written = self._store.start_pack(new) if new else None
        if written is not None:
            for i, digest in zip(fresh, written.digests):
                digests[i] = digest
        digests = [digests[j] if isinstance(j, int) else j for j in digests]  # type: ignore[misc]
        entries = [
            (key, dtype_name(value.dtype), list(value.shape), digest, view.nbytes)
            for (key, value), digest, view in zip(state.items(), digests, views)
        ]
        version_digest = manifest_digest((n, d, s, h) for n, d, s, h, _ in entries)

        import torch
        from sqlalchemy.exc import IntegrityError as DBIntegrityError

        from .catalog import queries

        committed = False
        try:
            for attempt in range(_PUSH_ATTEMPTS):
                try:
                    with self._writer() as session, session.begin():
                        existing = queries.version_by_digest(session, name, version_digest)
                        if existing is not None:
                            result = existing.id, PushReport(False, 0, 0, tuple(notes))
                            break
                        if written is not None:
                            queries.add_pack(
                                session,
                                written.pack_id,
                                written.nbytes,
                                [
                                    (d, offset, views[i].nbytes, checksums[i])
                                    for d, offset, i in zip(written.digests, written.offsets, fresh)
                                ],
                            )
                        model, number = queries.next_version(session, name)
                        version = queries.add_version(
                            session,
                            model,
                            number,
                            digest=version_digest,
                            arch=architecture.name,
                            arch_kwargs=kwargs,
                            description=description,
                            param_count=expected.param_count,
                            torch_version=torch.__version__,
                            source_format=source_format,
                            tensors=entries,
                            tags=clean_tags,
                        )
                        written_bytes = written.nbytes if written else 0
                        result = version.id, PushReport(True, written_bytes, len(new), tuple(notes))
                        if written is not None:
                            written.wait()  # the pack is durable before the rows that name it
                    committed = True
                    break
                except DBIntegrityError:
                    # A concurrent push created the same model or version first; retry.
                    if attempt == _PUSH_ATTEMPTS - 1:
                        raise
        finally:
            if written is not None and not (committed and result[1].created):
                self._store.abandon(written)
        return self._record(*result)

    def _match_stored(
        self,
        owners: list[torch.Tensor],
        views: list[memoryview],
        checksums: list[str],
        stored: dict[str, list[Any]],
    ) -> tuple[list[Any], list[int]]:
        """Which tensors the store holds already, and which hold the same bytes.

        Returns, per tensor, its digest if stored, or the index of the earlier tensor
        of this push with the same bytes, or None (new bytes); and the indices whose
        bytes are new, each distinct content once.
        A checksum match is confirmed byte for byte against the stored (or earlier)
        bytes before it counts: XXH3 is fast, not collision resistant.
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

        maps: dict[str, mmap.mmap] = {}
        for i in reps:
            for blob in stored.get(checksums[i], ()):
                if blob.pack_id not in maps:
                    maps[blob.pack_id] = self._store.map(blob.pack_id)

        def stored_digest(i: int) -> str | None:
            for blob in stored.get(checksums[i], ()):
                if blob.nbytes == views[i].nbytes and same_bytes(
                    pack_view(maps[blob.pack_id], blob.offset, blob.nbytes, blob.pack_id), views[i]
                ):
                    return blob.digest
            return None

        # Comparing is memory-bound and numpy releases the GIL: use every core.
        with ThreadPoolExecutor(max_workers=config.HASH_THREADS) as pool:
            found = list(pool.map(stored_digest, reps))
        fresh = [i for i, digest in zip(reps, found) if digest is None]
        for i, digest in zip(reps, found):
            result[i] = digest
        return result, fresh

    def _record(self, version_id: int, report: PushReport) -> ModelVersion:
        from dataclasses import replace

        with self._catalog() as catalog:
            record = catalog.records([catalog.version_by_id(version_id)])[0]
        return replace(record, pushed=report)

    # -- reading weights ----------------------------------------------------------

    def _open(self, ref: str, verify: bool | str) -> tuple[ModelVersion, dict[str, torch.Tensor]]:
        from .tensors import from_buffer, parse_dtype

        parsed = parse_ref(ref)
        with self._catalog() as catalog:
            row = catalog.resolve(parsed)
            record = catalog.records([row])[0]
            located = catalog.tensor_locations(row.id)
        if len(located) != record.tensor_count:
            raise IntegrityError(
                f"{record.ref} lists {record.tensor_count} tensors but the catalogue locates "
                f"{len(located)}; the catalogue is damaged"
            )
        maps: dict[str, mmap.mmap] = {}
        views: dict[str, memoryview] = {}
        for blob in located:
            if blob.digest not in views:
                if blob.pack_id not in maps:
                    maps[blob.pack_id] = self._store.map(blob.pack_id)
                views[blob.digest] = pack_view(
                    maps[blob.pack_id], blob.offset, blob.nbytes, blob.pack_id
                )
        if verify not in VERIFY_MODES:
            raise InvalidArgumentError(
                f"verify={verify!r}: use True (checksums), 'sha256' (full digests) or False"
            )
        if verify:
            bad = _corrupt_blobs(views, {b.digest: b.checksum for b in located}, verify)
            if bad:
                names = [t.name for t in located if t.digest in bad]
                shown = ", ".join(names[:5]) + (
                    f" and {len(names) - 5} more" if len(names) > 5 else ""
                )
                raise IntegrityError(
                    f"{record.ref}: stored bytes of {len(names)} tensor"
                    f"{'s' if len(names) != 1 else ''} do not match their digest ({shown}); "
                    "the tensor store is corrupt"
                )
        state: dict[str, torch.Tensor] = {}
        shared: dict[tuple[str, str, tuple[int, ...]], torch.Tensor] = {}
        for tensor in located:
            key = (tensor.digest, tensor.dtype, tuple(tensor.shape))
            if key not in shared:
                shared[key] = from_buffer(
                    views[tensor.digest], parse_dtype(tensor.dtype), tensor.shape
                )
            state[tensor.name] = shared[key]
        return record, state

    def load_state_dict(self, ref: str, *, verify: bool | str = True) -> dict[str, torch.Tensor]:
        """The stored state dict of ``ref``, in its original key order.

        Tensors are copy-on-write views of the tensor store: writing to them never
        changes what is stored. Every tensor's bytes are checked against the XXH3-128
        checksum stored at push (~30 GB/s); ``verify="sha256"`` re-computes the sha256
        digests instead (~2 GB/s a core), ``verify=False`` skips the check.
        """
        return self._open(ref, verify)[1]

    def load(
        self, ref: str, *, device: str | torch.device = "cpu", verify: bool | str = True
    ) -> nn.Module:
        """Rebuild the version's architecture with its stored arguments, weights in, eval mode.

        ``verify`` is as for :meth:`load_state_dict`.
        """
        from . import architectures

        record, state = self._open(ref, verify)
        architecture = architectures.resolve(record.arch)
        return architectures.instantiate(architecture, record.arch_kwargs, state, device)

    def pull(
        self,
        ref: str,
        path: str | os.PathLike[str] | None = None,
        *,
        format: str | None = None,
    ) -> Path:
        """Write the weights of ``ref`` to a file plain torch (or safetensors) reads back.

        The format follows ``format``, else the file's suffix (``.safetensors``), else
        ``pth``. The default path is ``NAME-vVERSION.pth`` in the current folder.
        Every tensor is verified against its digest on the way out.
        """
        if format is not None and format not in PULL_FORMATS:
            raise InvalidArgumentError(f"unknown format {format!r}: choose pth or safetensors")
        if format is None:
            format = (
                "safetensors" if path is not None and Path(path).suffix == ".safetensors" else "pth"
            )
        record, state = self._open(ref, verify="sha256")
        if path is None:
            suffix = "safetensors" if format == "safetensors" else "pth"
            path = Path.cwd() / f"{record.name.replace('/', '-')}-v{record.version}.{suffix}"
        target = Path(path)
        if target.is_dir():
            raise StorageError(f"cannot write {target}: it is a folder")
        _write_weights(state, target, format, record)
        return target


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


def _read_source(source: Any) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """State dict, source format and notes from a path, a mapping or a module."""
    import torch

    from .checkpoints import read_checkpoint, unwrap

    if isinstance(source, (str, os.PathLike)):
        checkpoint = read_checkpoint(source)
        return checkpoint.state_dict, checkpoint.source_format, checkpoint.notes
    if isinstance(source, torch.nn.Module):
        return dict(source.state_dict()), "module", []
    if isinstance(source, Mapping):
        state, notes = unwrap(source, "the given state dict")
        return state, "state_dict", notes
    raise InvalidArgumentError(
        f"cannot push a {type(source).__name__}: give a file path, a state dict or an nn.Module"
    )


def _write_weights(
    state: dict[str, torch.Tensor], target: Path, format: str, record: ModelVersion
) -> None:
    """Write atomically: a temporary file in the target folder, then rename."""
    import torch

    folder = target.parent if str(target.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # honours umask
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        if format == "safetensors":
            from safetensors.torch import save_file

            seen: set[int] = set()
            unshared = {}
            for key, value in state.items():
                # safetensors refuses tensors that share memory: give repeats their own copy.
                unshared[key] = value.clone() if id(value) in seen else value
                seen.add(id(value))
            save_file(
                unshared,
                str(tmp),
                metadata={"registry.ref": record.ref, "registry.arch": record.arch},
            )
        else:
            torch.save(state, tmp)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
