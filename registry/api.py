"""The Python API: :class:`Registry`, a thin facade over the pipelines.

Each method checks its arguments and delegates. Reads of the catalogue (``get``,
``list``, ``count``, ``lineage``, ``children``, ``log``) are a few gateway calls in one
read transaction; the rest is a pipeline (``registry.pipelines``): ``push``, ``read``
(load, load_state_dict, load_into, diff, pull), ``organise`` (tags, aliases,
descriptions, removal), ``maintenance`` (gc, verify) and ``bundles`` (export,
import). The catalogue is reached only through ``catalog.gateway.Gateway`` and the
tensor store only through the ``storage.Store`` interface.

torch is imported only by the calls that read or write weights (push, the loads,
diff, pull, export, import, identify, architectures). The metadata calls on an
existing ``sqlite:///PATH`` catalogue import neither torch nor SQLAlchemy, so the
commands built on them start in a fraction of the time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config
from .catalog.gateway import MODEL_SORTS, SORTS, TENSOR_SORTS, Gateway
from .errors import InvalidArgumentError
from .keyvalue import check_description, parse_date, validate_tags
from .records import (
    Diff,
    Event,
    GcReport,
    ModelSummary,
    ModelVersion,
    StorageReport,
    TensorPage,
    TensorRow,
    VerifyReport,
)
from .refs import parse_ref, validate_alias, validate_name
from .storage import Store, store_for

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .architectures import Match
    from .pipelines.bundle_file import ExportReport, ImportReport
    from .storage.cache import CacheInfo, PackCache


class Registry:
    """A model registry: a catalogue database plus a content-addressed tensor store.

    ``Registry()`` uses ``REGISTRY_HOME`` (default ``$XDG_DATA_HOME/registry``, else
    ``~/.local/share/registry``);
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
        self._gateway = Gateway(self.settings.database_url)
        self._store: Store = store_for(self.settings)

    def __repr__(self) -> str:
        return f"Registry(home={str(self.settings.home)!r})"

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release database connections (and the object store's worker threads)."""
        self._gateway.close()
        closer = getattr(self._store, "close", None)
        if closer is not None:
            closer()

    # -- the schema ---------------------------------------------------------------

    def database_revision(self) -> str | None:
        """The schema revision stamped in the database (None if it has none yet)."""
        return self._gateway.revision()

    def upgrade_database(self) -> tuple[str | None, str | None]:
        """Apply pending migrations; returns (revision before, revision after).

        Then fills in what a migration cannot compute from the database alone: the
        checksums of tensors stored before revision 0002, read from the tensor store.
        """
        from .pipelines.maintenance import backfill_checksums

        result = self._gateway.upgrade()
        backfill_checksums(self._gateway, self._store)
        return result

    # -- reading the catalogue ----------------------------------------------------

    def get(self, ref: str, *, tensors: bool = True) -> ModelVersion:
        """The version ``ref`` names, with its tensor table unless ``tensors=False``
        (then ``tensors`` is empty; :meth:`tensor_table` gives it a page at a time)."""
        parsed = parse_ref(ref)
        with self._gateway.read() as catalog:
            return catalog.records([catalog.resolve(parsed)], with_tensors=tensors)[0]

    def tensor_table(
        self,
        ref: str,
        *,
        contains: str | None = None,
        sort: str = "position",
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> TensorPage:
        """One page of the tensor table of the version ``ref`` names: tensors whose
        name contains ``contains`` (case-insensitive), sorted by ``sort`` (``position``,
        the state dict's order; ``name``; ``dtype``; ``shape``, by rank then
        dimensions; ``size``, in bytes), ``descending`` if asked, ``limit`` rows from
        ``offset``. Filtered, sorted and cut in the database: a page of a
        40,000-tensor version takes milliseconds (benchmarks/ui.py).

        Raises InvalidArgumentError for an unknown sort or a negative limit or offset.
        """
        _check_page(sort, dict.fromkeys(TENSOR_SORTS), limit, offset)
        if contains is not None and not isinstance(contains, str):
            raise InvalidArgumentError("contains must be a string or None")
        parsed = parse_ref(ref)
        with self._gateway.read() as catalog:
            version = catalog.resolve(parsed)
            matching, rows = catalog.tensor_page(
                version.id, contains or None, sort, descending, limit, offset
            )
        return TensorPage(
            f"{version.name}:{version.version}",
            version.tensor_count,
            matching,
            offset,
            tuple(TensorRow(p, info, owner) for p, info, owner in rows),
        )

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
        _check_page(sort, SORTS, limit, offset)
        with self._gateway.read() as catalog:
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
        with self._gateway.read() as catalog:
            return catalog.count_versions(**_filters(name, tags, arch, since, before))

    def models(
        self,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        *,
        arch: str | None = None,
        since: datetime | str | None = None,
        before: datetime | str | None = None,
        sort: str = "latest",
        reverse: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ModelSummary]:
        """Model names with at least one version matching every filter (the filters of
        :meth:`list`), each with its latest version, number of versions, aliases and
        last push (and ``all_versions_bytes``, every version's tensor bytes). ``sort``
        is ``latest`` (last push, newest first), ``name``, ``versions`` (most first) or
        ``size`` (largest latest version first);
        ``reverse`` flips it; ``limit``/``offset`` give one page. Reads the catalogue
        only: three statements whatever the page size.

        Raises InvalidArgumentError for an unknown sort, a negative limit or offset,
        a malformed filter.
        """
        filters = _filters(name, tags, arch, since, before)
        _check_page(sort, MODEL_SORTS, limit, offset)
        with self._gateway.read() as catalog:
            found = catalog.model_summaries(
                **filters, sort=sort, reverse=reverse, limit=limit, offset=offset
            )
            latest = catalog.records([row for row, *_ in found])
            aliases = catalog.model_aliases([row.model_id for row, *_ in found])
        return [
            ModelSummary(row.name, mv, count, last, nbytes, aliases[row.model_id])
            for (row, count, last, nbytes), mv in zip(found, latest)
        ]

    def count_models(
        self,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        *,
        arch: str | None = None,
        since: datetime | str | None = None,
        before: datetime | str | None = None,
    ) -> int:
        """How many models :meth:`models` would give with these filters and no limit."""
        with self._gateway.read() as catalog:
            return catalog.count_models(**_filters(name, tags, arch, since, before))

    def storage(self, *, gc: bool = True) -> StorageReport:
        """Bytes of all versions against bytes stored: what deduplication saved and,
        with ``gc`` (a dry run of :meth:`gc`: it lists the store), what ``gc`` would
        free. Reads only; torch is not imported."""
        with self._gateway.read() as catalog:
            logical, unique, stored, packs = catalog.storage_totals()
            versions = catalog.count_versions()
            models = catalog.count_models()
        report = self.gc(dry_run=True) if gc else None
        return StorageReport(versions, models, logical, unique, stored, packs, report)

    def lineage(self, ref: str) -> list[ModelVersion]:
        """The version, then its parent, grandparent, ... as recorded by ``push(parent=)``."""
        parsed = parse_ref(ref)
        with self._gateway.read() as catalog:
            return catalog.records(catalog.lineage(catalog.resolve(parsed)))

    def children(self, ref: str) -> list[ModelVersion]:
        """The versions whose parent (``push(parent=)``) is the version ``ref`` names."""
        parsed = parse_ref(ref)
        with self._gateway.read() as catalog:
            return catalog.records(catalog.children(catalog.resolve(parsed)))

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
        with self._gateway.read() as catalog:
            name = number = None
            if parsed is not None:
                name = parsed.name
                catalog.model_id(name)  # ModelNotFoundError for a name never used
                if parsed.version is not None:
                    number = parsed.version  # its history outlives the version
                elif not whole_model:
                    number = catalog.resolve(parsed).version
            found = catalog.history(name, number, limit=limit)
            if number is not None and not found:
                catalog.resolve(parsed)  # type: ignore[arg-type]  # says why it is not there
        return found

    # -- organising: aliases, tags, descriptions, removal ---------------------------

    def alias(self, ref: str, alias: str) -> ModelVersion:
        """Point ``NAME:ALIAS`` at the version ``ref`` names, moving it if it pointed elsewhere."""
        from .pipelines import organise

        parsed = parse_ref(ref)
        validate_alias(alias)
        return organise.alias(self._gateway, parsed, alias)

    def unalias(self, ref: str) -> ModelVersion:
        """Delete the alias in ``NAME:ALIAS``; returns the version it pointed at."""
        from .pipelines import organise

        parsed = parse_ref(ref)
        if parsed.alias is None:
            raise InvalidArgumentError(f"{ref!r} names no alias: give NAME:ALIAS")
        return organise.unalias(self._gateway, parsed)

    def describe(self, ref: str, description: str | None) -> ModelVersion:
        """Set (or with None, clear) a version's description."""
        from .pipelines import organise

        parsed = parse_ref(ref)
        check_description(description, clearing="describe(ref, None)")
        return organise.describe(self._gateway, parsed, description)

    def tag(self, ref: str, tags: Mapping[str, Any]) -> ModelVersion:
        """Add or overwrite tags of a version (metadata only: the weights never change).

        The record returned has ``change``: the event with the old and new values of the
        tags that changed (None when none did)."""
        from .pipelines import organise

        parsed = parse_ref(ref)
        clean = validate_tags(tags)
        if not clean:
            raise InvalidArgumentError("give at least one tag, such as {'stage': 'prod'}")
        return organise.tag(self._gateway, parsed, clean)

    def untag(self, ref: str, keys: list[str] | tuple[str, ...]) -> ModelVersion:
        """Remove tags by key (one key, or a list of them); a key the version does not
        have is an error."""
        from .pipelines import organise

        parsed = parse_ref(ref)
        if isinstance(keys, str):
            keys = [keys]
        if not keys:
            raise InvalidArgumentError("give at least one tag key to remove")
        validate_tags(dict.fromkeys(keys, ""))  # keys as push and tag take them
        return organise.untag(self._gateway, parsed, list(keys))

    def remove(self, ref: str, *, force: bool = False) -> ModelVersion:
        """Delete a version from the catalogue; returns it as it was.

        Its tensors stay stored until :meth:`gc` finds no version using them, so other
        versions that share them are never affected. A version an alias points at is
        only deleted with ``force=True``, which deletes those aliases too. Version
        numbers are never reused.
        """
        from .pipelines import organise

        return organise.remove(self._gateway, parse_ref(ref), force=force)

    # -- weights in -------------------------------------------------------------------

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
        from . import provenance
        from .pipelines import push

        request = push.check_request(
            self._gateway,
            source,
            name,
            arch=arch,
            arch_kwargs=arch_kwargs,
            tags=tags,
            description=description,
            parent=parent,
            strip_prefix=strip_prefix,
        )
        self._gateway.ensure_ready()
        pending = provenance.start(source)  # git answers while the weights are read
        prepared = push.prepare(source, request)
        return push.push(self._gateway, self._store, request, pending.result(), prepared, progress)

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
        from .pipelines import bundles

        return bundles.import_bundle(self._gateway, self._store, path, progress=progress)

    def mirror(
        self,
        target: Registry,
        name: str | None = None,
        *,
        workdir: str | os.PathLike[str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ImportReport:
        """Copy every version (of the models ``name`` matches: a name or glob) into
        ``target``, another registry on any backend, and return the import's report.

        It is :meth:`export` of those versions, oldest first, into one bundle in a
        temporary folder (``workdir``, default the system's; it needs room for the
        distinct tensor bytes once) and :meth:`import_bundle` of it into ``target``,
        so everything an export keeps is kept (lineage across names too), versions
        ``target`` already has are not added again, and running it twice copies only
        what is new. Raises InvalidArgumentError when there is nothing to copy.
        """
        import tempfile

        if not isinstance(target, Registry):
            raise InvalidArgumentError("target= must be a Registry (the one to copy into)")
        refs = [v.ref for v in self.list(name, sort="created", reverse=True)]
        if not refs:
            raise InvalidArgumentError(
                f"no versions of {name!r} to mirror" if name else "this registry has no versions"
            )
        with tempfile.TemporaryDirectory(prefix="registry-mirror-", dir=workdir) as folder:
            bundle = Path(folder) / "mirror.tar"
            self.export(refs, bundle, progress=progress)
            return target.import_bundle(bundle, progress=progress)

    # -- weights out ------------------------------------------------------------------

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
        from .pipelines import read

        return read.state_dict(read.open_version(self._gateway, self._store, ref, verify))

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
        from .pipelines import read

        read.check_dtype(dtype)
        return read.load(
            self._gateway,
            self._store,
            ref,
            device=device,
            dtype=dtype,
            strict=strict,
            verify=verify,
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
        from .pipelines import read

        return read.load_into(self._gateway, self._store, module, ref, strict=strict, verify=verify)

    def diff(self, a: str, b: str) -> Diff:
        """How version ``b`` differs from version ``a``, tensor by tensor.

        Tensors with the same digest count as identical without being read; only
        tensors that differ are read, to measure the largest absolute difference and
        the relative L2 norm of the change.
        """
        from .pipelines import read

        return read.diff(self._gateway, self._store, a, b)

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
        from .pipelines import read

        return read.pull(
            self._gateway,
            self._store,
            ref,
            path,
            format=format,
            overwrite=overwrite,
            progress=progress,
        )

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
        called with the number of bytes of each distinct stored tensor written. An existing file is
        replaced only with ``overwrite=True`` (else :class:`OutputExistsError`, raised
        before anything is read).
        """
        from .pipelines import bundles

        refs = [refs] if isinstance(refs, str) else list(refs)
        return bundles.export(
            self._gateway, self._store, refs, path, overwrite=overwrite, progress=progress
        )

    # -- the store ----------------------------------------------------------------------

    def _pack_cache(self) -> PackCache:
        """The read cache of this registry's object store (or, for a folder store, of
        whatever object stores share the cache folder)."""
        cache = getattr(self._store, "cache", None)
        if cache is None:
            from .storage.cache import PackCache

            cache = PackCache(
                self.settings.pack_cache_dir, self.settings.storage_url, config.cache_max_bytes()
            )
        return cache

    def reader_grants(self, role: str, *, run: bool = False) -> list[str]:
        """The SQL statements that give the PostgreSQL role ``role`` read-only access to
        this catalogue (CONNECT, USAGE on the schema, SELECT on every table now and on
        those later migrations add); with ``run=True`` they are executed, as this
        connection's (privileged) role, in one transaction.

        Raises InvalidArgumentError for a name no role can have, NotFoundError (with
        ``run``) when there is no such role, CatalogError on SQLite (read-only access
        there is the file's permissions) or when this role may not grant them.
        """
        from .pipelines import maintenance

        return maintenance.reader_grants(self._gateway, role, run=run)

    def cache_info(self) -> CacheInfo:
        """What the local read cache holds: its folder, packs, bytes on disk, its bound
        (``REGISTRY_CACHE_MAX_SIZE``) and the stores it holds packs of.

        Only an object store (``s3://``) is read through the cache; a folder store's
        packs are read in place.
        """
        return self._pack_cache().info()

    def prune_cache(self, max_bytes: int | None = None) -> tuple[int, int]:
        """Remove cached packs, least recently used first, until the cache holds at most
        ``max_bytes`` (default: ``REGISTRY_CACHE_MAX_SIZE``); returns (packs removed,
        bytes freed). Loads refetch whatever they need."""
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 0):
            raise InvalidArgumentError(f"max_bytes={max_bytes!r}: give a number of bytes >= 0")
        return self._pack_cache().prune(max_bytes)

    def clear_cache(self) -> tuple[int, int]:
        """Empty the read cache; returns (packs removed, bytes freed)."""
        return self._pack_cache().clear()

    def gc(self, *, dry_run: bool = False, grace: float | None = None) -> GcReport:
        """Remove stored tensors that no version uses any more; say how many bytes that frees.

        Packs holding only unused tensors are deleted; packs holding some are rewritten
        with just the used ones (their bytes re-checked against their sha256 on the
        way). Files in the store that no version names, left by crashed pushes and
        imports, are deleted as soon as the process that wrote them is known to be
        gone (every writer records itself in the catalogue before its first byte; one
        on this machine is checked by pid and start time); while it runs, never. A
        file whose writer cannot be judged from here (another machine), or that has
        no record (a crash before this release, a gc killed while rewriting), is
        deleted once older than ``grace`` seconds: by default an hour for a pack and a
        day for an unfinished temporary file or multipart upload (a slow upload may
        still run), by the store's clock. ``grace=0``, for an operator who knows no
        push runs elsewhere, brings the store back to exactly what the versions use
        (a push elsewhere that was still running then fails and must be run again).
        The catalogue changes in one transaction, committed after the rewritten packs
        are durable and before any file is deleted; on PostgreSQL it locks the tensor
        tables, so pushes wait to commit until it has (and a push that named a tensor
        gc removed starts over). ``dry_run=True`` only reads.

        Raises InvalidArgumentError for a negative ``grace``; CatalogReadOnlyError or
        StoreReadOnlyError, before anything changes, when the catalogue or the store
        refuses writes.
        """
        from .pipelines import maintenance

        if grace is not None and not grace >= 0:
            raise InvalidArgumentError(f"grace must be a number of seconds >= 0, not {grace!r}")
        return maintenance.gc(self._gateway, self._store, dry_run=dry_run, grace=grace)

    def verify(self, ref: str | None = None) -> VerifyReport:
        """Re-hash stored tensors (of one version, or all of them) against their sha256.

        Reports every corrupt tensor (bytes that do not match the digest or the
        checksum) and every missing one (its pack file gone or truncated), naming
        the versions that use it. With ``ref``, counts are of that version's tensors
        (a stored tensor that several of its keys use counts for each key).
        """
        from .pipelines import maintenance

        return maintenance.verify(self._gateway, self._store, ref)

    # -- architectures ------------------------------------------------------------------

    def identify(
        self, source: Any, *, limit: int = 5, strip_prefix: str | None = None
    ) -> list[Match]:
        """The known architectures whose key/shape signature best fits these weights.

        Keys under a wrapper's prefix (``module.``, ``_orig_mod.``, ``model.``) are
        tried without it too, as :meth:`push` does.
        """
        from . import fitting
        from .checkpoints import read_source

        return fitting.identify(read_source(source).state_dict, limit, strip_prefix)

    def architectures(self) -> list[tuple[str, str]]:
        """(name, source) of every architecture that can be rebuilt by name."""
        from . import architectures

        return architectures.available()


def _check_page(sort: str, sorts: Mapping[str, Any], limit: int | None, offset: int) -> None:
    """InvalidArgumentError unless ``sort`` is one of ``sorts`` and the page is >= 0."""
    if sort not in sorts:
        raise InvalidArgumentError(f"unknown sort {sort!r}: use {', '.join(sorts)}")
    if (limit is not None and limit < 0) or offset < 0:
        raise InvalidArgumentError("limit and offset cannot be negative")


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
