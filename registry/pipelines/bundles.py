"""Bundles: export versions with every tensor they use to one tar file; import them.

The tar format itself (members, manifest, strict parsing of untrusted input) is
``bundle_file``; this module is the pipeline around it. Export reads each version
through the read pipeline (every tensor checked against its sha256 on the way out).
Import checks the whole bundle before storing anything, writes the tensors this
registry lacks as one pack, and commits every version in one write transaction after
that pack is durable, so a bad bundle or a crash changes nothing. Must never import
``api`` or ``cli``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._progress import begin
from ..catalog.gateway import Catalog, Contention, Gateway, VersionRow
from ..errors import IntegrityError, InvalidArgumentError
from ..records import PROVENANCE_FIELDS, ModelVersion
from ..storage import PackWritten, Store, checksum_many
from .bundle_file import (
    EXTRA_KEYS,
    Bundle,
    BundleVersion,
    ExportReport,
    ImportReport,
    in_lineage_order,
    write_bundle,
)
from .merge import add_to_existing
from .pending import give_up, start_pending_pack, wait_pending
from .read import open_version

_ATTEMPTS = 3


def export(
    gateway: Gateway,
    store: Store,
    refs: list[str],
    path: str | os.PathLike[str],
    *,
    overwrite: bool,
    progress: Callable[[int], None] | None,
) -> ExportReport:
    """Write the versions ``refs`` name to a bundle (see ``Registry.export``)."""
    from .._files import is_folder_path, refuse_existing

    if not refs:
        raise InvalidArgumentError("name at least one version to export")
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
        opened = open_version(gateway, store, ref, verify="sha256", progress=progress)
        record = opened.record
        records.setdefault(record.ref, replace(record, tensors=opened.tensor_infos()))
        extras[record.ref] = {key: getattr(opened, key) for key in EXTRA_KEYS}
        blobs.update(opened.views)
    return write_bundle(
        Path(path), list(records.values()), blobs, progress, extras, overwrite=overwrite
    )


@dataclass
class _Import:
    """One import's state while its transaction runs (reset on a retry)."""

    bundle_path: str
    who: tuple[str, str | None]
    outcome: list[tuple[str, str, bool]] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)  # bundle ref -> version id here
    refs_here: dict[str, str] = field(default_factory=dict)  # bundle ref -> ref here
    notes: list[str] = field(default_factory=list)

    def parent(self, v: BundleVersion) -> tuple[str, int] | None:
        parent_id = self.ids.get(v.parent) if v.parent else None
        return (self.refs_here[v.parent], parent_id) if parent_id is not None else None  # type: ignore[index]


def import_bundle(
    gateway: Gateway,
    store: Store,
    path: str | os.PathLike[str],
    *,
    progress: Callable[[int], None] | None,
) -> ImportReport:
    """Add the versions of a bundle (see ``Registry.import_bundle``).

    A :class:`Contention` (a concurrent writer, or ``gc`` removing a tensor this import
    found stored) starts it over from the question of what is stored. Raises
    CatalogReadOnlyError, before anything is read or stored, when the catalogue
    refuses writes.
    """
    from .. import provenance

    gateway.check_writable()  # the bundle's tensors are stored before the rows
    store.check_writable()  # an import that only adds rows must be refused too
    who = provenance.actor()
    for attempt in range(_ATTEMPTS):
        with Bundle(path) as bundle:
            versions = in_lineage_order(bundle.versions)
            missing, data = _read_blobs(
                gateway, bundle, versions, progress if not attempt else None
            )
        gateway.ensure_ready()
        state = _Import(os.path.abspath(os.fspath(path)), who)
        try:
            written = _commit(gateway, store, state, versions, missing, data)
        except Contention:
            if attempt == _ATTEMPTS - 1:
                raise
            continue
        return ImportReport(
            versions=state.outcome,
            tensors_written=len(missing),
            bytes_written=written.nbytes if written else 0,
            notes=tuple(state.notes),
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _commit(
    gateway: Gateway,
    store: Store,
    state: _Import,
    versions: list[BundleVersion],
    missing: list[str],
    data: list[memoryview],
) -> PackWritten | None:
    """Write the tensors not stored here as one pack, then every version's rows in one
    write transaction, committed after the pack is durable; the pack, if any."""
    written = start_pending_pack(gateway, store, data, "import") if data else None
    committed = False
    try:
        if written is not None and written.digests != missing:  # pragma: no cover
            raise IntegrityError("bundle blobs changed while they were being stored")
        with gateway.write() as catalog:
            if written is not None:
                sizes = [v.nbytes for v in data]
                catalog.add_pack(
                    written.pack_id,
                    written.nbytes,
                    list(zip(missing, written.offsets, sizes, checksum_many(data))),
                )
            for v in versions:
                existing = catalog.version_by_digest(v.name, v.digest, hold=True)
                if existing is not None:
                    _merge(catalog, state, v, existing)
                else:
                    _add(catalog, state, v)
            if written is not None:
                wait_pending(written)  # the pack is durable before the rows naming it
        committed = True
    finally:
        if written is not None and not committed:
            give_up(gateway, store, written)
    return written


def _read_blobs(
    gateway: Gateway,
    bundle: Bundle,
    versions: list[BundleVersion],
    progress: Callable[[int], None] | None,
) -> tuple[list[str], list[memoryview]]:
    """Check every blob of the bundle against its digest; (digests not stored here,
    their bytes)."""
    needed = sorted({t[3] for v in versions for t in v.tensors})
    with gateway.read() as catalog:
        present = catalog.known_digests(needed)
    missing = [d for d in needed if d not in present]
    begin(progress, sum(bundle.blob_sizes[d] for d in missing), "checking")
    data = []
    for digest in needed:  # every blob is checked, also those not stored again
        blob = bundle.blob(digest)
        if digest in present:
            continue
        data.append(memoryview(blob))
        if progress is not None:
            progress(data[-1].nbytes)
    return missing, data


def _merge(catalog: Catalog, state: _Import, v: BundleVersion, existing: VersionRow) -> None:
    """A bundle version whose weights this registry has under its name: give that
    version what it lacks (tags, description, parent, aliases), keep what it has."""
    here = f"{v.name}:{existing.version}"
    changed, kept, added = add_to_existing(
        catalog,
        existing,
        tags=v.tags,
        description=v.description,
        parent=state.parent(v),
        strict=False,
    )
    added_aliases = []
    for alias in v.aliases:  # only aliases this model lacks
        target = catalog.alias_target(existing.model_id, alias)
        if target is None:
            catalog.set_alias(existing.model_id, alias, existing.id)
            added_aliases.append(alias)
            changed += (f"alias {alias}",)
        elif target[0] != existing.id:
            kept += (f"{v.name}:{alias} points at another version",)
    if added_aliases:
        added["aliases"] = added_aliases
    if added:
        catalog.record_event(
            "import",
            existing,
            {k: None for k in added},
            {"bundle": state.bundle_path, "from": v.ref, "already": here, **added},
            actor=state.who,
        )
    if changed:
        state.notes.append(f"{v.ref} is {here} here; added {', '.join(changed)}")
    if kept:
        state.notes.append(f"{v.ref} is {here} here, which keeps its own: " + "; ".join(kept))
    state.ids[v.ref] = existing.id
    state.refs_here[v.ref] = here
    state.outcome.append((v.ref, here, False))


def _add(catalog: Catalog, state: _Import, v: BundleVersion) -> None:
    """A new version from the bundle, with its number if this registry never used it."""
    parent = state.parent(v)
    if v.parent and parent is None:
        state.notes.append(f"{v.ref}: its parent {v.parent} is not in the bundle; lineage not kept")
    model_id, number = catalog.next_version(v.name, wanted=v.version)
    row = catalog.add_version(
        model_id,
        number,
        {
            "digest": v.digest,
            "arch": v.arch,
            "arch_kwargs": dict(v.arch_kwargs),
            "description": v.description,
            "parent_id": parent[1] if parent else None,
            "param_count": v.param_count,
            "torch_version": v.torch_version,
            "source_format": v.source_format,
            "state_metadata": v.state_metadata,
            "file_metadata": v.file_metadata,
            "assumed_metadata": v.assumed_metadata,
            "origin_created_at": v.origin_created_at or v.created_at,
            **{key: getattr(v, key) for key in PROVENANCE_FIELDS},
        },
        v.tensors,
        v.tags,
    )
    catalog.record_event(
        "import",
        row,
        None,
        {
            "bundle": state.bundle_path,
            "from": v.ref,
            "origin_created_at": v.origin_created_at or v.created_at,
            "aliases": list(v.aliases),
        },
        actor=state.who,
    )
    for alias in v.aliases:
        moved = catalog.alias_target(model_id, alias)
        catalog.set_alias(model_id, alias, row.id)
        if moved is not None and moved[0] != row.id:
            state.notes.append(
                f"moved {v.name}:{alias} from {v.name}:{moved[1]} to {v.name}:{number}"
            )
            catalog.record_event(
                "alias",
                row,
                {"alias": alias, "version": moved[1]},
                {"alias": alias, "version": number},
                actor=state.who,
            )
    state.ids[v.ref] = row.id
    state.refs_here[v.ref] = f"{v.name}:{number}"
    state.outcome.append((v.ref, f"{v.name}:{number}", True))


__all__ = ["ExportReport", "ImportReport", "export", "import_bundle"]
