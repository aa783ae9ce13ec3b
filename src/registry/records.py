"""The records the Python API returns: plain, immutable, JSON-ready, torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class TensorInfo:
    """One state-dict entry of a version."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    digest: str
    nbytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "digest": f"sha256:{self.digest}",
            "nbytes": self.nbytes,
        }


@dataclass(frozen=True)
class PushReport:
    """What a push did: whether it made a version, how much it wrote, what it noticed."""

    created: bool
    bytes_written: int
    tensors_written: int
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "bytes_written": self.bytes_written,
            "tensors_written": self.tensors_written,
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
