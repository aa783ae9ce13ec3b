"""Bundles: versions with everything they need, in one tar file, to move between registries.

Layout (an uncompressed POSIX tar, members in this order)::

    manifest.json          format, the versions (catalogue rows, tags, aliases,
                           lineage, tensor tables) and the size of every blob
    blobs/<sha256>         one member per distinct tensor, its raw bytes

A bundle is untrusted input. It is written with ``tarfile`` but read by this module's
own tar reader, which knows only what a bundle needs (regular files, with pax
``path``/``size`` records or GNU base-256 sizes for members of 8 GiB and more) and
refuses anything else with an IntegrityError naming the byte where it went wrong: a
header whose checksum fails, a size that is negative or runs past the end of the file,
a link, a folder, a sparse file, a member named other than above or twice. It reads
each header once, moving forward only, so no archive makes it loop, and it never
extracts anything: member data is read at its offset. The manifest is parsed strictly:
UTF-8 JSON without NaN, every field of the type and range its catalogue column holds,
text a catalogue can store (no NUL, no lone surrogate), names, tags, aliases and
descriptions by the rules ``push`` applies. Every version digest is checked against
its tensor table and every blob against its sha256, and import changes nothing (no
file, no row) until all of that has passed.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._files import replacing
from .._format import quoted
from .._progress import begin
from ..errors import IntegrityError, InvalidArgumentError, MissingFileError, RegistryError
from ..keyvalue import (
    check_description,
    parse_date,
    storable_text,
    validate_arch_kwargs,
    validate_tags,
)
from ..metadata import PLAIN_VALUES
from ..records import PROVENANCE_FIELDS, ModelVersion
from ..refs import MAX_VERSION, parse_ref, validate_alias, validate_name
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
#: The largest value of a 64-bit (BIGINT) and a 32-bit (INTEGER) catalogue column.
_INT64 = 2**63 - 1
_INT32 = 2**31 - 1


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


_BLOCK = 512
#: Type flags of a regular file (ustar, old tar, contiguous file).
_REGULAR = (b"0", b"\0", b"7")
_PAX = b"x"
#: The largest pax extended header read (its records describe the next member).
MAX_PAX_BYTES = 64 << 10


@dataclass(frozen=True)
class Member:
    """One regular file of a bundle: its name, where its data starts, its size (bytes)."""

    name: str
    offset: int
    size: int


def _damaged(path: Path, position: int, problem: str) -> IntegrityError:
    return IntegrityError(f"{path} is not a valid bundle: {problem} (at byte {position})")


def _octal(field: bytes, what: str, path: Path, position: int) -> int:
    """A numeric header field: NUL/space-padded octal digits, or GNU base-256 (0x80 then
    big-endian bytes) for values octal cannot hold; negative values are refused."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":
        raise _damaged(path, position, f"negative {what} in a tar header")
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if digits and not all(48 <= c <= 55 for c in digits):
        raise _damaged(path, position, f"{what} {quoted(bytes(field))} is not a number")
    return int(digits, 8) if digits else 0


def _header(block: bytes, path: Path, position: int) -> tuple[str, bytes, int]:
    """(name, type flag, size) of a tar header block whose checksum and magic hold."""
    stored = _octal(block[148:156], "checksum", path, position)
    blank = block[:148] + b" " * 8 + block[156:]
    if stored != sum(blank) and stored != sum(b - 256 if b > 127 else b for b in blank):
        raise _damaged(path, position, "a tar header's checksum does not match")
    if block[257:262] != b"ustar":
        raise _damaged(path, position, "a tar header is not ustar, GNU or pax")
    name = block[0:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:263] == b"ustar\0" else b""
    if prefix:
        name = prefix + b"/" + name
    return (
        name.decode("utf-8", "replace"),
        block[156:157],
        _octal(block[124:136], "size", path, position),
    )


def _pax_records(data: bytes, path: Path, position: int) -> dict[str, str]:
    """The ``LENGTH KEY=VALUE\\n`` records of a pax extended header, parsed strictly."""
    records: dict[str, str] = {}
    at = 0
    while at < len(data):
        if data[at] == 0:  # NUL padding after the last record, and nothing else
            if data[at:].strip(b"\0"):
                raise _damaged(path, position, "a pax header has data after its padding")
            break
        space = data.find(b" ", at, at + 20)
        length_text = data[at:space] if space > at else b""
        if not length_text.isdigit() or not length_text.isascii():
            raise _damaged(path, position, "a pax record has no length")
        end = at + int(length_text)
        if end <= space + 1 or end > len(data) or data[end - 1 : end] != b"\n":
            raise _damaged(path, position, "a pax record's length is wrong")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise _damaged(path, position, "a pax record is not KEY=VALUE")
        try:
            records[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise _damaged(path, position, "a pax record is not UTF-8") from None
        at = end
    if any(key.startswith("GNU.sparse") for key in records):
        raise _damaged(path, position, "sparse members are not part of the bundle format")
    return records


def read_members(handle: Any, file_size: int, path: Path) -> dict[str, Member]:
    """The members of the bundle open as ``handle`` (``file_size`` bytes), by name.

    Reads each 512-byte header once, front to back (a member's size can only move the
    next header forward), up to two zero blocks or the end of the file at a header
    boundary. Raises IntegrityError for anything but regular files named ``manifest.json``
    or ``blobs/<sha256>``, each once, whose data lies inside the file.
    """
    found: dict[str, Member] = {}
    pax: dict[str, str] | None = None
    position = 0
    while True:
        if position == file_size and pax is None:
            break  # the end-of-archive blocks are missing, but every member is whole
        handle.seek(position)
        block = handle.read(_BLOCK)
        if len(block) < _BLOCK:
            raise _damaged(path, position, "the file ends inside a tar header")
        if block == bytes(_BLOCK):
            if pax is not None:
                raise _damaged(path, position, "a pax header describes no member")
            break
        name, kind, size = _header(block, path, position)
        if pax is not None:
            name = pax.get("path", name)
            if "size" in pax:
                text = pax["size"]
                if not text.isascii() or not text.isdigit() or len(text) > 20:
                    raise _damaged(path, position, f"a pax size {quoted(text)} is not a size")
                size = int(pax["size"])
        start = position + _BLOCK
        if size > file_size - start:
            raise _damaged(
                path, position, f"member {quoted(name)} needs {size} bytes past the end of the file"
            )
        if kind == _PAX:
            if pax is not None:
                raise _damaged(path, position, "two pax headers in a row")
            if size > MAX_PAX_BYTES:
                raise _damaged(path, position, f"a pax header of {size} bytes is too large")
            handle.seek(start)
            pax = _pax_records(handle.read(size), path, position)
        elif kind not in _REGULAR:
            raise IntegrityError(
                f"bundle member {quoted(name)} is not a regular file (links, folders and "
                "other special members are refused)"
            )
        else:
            pax = None
            if name != MANIFEST and not _BLOB_RE.fullmatch(name):
                raise IntegrityError(
                    f"bundle member {quoted(name)} is not part of the bundle format"
                )
            if name in found:
                raise IntegrityError(f"bundle member {quoted(name)} appears twice")
            found[name] = Member(name, start, size)
        position = start + -(-size // _BLOCK) * _BLOCK
    if MANIFEST not in found:
        raise IntegrityError(f"{path} has no {MANIFEST}: not a registry bundle")
    return found


class Bundle:
    """An opened, checked bundle: its versions, and its blobs' members for reading.

    Raises MissingFileError for a path that does not exist, InvalidArgumentError for
    one that is not a regular file (a folder, a pipe) or cannot be opened, and
    IntegrityError for a file that is not a valid bundle (see :func:`read_members`
    and the manifest's rules in the module's docstring).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        try:
            info = self.path.stat()
        except FileNotFoundError:
            raise MissingFileError(self.path) from None
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read the bundle {self.path}: {exc}") from None
        if not stat.S_ISREG(info.st_mode):
            raise InvalidArgumentError(f"{self.path} is not a registry bundle: not a regular file")
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read the bundle {self.path}: {exc}") from None
        try:
            size = os.fstat(self._file.fileno()).st_size
            self._members = read_members(self._file, size, self.path)
            self.versions, self.blob_sizes = self._read_manifest()
        except OSError as exc:
            self._file.close()
            raise InvalidArgumentError(f"cannot read the bundle {self.path}: {exc}") from None
        except BaseException:
            self._file.close()
            raise

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_manifest(self) -> tuple[list[BundleVersion], dict[str, int]]:
        member = self._members[MANIFEST]
        if member.size > MAX_MANIFEST_BYTES:
            raise IntegrityError(f"{MANIFEST} is {member.size} bytes: too large")
        raw = self._read(member)
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
            problem = str(exc) if not isinstance(exc, RecursionError) else "nested too deeply"
            raise IntegrityError(f"{MANIFEST} is not valid JSON: {problem}") from None
        try:
            return _parse_manifest(data, self._members)
        except (LookupError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            if isinstance(exc, RegistryError):
                raise IntegrityError(f"malformed {MANIFEST}: {exc}") from None
            raise IntegrityError(f"malformed {MANIFEST}: {type(exc).__name__}: {exc}") from None

    def _read(self, member: Member) -> bytes:
        try:
            self._file.seek(member.offset)
            data = self._file.read(member.size)
        except OSError as exc:
            raise IntegrityError(f"cannot read bundle member {member.name!r}: {exc}") from None
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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _parse_manifest(
    data: Any, members: Mapping[str, Member]
) -> tuple[list[BundleVersion], dict[str, int]]:
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"format is not {BUNDLE_FORMAT!r}")
    if data.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"unsupported bundle version {quoted(data.get('version'))}")
    sizes = data["blobs"]
    if not isinstance(sizes, dict):
        raise TypeError("blobs must be an object")
    for digest, size in sizes.items():
        if not _HEX64.fullmatch(digest) or type(size) is not int or size < 0:
            raise ValueError(f"bad blob entry {quoted(digest)}")
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


def _text(value: Any, field: str, optional: bool = False, width: int | None = None) -> Any:
    """A string a catalogue can store (no NUL, no lone surrogate), of at most ``width``
    characters; None where ``optional``."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a string")
    if width is not None and len(value) > width:
        raise ValueError(f"{field} is longer than {width} characters")
    return storable_text(value, field)


def _number(value: Any, field: str, low: int = 0, high: int = _INT64) -> int:
    """An integer (not a bool, not a float) from ``low`` to ``high``."""
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{field} must be an integer from {low} to {high}")
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
        _text(tname, "tensor name", width=1024)
        if tname in seen:
            raise ValueError(f"{label}: tensor {quoted(tname)} appears twice")
        seen.add(tname)
        if dtype not in DTYPE_SIZES:
            raise ValueError(f"{label}: unknown dtype {quoted(dtype)}")
        if not isinstance(shape, list) or any(
            type(d) is not int or not 0 <= d <= _INT64 for d in shape
        ):
            raise ValueError(f"{label}: bad shape for {quoted(tname)}")
        count = 1
        for d in shape:  # stops early: a hostile shape may have a million dimensions
            count *= d
            if count > _INT64:
                raise ValueError(f"{label}: {quoted(tname)} has more elements than a tensor can")
        if type(nbytes) is not int or nbytes != count * DTYPE_SIZES[dtype]:
            raise ValueError(f"{label}: size of {quoted(tname)} does not match its shape")
        if not isinstance(tdigest, str) or tdigest not in sizes:
            raise ValueError(f"{label}: tensor {quoted(tname)} uses a blob the bundle lacks")
        if sizes[tdigest] != nbytes:
            raise ValueError(f"{label}: blob of {quoted(tname)} has the wrong size")
        shared.append(_place(place, f"{label}: storage of {quoted(tname)}"))
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
    if type(number) is not int or not 1 <= number <= MAX_VERSION:
        raise ValueError(f"{name}: version must be an integer from 1 to {MAX_VERSION}")
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
    param_count = _number(entry["param_count"], f"{name}:{number}: param_count")
    arch_kwargs = entry.get("arch_kwargs") or {}
    if not isinstance(arch_kwargs, dict):
        raise TypeError(f"{name}:{number}: arch_kwargs must be an object")
    tags = entry.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise TypeError(f"{name}:{number}: tags must map keys to strings")
    description = _text(entry.get("description"), "description", optional=True)
    check_description(description)
    return BundleVersion(
        name=name,
        version=number,
        digest=digest,
        arch=_text(entry["arch"], "arch", width=255),
        arch_kwargs=validate_arch_kwargs(arch_kwargs),
        description=description,
        tags=validate_tags(tags),
        aliases=[validate_alias(_text(a, "alias")) for a in aliases],
        parent=parent,
        created_at=created,
        torch_version=_text(entry["torch_version"], "torch_version", width=64),
        source_format=_text(entry["source_format"], "source_format", width=32),
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
    return _text(value, field, optional=True, width=_WIDTHS.get(field))


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
    _number(group, f"{label}: group", high=_INT32)
    _number(offset, f"{label}: offset")
    for s in stride:
        _number(s, f"{label}: stride")
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
    """Each version once, parents before their children (for those whose parent is in
    the bundle too; in a cycle of parents, which a hostile bundle may hold, the first
    version met comes last). Iterative: a lineage of any length is fine."""
    by_ref = {v.ref: v for v in versions}
    ordered: list[BundleVersion] = []
    placed: set[str] = set()
    # Each model's versions in their numbers' order, so that a version number the target
    # has never used is taken by the bundle's version of that number, not by another.
    for v in sorted(versions, key=lambda v: (v.name, v.version)):
        chain: list[BundleVersion] = []
        seen: set[str] = set()
        current: BundleVersion | None = v
        while current is not None and current.ref not in placed and current.ref not in seen:
            seen.add(current.ref)
            chain.append(current)
            current = by_ref.get(current.parent) if current.parent else None
        for item in reversed(chain):
            placed.add(item.ref)
            ordered.append(item)
    return ordered
