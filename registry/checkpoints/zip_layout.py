"""The zip archive of a zip-format torch.save file, checked before torch opens it.

Owns :func:`_read_archive`: the directory must be complete, and every entry inside the
file (its local header there, naming the same entry, its bytes before the end), under a
name inside the archive, once, stored uncompressed and not as a folder or encrypted
(torch.save never compresses; a compressed entry could inflate without bound, a zip
bomb, and torch's mmap reader would take its compressed bytes for tensor data). Also
owns the comparison of the storages the pickle declares with the archive's records
(:func:`_check_archive_storages`: torch's mmap reader takes a declared size at its word
and would read past a short record), and :func:`_diagnose_archive`, which says what is
broken in an archive torch refused. Raises ``_Damaged`` or ``_Hostile``; the caller words
them.

Never inflates an entry, never extracts anything to disk, never unpickles ``data.pkl``
(it is only scanned by ``pickle_scan``), and calls nothing of torch's.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from .._format import size as format_size
from .damage import _Damaged, _first_line, _Hostile
from .pickle_scan import _declared_storage, _scan_pickle


class _Record(NamedTuple):
    offset: int  # where the entry's bytes start in the file
    size: int


@dataclass
class _Archive:
    root: str  # the folder every entry is under, e.g. "archive"
    records: dict[str, _Record]  # by full name, e.g. "archive/data/0"


def _unsafe_name(name: str) -> bool:
    parts = name.split("/")
    return (
        name.startswith("/")
        or "\\" in name
        or "\0" in name
        or re.match(r"[A-Za-z]:", name) is not None
        or ".." in parts
    )


def _read_archive(f: BinaryIO, file_size: int) -> _Archive:
    """The entries of a zip-format torch.save file, checked; raises _Damaged or _Hostile."""
    try:
        with zipfile.ZipFile(f) as archive:
            infos = archive.infolist()
    except OSError:
        raise
    except zipfile.BadZipFile as exc:
        if "not a zip file" in str(exc):
            raise _Damaged(
                "the file is cut short or its end is damaged: the zip directory that ends "
                f"a torch.save file is missing ({file_size} bytes)"
            ) from None
        raise _Damaged(f"its zip directory is damaged ({exc})") from None
    except Exception as exc:  # zipfile parses damaged directories into ValueError, struct.error...
        raise _Damaged(f"its zip directory is damaged ({_first_line(exc)})") from None
    if not infos:
        raise _Damaged("its zip archive has no entries")
    for info in infos:
        if _unsafe_name(info.orig_filename):
            raise _Hostile(
                f"its zip entry {info.orig_filename[:100]!r} names a path outside the archive, "
                "which torch.save never writes"
            )
    if any(info.orig_filename.endswith("/constants.pkl") for info in infos):
        raise _Damaged(
            "it is a TorchScript archive (torch.jit.save), not a state dict: save the weights "
            "with torch.save(model.state_dict(), path)"
        )
    records: dict[str, _Record] = {}
    for info in infos:
        name = info.orig_filename
        if name in records:
            raise _Hostile(
                f"two zip entries are named {name[:100]!r}: readers disagree on which counts"
            )
        if info.compress_type != zipfile.ZIP_STORED:
            raise _Hostile(
                f"its zip entry {name[:100]!r} is compressed ({format_size(info.compress_size)} "
                f"declared to inflate to {format_size(info.file_size)}); torch.save never "
                "compresses, and registry does not inflate entries of a user's file (a zip "
                "bomb inflates without bound): save the weights again with torch.save"
            )
        if name.endswith("/") or info.external_attr & 0x10:  # miniz: a folder, read as nothing
            raise _Damaged(f"its zip entry {name[:100]!r} is marked as a folder")
        if info.flag_bits & 0x1:
            raise _Damaged(f"its zip entry {name[:100]!r} is encrypted")
        if info.compress_size != info.file_size:
            raise _Damaged(
                f"its zip entry {name[:100]!r} is stored uncompressed but declares "
                f"{info.compress_size} bytes stored for {info.file_size}"
            )
        records[name] = _Record(_entry_data_offset(f, info, file_size), info.file_size)
    first = infos[0].orig_filename
    if "/" not in first:
        raise _Damaged(
            f"its first zip entry {first[:100]!r} is not in a folder, as torch.save's are"
        )
    return _Archive(first.split("/", 1)[0], records)


def _entry_data_offset(f: BinaryIO, info: zipfile.ZipInfo, file_size: int) -> int:
    """Where ``info``'s bytes start: after its local header, which must be there, name
    the same entry, and leave room for the bytes before the end of the file."""
    name = info.orig_filename
    start = info.header_offset
    header = b""
    if 0 <= start <= file_size - 30:
        f.seek(start)
        header = f.read(30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise _Damaged(
            f"its zip entry {name[:100]!r} has no local header at byte {start} (of {file_size})"
        )
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    raw_name = f.read(name_length)
    expected = name.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace")
    if raw_name != expected:
        raise _Damaged(
            f"its zip entry {name[:100]!r} has a local header naming another entry "
            f"({raw_name[:100]!r})"
        )
    data_start = start + 30 + name_length + extra_length
    if data_start + info.file_size > file_size:
        raise _Damaged(
            f"its zip entry {name[:100]!r} ({info.file_size} bytes at byte {data_start}) runs "
            f"past the end of the file ({file_size} bytes): the file is cut short or damaged"
        )
    return data_start


def _archive_pickle(f: BinaryIO, archive: _Archive) -> bytes:
    """The bytes of ``data.pkl`` (read as torch reads them: no CRC check)."""
    record = archive.records.get(f"{archive.root}/data.pkl")
    if record is None:
        raise _Damaged(
            f"its zip archive has no {archive.root}/data.pkl, the pickle torch.save writes"
        )
    f.seek(record.offset)
    return f.read(record.size)


def _check_archive_storages(archive: _Archive, pids: list[object]) -> bool:
    """Raise _Damaged if a storage the pickle declares is missing or not its record's
    size (the first declaration of a key counts, as in torch). False if a persistent id
    is not one torch.save writes, so that the storages could not all be checked."""
    seen: set[str] = set()
    understood = True
    for pid in pids:
        declared = _declared_storage(pid, legacy=False)
        if declared is None:
            understood = False
            continue
        key, nbytes, _ = declared
        if key in seen:
            continue
        seen.add(key)
        name = f"{archive.root}/data/{key}"
        record = archive.records.get(name)
        if record is None:
            raise _Damaged(f"its pickle names the storage {name[:100]!r}, which the archive lacks")
        if record.size != nbytes:
            raise _Damaged(
                f"its storage {name[:100]!r} holds {record.size} bytes, but the pickle "
                f"declares {nbytes}"
            )
    return understood


def _diagnose_archive(f: BinaryIO, archive: _Archive) -> None:
    """Raise _Damaged if a zip-format file's pickle or storage records are broken."""
    _, pids = _scan_pickle(io.BytesIO(_archive_pickle(f, archive)))
    _check_archive_storages(archive, pids)
