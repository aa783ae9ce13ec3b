"""The records the Python API returns: plain, immutable, JSON-ready, torch-free."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Shared:
    """Where one key sits in a storage it shares with other keys of the same version
    (tied weights; see ``registry.sharing``)."""

    group: int  # position of the group's first key in the version's tensor table
    offset: int  # bytes from the storage's start to the key's first element
    stride: tuple[int, ...]  # in elements


@dataclass(frozen=True)
class TensorInfo:
    """One state-dict entry of a version.

    ``shared`` is set for keys that were one storage with other keys at push (tied
    weights): the position of the group's first key, and where this key sits in it.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    digest: str
    nbytes: int
    shared: Shared | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "digest": f"sha256:{self.digest}",
            "nbytes": self.nbytes,
        }
        if self.shared is not None:
            out["storage"] = {
                "group": self.shared.group,
                "offset": self.shared.offset,
                "stride": list(self.shared.stride),
            }
        return out


@dataclass(frozen=True)
class PushReport:
    """What a push did: whether it made a version, how much it wrote, what it noticed."""

    created: bool
    bytes_written: int
    tensors_written: int  # the version's tensors whose bytes were not stored before
    notes: tuple[str, ...] = ()
    healed: int = 0  # damaged stored tensors this push's good bytes replaced
    #: What a push of weights already stored gave the existing version, one phrase per
    #: change ("tag task=cifar10", "description", "parent base:1"); empty otherwise.
    changed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "bytes_written": self.bytes_written,
            "tensors_written": self.tensors_written,
            "healed": self.healed,
            "changed": list(self.changed),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class ModelVersion:
    """A version in the catalogue. ``tensors`` is filled by ``get``, empty from ``list``."""

    name: str
    version: int
    digest: str
    arch: str
    arch_kwargs: dict[str, Any]
    created_at: datetime
    total_bytes: int
    param_count: int
    tensor_count: int
    torch_version: str
    source_format: str
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    parent: str | None = None
    tensors: tuple[TensorInfo, ...] = ()
    pushed: PushReport | None = None
    #: What the call that returned this record changed (tag, untag, alias, unalias,
    #: describe): the event it recorded; None when it changed nothing or is no change.
    change: Event | None = None
    # Provenance (None for versions pushed before it was recorded): who pushed it on
    # which host, the pushed file, the git commit of the working folder and whether
    # its tracked files had changes, the registry's version; for an imported version,
    # when it was first created where it came from (``created_at`` is when it
    # entered this registry). ``arch_module`` names the module that registered the
    # architecture's name in code, if it was.
    pushed_by: str | None = None
    pushed_host: str | None = None
    source_path: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    registry_version: str | None = None
    origin_created_at: datetime | None = None
    arch_module: str | None = None

    @property
    def ref(self) -> str:
        """The reference that names this version exactly: ``NAME:VERSION``."""
        return f"{self.name}:{self.version}"

    def __str__(self) -> str:
        return self.ref

    def to_dict(self, *, tensors: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ref": self.ref,
            "name": self.name,
            "version": self.version,
            "digest": f"sha256:{self.digest}",
            "arch": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "description": self.description,
            "tags": self.tags,
            "aliases": list(self.aliases),
            "parent": self.parent,
            "created_at": self.created_at.isoformat(),
            "total_bytes": self.total_bytes,
            "param_count": self.param_count,
            "tensor_count": self.tensor_count,
            "torch_version": self.torch_version,
            "source_format": self.source_format,
            "pushed_by": self.pushed_by,
            "pushed_host": self.pushed_host,
            "source_path": self.source_path,
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
            "registry_version": self.registry_version,
            "origin_created_at": (
                self.origin_created_at.isoformat() if self.origin_created_at else None
            ),
            "arch_module": self.arch_module,
        }
        if tensors and self.tensors:
            out["tensors"] = [t.to_dict() for t in self.tensors]
        if self.pushed is not None:
            out.update(self.pushed.to_dict())
        if self.change is not None:
            out["change"] = self.change.to_dict()
        return out


@dataclass(frozen=True)
class TensorRow:
    """One row of a version's tensor table: its place in the state dict, the tensor,
    and the key whose storage it shares (tied weights), if another key's."""

    position: int
    tensor: TensorInfo
    shares_with: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, **self.tensor.to_dict(), "shares_with": self.shares_with}


@dataclass(frozen=True)
class TensorPage:
    """One page of a version's tensor table, filtered and sorted: ``matching`` rows
    match the filter, of ``tensor_count`` in the version; ``rows`` start at ``offset``."""

    ref: str
    tensor_count: int
    matching: int
    offset: int
    rows: tuple[TensorRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "tensor_count": self.tensor_count,
            "matching": self.matching,
            "offset": self.offset,
            "tensors": [row.to_dict() for row in self.rows],
        }


@dataclass(frozen=True)
class ModelSummary:
    """One model name at a glance: its latest version, how many it has, its aliases."""

    name: str
    latest: ModelVersion  # the highest-numbered version, without its tensor table
    versions: int  # how many versions the model has now
    last_pushed_at: datetime  # the newest version's creation time (UTC)
    all_versions_bytes: int  # the tensor bytes of all its versions, counted per version
    aliases: dict[str, int] = field(default_factory=dict)  # alias -> version number

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": self.versions,
            "latest": self.latest.to_dict(tensors=False),
            "aliases": dict(self.aliases),
            "last_pushed_at": self.last_pushed_at.isoformat(),
            "all_versions_bytes": self.all_versions_bytes,
        }


@dataclass(frozen=True)
class StorageReport:
    """How many bytes the versions hold against how many the store keeps.

    ``logical_bytes`` counts every version's tensors as if each were a file of its
    own (a state dict saved per version); ``unique_bytes`` counts each distinct tensor
    once, among those some version uses (what content addressing keeps);
    ``stored_bytes`` is the size of the packs the catalogue names (``unique_bytes``
    plus pack headers and tensors no version uses until ``gc`` removes them). ``gc`` is a dry run's report: what ``gc`` would
    free now, files no version names included.
    """

    versions: int
    models: int
    logical_bytes: int
    unique_bytes: int
    stored_bytes: int
    packs: int
    gc: GcReport | None = None

    @property
    def saved_bytes(self) -> int:
        """What deduplication saves: logical bytes not stored a second time (>= 0)."""
        return max(self.logical_bytes - self.unique_bytes, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "versions": self.versions,
            "models": self.models,
            "logical_bytes": self.logical_bytes,
            "unique_bytes": self.unique_bytes,
            "stored_bytes": self.stored_bytes,
            "saved_bytes": self.saved_bytes,
            "packs": self.packs,
            "gc": self.gc.to_dict() if self.gc is not None else None,
        }


#: Where a version came from, by the names ModelVersion, the catalogue's columns and
#: bundles share: text or None (``git_dirty`` a boolean or None). ``arch_module`` is
#: the module that registered the architecture's name in code, if one did.
PROVENANCE_FIELDS = (
    "pushed_by",
    "pushed_host",
    "source_path",
    "git_commit",
    "git_dirty",
    "registry_version",
    "arch_module",
)


#: What each kind of event records (``before`` -> ``after``, as JSON values):
#:
#: - ``push`` (from the version itself): None -> {digest, arch, arch_kwargs, parent,
#:   source_path, git_commit, git_dirty, registry_version, torch_version}
#: - ``tag``: {key: old value} for keys that had one -> {key: new value}
#: - ``untag``: {key: old value} -> {}
#: - ``alias``: {alias, version: old} or None (a new alias) -> {alias, version: new}
#: - ``unalias``: {alias, version} -> None
#: - ``describe``: {description: old} -> {description: new} (None: no description)
#: - ``remove``: {digest, arch, arch_kwargs, tags, aliases, description, parent,
#:   pushed_by, pushed_host, created_at, ..., children: refs that lost their parent}
#:   -> None
#: - ``import``: None -> {bundle, from, origin_created_at, aliases}
#: - ``push-update``: {tags, description, parent: None} -> {tags: {key: value} added,
#:   description, parent: ref}, the keys present being what a push of weights already
#:   stored gave that version (it had none of them before)
EVENT_KINDS = (
    "push",
    "tag",
    "untag",
    "alias",
    "unalias",
    "describe",
    "remove",
    "import",
    "push-update",
)


@dataclass(frozen=True)
class Event:
    """One entry of a model's history (see :data:`EVENT_KINDS` for ``before``/``after``).

    ``actor`` is who did it (``unknown`` for pushes recorded before provenance was),
    ``host`` where; ``version`` is None for an event on the model as a whole. ``id``
    is None for a push, which is read from the version itself.
    """

    at: datetime
    kind: str
    name: str
    version: int | None
    actor: str
    host: str | None = None
    before: Any = None
    after: Any = None
    id: int | None = None

    @property
    def ref(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"

    def summary(self) -> str:
        """The change on one line, e.g. ``alias production: tuned:1 -> tuned:2``."""
        before = self.before if isinstance(self.before, dict) else {}
        after = self.after if isinstance(self.after, dict) else {}
        kind = self.kind
        if kind == "push":
            text = f"pushed {after.get('arch', '?')}"
            if after.get("digest"):
                text += f" {_short_digest(after['digest'])}"
            if after.get("parent"):
                text += f" from {after['parent']}"
            if after.get("source_path"):
                text += f", file {after['source_path']}"
            if after.get("git_commit"):
                dirty = ", dirty" if after.get("git_dirty") else ""
                text += f" (git {str(after['git_commit'])[:12]}{dirty})"
            return text
        if kind in ("tag", "untag"):
            keys = list(dict.fromkeys([*before, *after]))
            return f"{kind} " + ", ".join(
                f"{key}: {_or_none(before.get(key))} -> {_or_none(after.get(key))}" for key in keys
            )
        if kind in ("alias", "unalias"):
            alias = after.get("alias") or before.get("alias") or "?"
            old = f"{self.name}:{before['version']}" if "version" in before else "(none)"
            new = f"{self.name}:{after['version']}" if "version" in after else "(none)"
            return f"alias {alias}: {old} -> {new}"
        if kind == "describe":
            return (
                f"description: {_quoted(before.get('description'))} -> "
                f"{_quoted(after.get('description'))}"
            )
        if kind == "remove":  # its aliases' deletion is an unalias event each
            text = f"removed {_short_digest(before.get('digest', '?'))}"
            if before.get("children"):
                children = before["children"]
                text += f"; {', '.join(children)} lost {'its' if len(children) == 1 else 'their'} parent"
            return text
        if kind == "push-update":  # an identical push gave the version what it lacked
            parts = [f"tag {k}={v}" for k, v in (after.get("tags") or {}).items()]
            if "description" in after:
                parts.append(f"description {_quoted(after['description'])}")
            if "parent" in after:
                parts.append(f"parent {after['parent']}")
            return "identical push added " + ", ".join(parts)
        if kind == "import":
            text = f"imported {after.get('from', '?')} from {after.get('bundle', '?')}"
            if after.get("origin_created_at"):
                from ._format import when

                created = after["origin_created_at"]
                try:
                    created = when(datetime.fromisoformat(str(created)))
                except ValueError:
                    pass
                text += f" (created {created})"
            return text
        changed = sorted(set(before) | set(after))
        return f"{kind}: " + (
            ", ".join(
                f"{k}: {_or_none(before.get(k))} -> {_or_none(after.get(k))}" for k in changed
            )
            if changed
            else "no details"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "kind": self.kind,
            "ref": self.ref,
            "name": self.name,
            "version": self.version,
            "actor": self.actor,
            "host": self.host,
            "before": self.before,
            "after": self.after,
            "summary": self.summary(),
        }


def _short_digest(digest: Any) -> str:
    return "sha256:" + str(digest).removeprefix("sha256:")[:12]


def _or_none(value: Any) -> str:
    return "(none)" if value is None else str(value)


def _quoted(value: Any, width: int = 40) -> str:
    if value is None:
        return "(none)"
    text = " ".join(str(value).split())
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class TensorChange:
    """A tensor present in both versions, same shape and dtype, different values."""

    name: str
    max_abs_diff: float
    rel_l2: float  # ||b - a|| / ||a|| (inf if a is all zeros and b is not)
    nbytes: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a value that is not finite (``rel_l2`` of a tensor that was all
        zeros, anything of one holding NaN) is None, as JSON has no infinity."""
        return {
            "name": self.name,
            "max_abs_diff": _finite(self.max_abs_diff),
            "rel_l2": _finite(self.rel_l2),
            "nbytes": self.nbytes,
        }


@dataclass(frozen=True)
class Diff:
    """How version ``b`` differs from version ``a``, tensor by tensor."""

    a: str
    b: str
    added: list[TensorInfo]
    removed: list[TensorInfo]
    reshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
    dtype_changed: list[tuple[str, str, str]]
    changed: list[TensorChange]
    identical: int
    changed_bytes: int  # bytes of b's tensors that are not identical to a's
    total_bytes: int  # all of b's tensor bytes

    @property
    def same(self) -> bool:
        return not (
            self.added or self.removed or self.reshaped or self.dtype_changed or self.changed
        )

    def summary(self) -> str:
        """One line, e.g. ``2 changed, 120 identical, 8.2 MB of 102.4 MB differ``."""
        from ._format import size

        parts = [f"{len(self.changed)} changed"]
        for label, items in (
            ("added", self.added),
            ("removed", self.removed),
            ("reshaped", self.reshaped),
            ("dtype changed", self.dtype_changed),
        ):
            if items:
                parts.append(f"{len(items)} {label}")
        parts.append(f"{self.identical} identical")
        parts.append(f"{size(self.changed_bytes)} of {size(self.total_bytes)} differ")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "added": [t.to_dict() for t in self.added],
            "removed": [t.to_dict() for t in self.removed],
            "reshaped": [
                {"name": n, "shape_a": list(sa), "shape_b": list(sb)} for n, sa, sb in self.reshaped
            ],
            "dtype_changed": [
                {"name": n, "dtype_a": da, "dtype_b": db} for n, da, db in self.dtype_changed
            ],
            "changed": [c.to_dict() for c in self.changed],
            "identical": self.identical,
            "changed_bytes": self.changed_bytes,
            "total_bytes": self.total_bytes,
            "summary": self.summary(),
        }


@dataclass(frozen=True)
class GcReport:
    """What garbage collection removed (or, in a dry run, would remove)."""

    dry_run: bool
    bytes_freed: int
    blobs_removed: int
    packs_removed: int
    packs_rewritten: int
    orphan_files_removed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "bytes_freed": self.bytes_freed,
            "blobs_removed": self.blobs_removed,
            "packs_removed": self.packs_removed,
            "packs_rewritten": self.packs_rewritten,
            "orphan_files_removed": self.orphan_files_removed,
        }


@dataclass(frozen=True)
class Problem:
    """A stored tensor that is corrupt or missing, and which versions use it."""

    digest: str
    pack_id: str
    kind: str  # "corrupt" or "missing"
    used_by: tuple[str, ...]  # "name:version tensor-name"

    def __str__(self) -> str:
        users = ", ".join(self.used_by[:3]) + (
            f" and {len(self.used_by) - 3} more" if len(self.used_by) > 3 else ""
        )
        return f"{self.kind} tensor sha256:{self.digest[:12]} in pack {self.pack_id} (used by {users or 'no version'})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": f"sha256:{self.digest}",
            "pack_id": self.pack_id,
            "kind": self.kind,
            "used_by": list(self.used_by),
        }


@dataclass(frozen=True)
class VerifyReport:
    """The result of re-hashing stored tensors."""

    checked: int  # the version's tensors (with a ref), else the stored tensors
    checked_bytes: int
    corrupt: list[Problem]
    missing: list[Problem]
    ref: str | None = None  # the version checked; None: the whole store

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.missing)

    def affected(self, kind: str) -> int:
        """How many tensors (of the version, or of all versions) have corrupt/missing bytes."""
        problems = self.corrupt if kind == "corrupt" else self.missing
        uses = [u for p in problems for u in p.used_by]
        if self.ref is not None:
            uses = [u for u in uses if u.split(" ", 1)[0] == self.ref]
        return len(uses)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "ref": self.ref,
            "checked": self.checked,
            "checked_bytes": self.checked_bytes,
            "corrupt_tensors": self.affected("corrupt"),
            "missing_tensors": self.affected("missing"),
            "corrupt": [p.to_dict() for p in self.corrupt],
            "missing": [p.to_dict() for p in self.missing],
        }
