"""The records the Python API returns: plain, immutable, JSON-ready, torch-free."""

from __future__ import annotations

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "bytes_written": self.bytes_written,
            "tensors_written": self.tensors_written,
            "healed": self.healed,
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
        }
        if tensors and self.tensors:
            out["tensors"] = [t.to_dict() for t in self.tensors]
        if self.pushed is not None:
            out.update(self.pushed.to_dict())
        return out


@dataclass(frozen=True)
class TensorChange:
    """A tensor present in both versions, same shape and dtype, different values."""

    name: str
    max_abs_diff: float
    rel_l2: float  # ||b - a|| / ||a|| (inf if a is all zeros and b is not)
    nbytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_abs_diff": self.max_abs_diff,
            "rel_l2": self.rel_l2,
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
