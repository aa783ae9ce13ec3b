"""Bundles: versions with everything they need, in one tar file, to move between registries.

Layout (an uncompressed POSIX tar, members in this order)::

    manifest.json          format, the versions (catalogue rows, tags, aliases,
                           lineage, tensor tables) and the size of every blob
    blobs/<sha256>         one member per distinct tensor, its raw bytes

A bundle is untrusted input. Import accepts only regular-file members named exactly
as above, parses the manifest strictly, checks every version digest against its
tensor table and every blob against its sha256, and changes nothing (no file, no
row) until all of that has passed.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._files import replacing
from .._progress import begin
from ..errors import IntegrityError, InvalidArgumentError, MissingFileError, RegistryError
from ..keyvalue import parse_date, validate_arch_kwargs, validate_tags
from ..metadata import PLAIN_VALUES
from ..records import PROVENANCE_FIELDS, ModelVersion
from ..refs import parse_ref, validate_alias, validate_name
from ..sharing import DTYPE_SIZES, Shared, check_groups, manifest_terms, to_columns
from ..storage import manifest_digest, sha256_many

BUNDLE_FORMAT = "registry-bundle"
#: 2 adds each tensor's place in a storage shared with other keys and the metadata the
#: pushed weights carried; bundles of version 1 are still read.
BUNDLE_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 256 << 20
_BLOB_RE = re.compile(r"blobs/([0-9a-f]{64})")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: the versions' tensors, stored once per distinct content."""

    path: str
    versions: list[str]
    tensors: int  # the versions' tensors (state-dict keys), as a user counts them
    bytes: int  # bytes of tensor data written
    blobs: int = 0  # distinct contents written (equal tensors are written once)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "versions": self.versions,
            "tensors": self.tensors,
            "blobs": self.blobs,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class ImportReport:
    """What an import did: per version (ref in the bundle, ref here, newly created?)."""

    versions: list[tuple[str, str, bool]]
    tensors_written: int
    bytes_written: int
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "versions": [{"source": s, "ref": t, "created": c} for s, t, c in self.versions],
            "tensors_written": self.tensors_written,
            "bytes_written": self.bytes_written,
            "notes": list(self.notes),
        }


# -- export ----------------------------------------------------------------------------


#: What a version's source carried besides tensors, as ``_Opened`` and the catalogue
#: name it.
EXTRA_KEYS = ("state_metadata", "file_metadata", "assumed_metadata")


def version_entry(record: ModelVersion, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A version as the manifest holds it; ``extra`` holds the metadata its source carried."""
    return {
        "name": record.name,
        "version": record.version,
        "digest": record.digest,
        "arch": record.arch,
        "arch_kwargs": record.arch_kwargs,
        "description": record.description,
        "tags": record.tags,
        "aliases": list(record.aliases),
        "parent": record.parent,
        "created_at": record.created_at.isoformat(),
        "torch_version": record.torch_version,
        "source_format": record.source_format,
        "param_count": record.param_count,
        "tensors": [
            [
                t.name,
                t.dtype,
                list(t.shape),
                t.digest,
                t.nbytes,
                None
                if t.shared is None
                else [t.shared.group, t.shared.offset, list(t.shared.stride)],
            ]
            for t in record.tensors
        ],
        **{key: (extra or {}).get(key) for key in EXTRA_KEYS},
        **{key: getattr(record, key) for key in PROVENANCE_FIELDS},
        "origin_created_at": (
            record.origin_created_at.isoformat() if record.origin_created_at else None
        ),
    }


class _ViewReader(io.RawIOBase):
    """A read-only file over a memoryview, so tarfile copies without a full-size bytes."""

    def __init__(self, view: memoryview):
        self._view, self._pos = view, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._view[self._pos : self._pos + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def write_bundle(
    target: Path,
    records: Sequence[ModelVersion],
    blobs: Mapping[str, memoryview],
    progress: Callable[[int], None] | None = None,
    extras: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    overwrite: bool = False,
) -> ExportReport:
    """Write ``records`` and the ``blobs`` they use to ``target`` atomically; an
    existing ``target`` is replaced only with ``overwrite`` (else OutputExistsError).

    ``extras`` maps a record's ref to the metadata its source carried
    (``state_metadata``, ``file_metadata``, ``assumed_metadata``).
    """
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "versions": [version_entry(r, (extras or {}).get(r.ref)) for r in records],
        "blobs": {d: v.nbytes for d, v in blobs.items()},
    }
    text = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")
    begin(progress, sum(v.nbytes for v in blobs.values()), "exporting")
    with (
        replacing(target, durable=True, overwrite=overwrite) as tmp,
        open(tmp, "wb") as raw,
        tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        _add(tar, MANIFEST, io.BytesIO(text), len(text))
        for digest, view in blobs.items():
            _add(tar, f"blobs/{digest}", _ViewReader(view), view.nbytes)
            if progress is not None:
                progress(view.nbytes)
    return ExportReport(
        path=str(target),
        versions=[r.ref for r in records],
        tensors=sum(r.tensor_count for r in records),
        blobs=len(blobs),
        bytes=sum(v.nbytes for v in blobs.values()),
    )


def _add(tar: tarfile.TarFile, name: str, data: Any, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o444, 0
    tar.addfile(info, data)


# -- import ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleVersion:
    """One version as the bundle describes it, validated."""

    name: str
    version: int
    digest: str
    arch: str
    arch_kwargs: dict[str, Any]
    description: str | None
    tags: dict[str, str]
    aliases: list[str]
    parent: str | None
    created_at: datetime
    torch_version: str
    source_format: str
    param_count: int
    #: (name, dtype, shape, digest, nbytes, storage_group, storage_view) per key
    tensors: list[tuple[str, str, list[int], str, int, int | None, Any]]
    state_metadata: list[Any] | None = None
    file_metadata: dict[str, str] | None = None
    assumed_metadata: list[Any] | None = None
    pushed_by: str | None = None
    pushed_host: str | None = None
    source_path: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    registry_version: str | None = None
    arch_module: str | None = None
    #: When the version was first created, if the registry it was exported from had
    #: imported it in turn (``created_at`` is then when it entered that registry).
    origin_created_at: datetime | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


class Bundle:
    """An opened, checked bundle: its versions, and its blobs' members for reading."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.exists():
            raise MissingFileError(self.path)
        try:
            self._tar = tarfile.open(self.path, mode="r:")
        except (OSError, tarfile.TarError) as exc:
            raise InvalidArgumentError(f"{self.path} is not a registry bundle: {exc}") from None
        try:
            self._members = self._check_members(self._tar.getmembers())
            self.versions, self.blob_sizes = self._read_manifest()
        except BaseException:
            self._tar.close()
            raise

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_members(self, members: Iterable[tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
        found: dict[str, tarfile.TarInfo] = {}
        for member in members:
            name = member.name
            if not member.isreg():
                raise IntegrityError(
                    f"bundle member {name!r} is not a regular file (links and folders are refused)"
                )
            if name != MANIFEST and not _BLOB_RE.fullmatch(name):
                raise IntegrityError(f"bundle member {name!r} is not part of the bundle format")
            if name in found:
                raise IntegrityError(f"bundle member {name!r} appears twice")
            found[name] = member
        if MANIFEST not in found:
            raise IntegrityError(f"{self.path} has no {MANIFEST}: not a registry bundle")
        return found

    def _read_manifest(self) -> tuple[list[BundleVersion], dict[str, int]]:
        member = self._members[MANIFEST]
        if member.size > MAX_MANIFEST_BYTES:
            raise IntegrityError(f"{MANIFEST} is {member.size} bytes: too large")
        raw = self._read(member)
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IntegrityError(f"{MANIFEST} is not valid JSON: {exc}") from None
        try:
            return _parse_manifest(data, self._members)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, RegistryError):
                raise IntegrityError(f"malformed {MANIFEST}: {exc}") from None
            raise IntegrityError(f"malformed {MANIFEST}: {type(exc).__name__}: {exc}") from None

    def _read(self, member: tarfile.TarInfo) -> bytes:
        handle = self._tar.extractfile(member)
        if handle is None:  # pragma: no cover - regular files always have data
            raise IntegrityError(f"cannot read bundle member {member.name!r}")
        data = handle.read()
        if len(data) != member.size:
            raise IntegrityError(f"bundle member {member.name!r} is truncated")
        return data

    def blob(self, digest: str) -> bytes:
        """A blob's bytes, checked against its sha256 (raises IntegrityError if they differ)."""
        data = self._read(self._members[f"blobs/{digest}"])
        if sha256_many([data])[0] != digest:
            raise IntegrityError(
                f"bundle blob sha256:{digest[:12]}... does not match its digest: the bundle "
                "was damaged or tampered with"
            )
        return data


def _parse_manifest(
    data: Any, members: Mapping[str, tarfile.TarInfo]
) -> tuple[list[BundleVersion], dict[str, int]]:
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"format is not {BUNDLE_FORMAT!r}")
    if data.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"unsupported bundle version {data.get('version')!r}")
    sizes = data["blobs"]
    if not isinstance(sizes, dict):
        raise TypeError("blobs must be an object")
    for digest, size in sizes.items():
        if not _HEX64.fullmatch(digest) or type(size) is not int or size < 0:
            raise ValueError(f"bad blob entry {digest!r}")
        member = members.get(f"blobs/{digest}")
        if member is None:
            raise ValueError(f"blob {digest[:12]}... is listed but not in the bundle")
        if member.size != size:
            raise ValueError(f"blob {digest[:12]}... is {member.size} bytes, listed as {size}")
    extra = {m[6:] for m in members if m != MANIFEST} - set(sizes)
    if extra:
        raise ValueError(f"{len(extra)} blob member(s) are not listed in the manifest")
    entries = data["versions"]
    if not isinstance(entries, list) or not entries:
        raise ValueError("versions must be a non-empty list")
    versions = [_parse_version(e, sizes) for e in entries]
    refs = [v.ref for v in versions]
    if len(set(refs)) != len(refs):
        raise ValueError("a version appears twice")
    return versions, dict(sizes)


def _text(value: Any, field: str, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a string")
    return value


def _parse_tensors(
    label: str, raw_tensors: Any, sizes: Mapping[str, int], digest: str
) -> tuple[list[tuple[str, str, list[int], str, int]], list[Shared | None]]:
    """A version's tensor table, each entry checked against the blobs the bundle has,
    and the version digest checked against the table: (tensors, storage places)."""
    tensors = []
    shared: list[Shared | None] = []
    seen: set[str] = set()
    if not isinstance(raw_tensors, list) or not raw_tensors:
        raise ValueError(f"{label}: tensors must be a non-empty list")
    for item in raw_tensors:
        if not isinstance(item, list) or len(item) not in (5, 6):
            raise ValueError(f"{label}: each tensor must be a list of 5 or 6 fields")
        tname, dtype, shape, tdigest, nbytes = item[:5]
        place = item[5] if len(item) == 6 else None
        _text(tname, "tensor name")
        if tname in seen:
            raise ValueError(f"{label}: tensor {tname!r} appears twice")
        seen.add(tname)
        if dtype not in DTYPE_SIZES:
            raise ValueError(f"{label}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or any(type(d) is not int or d < 0 for d in shape):
            raise ValueError(f"{label}: bad shape for {tname!r}")
        count = 1
        for d in shape:
            count *= d
        if type(nbytes) is not int or nbytes != count * DTYPE_SIZES[dtype]:
            raise ValueError(f"{label}: size of {tname!r} does not match its shape")
        if not isinstance(tdigest, str) or tdigest not in sizes:
            raise ValueError(f"{label}: tensor {tname!r} uses a blob the bundle lacks")
        if sizes[tdigest] != nbytes:
            raise ValueError(f"{label}: blob of {tname!r} has the wrong size")
        shared.append(_place(place, f"{label}: storage of {tname!r}"))
        tensors.append((tname, dtype, shape, tdigest, nbytes))
    names = [t[0] for t in tensors]
    shapes = [t[2] for t in tensors]
    try:
        check_groups([t[1] for t in tensors], shapes, shared)
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from None
    terms = manifest_terms(names, shared)
    if manifest_digest((*t[:4], term) for t, term in zip(tensors, terms)) != digest:
        raise ValueError(f"{label}: digest does not match its tensor table")
    return tensors, shared


def _parse_version(entry: Any, sizes: Mapping[str, int]) -> BundleVersion:
    if not isinstance(entry, dict):
        raise TypeError("each version must be an object")
    name = validate_name(_text(entry["name"], "name"))
    number = entry["version"]
    if type(number) is not int or number < 1:
        raise ValueError(f"{name}: version must be a positive integer")
    digest = _text(entry["digest"], "digest")
    if not _HEX64.fullmatch(digest):
        raise ValueError(f"{name}:{number}: digest is not a sha256")
    tensors, shared = _parse_tensors(f"{name}:{number}", entry["tensors"], sizes, digest)
    aliases = entry.get("aliases") or []
    if not isinstance(aliases, list):
        raise TypeError(f"{name}:{number}: aliases must be a list")
    parent = _text(entry.get("parent"), "parent", optional=True)
    if parent is not None:
        parse_ref(parent)
    created = _moment(entry["created_at"], "created_at")
    origin = _moment(entry.get("origin_created_at"), "origin_created_at", optional=True)
    dirty = entry.get("git_dirty")
    if dirty is not None and not isinstance(dirty, bool):
        raise TypeError(f"{name}:{number}: git_dirty must be true, false or null")
    param_count = entry["param_count"]
    if type(param_count) is not int or param_count < 0:
        raise ValueError(f"{name}:{number}: param_count must be a non-negative integer")
    return BundleVersion(
        name=name,
        version=number,
        digest=digest,
        arch=_text(entry["arch"], "arch"),
        arch_kwargs=validate_arch_kwargs(entry.get("arch_kwargs") or {}),
        description=_text(entry.get("description"), "description", optional=True),
        tags=validate_tags(entry.get("tags") or {}),
        aliases=[validate_alias(_text(a, "alias")) for a in aliases],
        parent=parent,
        created_at=created,
        torch_version=_text(entry["torch_version"], "torch_version"),
        source_format=_text(entry["source_format"], "source_format"),
        param_count=param_count,
        tensors=[
            (*t, *to_columns(place, t[2]))
            for t, place in zip(tensors, shared)  # type: ignore[misc]
        ],
        state_metadata=_module_metadata(entry.get("state_metadata"), "state_metadata"),
        file_metadata=_file_metadata(entry.get("file_metadata")),
        assumed_metadata=_module_metadata(entry.get("assumed_metadata"), "assumed_metadata"),
        **{
            key: _provenance(entry.get(key), key) for key in PROVENANCE_FIELDS if key != "git_dirty"
        },
        git_dirty=dirty,
        origin_created_at=origin,
    )


#: The widest value each provenance column of the catalogue holds (source_path: any).
_WIDTHS = {"pushed_by": 255, "pushed_host": 255, "git_commit": 64, "registry_version": 64,
           "arch_module": 255}  # fmt: skip


def _provenance(value: Any, field: str) -> str | None:
    text = _text(value, field, optional=True)
    width = _WIDTHS.get(field)
    if text is not None and width is not None and len(text) > width:
        raise ValueError(f"{field} is longer than {width} characters")
    return text


def _moment(value: Any, field: str, optional: bool = False) -> Any:
    """An ISO 8601 time (naive means UTC), or None where ``optional``."""
    return parse_date(_text(value, field, optional), field)


def _place(value: Any, label: str) -> Shared | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError(f"{label} must be [group, offset, strides]")
    group, offset, stride = value
    if type(group) is not int or type(offset) is not int or not isinstance(stride, list):
        raise ValueError(f"{label} must be [group, offset, strides]")
    if any(type(s) is not int for s in stride):
        raise ValueError(f"{label} has strides that are not integers")
    return Shared(group, offset, tuple(stride))


def _module_metadata(value: Any, field: str) -> list[Any] | None:
    """A state dict's ``_metadata`` as stored: [[prefix, {key: plain value}], ...]."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise TypeError(f"{field} must be a list")
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"{field} entries must be [prefix, object]")
        if not isinstance(item[1], dict) or not all(
            isinstance(k, str) and isinstance(v, PLAIN_VALUES) for k, v in item[1].items()
        ):
            raise TypeError(f"{field} entries must map names to plain values")
    return value


def _file_metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError("file_metadata must map strings to strings")
    return value


def in_lineage_order(versions: Sequence[BundleVersion]) -> list[BundleVersion]:
    """Parents before their children (for those whose parent is in the bundle too)."""
    by_ref = {v.ref: v for v in versions}
    ordered: list[BundleVersion] = []
    placed: set[str] = set()

    def place(v: BundleVersion, depth: int = 0) -> None:
        if v.ref in placed or depth > len(versions):
            return
        if v.parent in by_ref:
            place(by_ref[v.parent], depth + 1)
        placed.add(v.ref)
        ordered.append(v)

    # Each model's versions in their numbers' order, so that a version number the target
    # has never used is taken by the bundle's version of that number, not by another.
    for v in sorted(versions, key=lambda v: (v.name, v.version)):
        place(v)
    return ordered
