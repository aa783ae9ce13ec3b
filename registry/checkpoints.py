"""Read a state dict from a user's file: ``.pth``/``.pt`` (torch.save) or ``.safetensors``.

Files from users are untrusted. Pickle-based checkpoints are read only with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers; there is no fallback to unsafe loading. The format is told by the
file's first bytes, not its name. Warnings that torch or safetensors raise while
reading a user's file are theirs to log, not the user's to read: they are silenced.

Whatever the bytes, reading a file ends in a :class:`Checkpoint` or a
:class:`~registry.errors.CheckpointError` (:class:`~registry.errors.MissingFileError`
if nothing is there) naming the file and what is wrong with it; no other exception
escapes, and nothing in the file runs:

- only a regular file is opened (a FIFO would block the reader for ever; a device or
  a socket is no checkpoint);
- a zip-format ``.pth`` is checked before torch opens it: its directory complete,
  every entry inside the file, under a name inside the archive, once, and stored
  uncompressed (torch.save never compresses; a compressed entry could inflate
  without bound, a zip bomb, and torch's mmap reader would take its compressed bytes
  for tensor data);
- once torch has read it (mmap), every storage the pickle declares must be as long
  as its record: the mmap reader takes the declared size at its word and would read
  past the record, where ``torch.load`` without mmap refuses the file;
- when torch refuses a file, the file's structure says why (cut short, a damaged
  pickle, a storage record missing or short); only an intact pickle that torch
  refuses is called unsafe (:class:`~registry.errors.UnsafeCheckpointError`);
- the tensors may not need more than ``_EXPANSION`` times the file's size plus
  ``_SLACK`` once laid out (tensors repeating their storage with a stride of 0, or
  many views of one storage, would make a small file a memory bomb).

Pickles are inspected with :mod:`pickletools` (a decoder that builds no object and
calls nothing), never unpickled outside ``torch.load(weights_only=True)``.

What the file carried besides tensors is kept: the state dict's ``_metadata``
(each module's version, which ``_load_from_state_dict`` reads to upgrade old
layouts) and a safetensors file's header metadata. Wrapper prefixes on the keys
(``module.``, ``_orig_mod.``, ``model.``) are not decided here: only the
architecture can say which keys fit (see ``fitting``).
"""

from __future__ import annotations

import functools
import io
import json
import os
import pickle
import pickletools
import re
import stat
import struct
import warnings
import zipfile
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

import torch

from ._format import size as format_size
from .errors import (
    CheckpointError,
    MissingFileError,
    NotACheckpointError,
    RegistryError,
    UnsafeCheckpointError,
)
from .tensors import QUANTIZED

#: Keys under which training scripts commonly nest the model's state dict.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "net", "network")

#: A file's tensors may need at most this many times its size once laid out, plus _SLACK.
_EXPANSION = 4
_SLACK = 64 << 20
#: The longest line a text pickle opcode (GLOBAL, INT...) may have when scanned.
_MAX_PICKLE_LINE = 1 << 20
#: The longest message of torch's that is passed on.
_MAX_QUOTED = 240


@dataclass
class Checkpoint:
    """A state dict read from a file, with how it was found and what came with it."""

    state_dict: dict[str, torch.Tensor]
    source_format: str  # "pth" or "safetensors"
    notes: list[str] = field(default_factory=list)
    #: The state dict's ``_metadata`` (module prefix -> {"version": N}), None if none.
    metadata: OrderedDict[str, dict[str, object]] | None = None
    #: A safetensors file's header metadata (str -> str), None for other files.
    file_metadata: dict[str, str] | None = None


class _Damaged(Exception):
    """The file is not what torch.save or safetensors writes; the message says where."""


class _Hostile(Exception):
    """The file is built to harm a reader (a zip bomb, names outside the archive)."""


# -- opening a user's file ------------------------------------------------------------------

_NOT_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _not_a_file(path: Path, mode: int) -> CheckpointError | None:
    if stat.S_ISDIR(mode):
        return CheckpointError(f"{path} is a folder, not a checkpoint file")
    for test, kind in _NOT_FILES:
        if test(mode):
            return CheckpointError(f"{path} is {kind}, not a checkpoint file")
    if not stat.S_ISREG(mode):
        return CheckpointError(f"{path} is not a regular file, so not a checkpoint file")
    return None


def check_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, if it names a regular file (symbolic links are followed).

    Raises MissingFileError if nothing is there; CheckpointError for a folder, a FIFO,
    a socket or a device, or a path that cannot be looked at (no permission to a
    folder on the way, a loop of links, a NUL byte in the name).
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise MissingFileError(path) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {_strerror(exc)}") from None
    except ValueError as exc:  # "embedded null byte"
        raise CheckpointError(f"cannot read {str(path)!r}: {exc}") from None
    refusal = _not_a_file(path, mode)
    if refusal is not None:
        raise refusal
    return path


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """An OSError while reading ``path`` ourselves becomes a CheckpointError naming it."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, RegistryError):
            raise
        raise CheckpointError(f"cannot read {path}: {_strerror(exc)}") from None


def _open(path: Path) -> BinaryIO:
    """``path`` opened for reading; never blocks (O_NONBLOCK), refuses all but a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    with _reading(path):
        fd = os.open(path, flags)
        try:
            refusal = _not_a_file(path, os.fstat(fd).st_mode)  # replaced since check_file?
        except BaseException:
            os.close(fd)
            raise
        if refusal is not None:
            os.close(fd)
            raise refusal
        return os.fdopen(fd, "rb")


def _sniff(path: Path, head: bytes) -> str:
    """The format the first bytes say: "zip" (torch.save), "legacy" (a raw pickle, the
    pre-1.6 torch.save), or "safetensors"."""
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":  # legacy (non-zip) torch.save: a raw pickle stream
        return "legacy"
    if len(head) >= 9:
        (length,) = struct.unpack("<Q", head[:8])
        if 2 <= length <= 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    why = ""
    if not head:
        why = ": it is empty (0 bytes)"
    elif len(head) < 16:
        why = f": it has only {len(head)} bytes"
    raise NotACheckpointError(
        f"{path} is not a PyTorch checkpoint (.pth) or a safetensors file{why}"
    )


# -- the zip archive of torch.save ------------------------------------------------------------


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


# -- pickles, inspected without being run ----------------------------------------------------


class _Global(NamedTuple):
    module: str
    name: str


_OPAQUE = object()


def _opcode_actions() -> dict[str, tuple[str, int, int]]:
    """Per pickle opcode name: (action, items popped, items pushed).

    Actions are "literal" (push the argument), "put", "memoize", "get", "global",
    "stack_global", "binpersid", "persid", "mark", "tuple" (from the mark), "tupleN",
    "list" (from the mark), "append", "appends", "pop", "stop", or "generic": pop the mark and
    its items (items popped -1) or that many items, then push as many opaque values.
    """
    literals = {
        id(kind)
        for kind in (
            pickletools.pyint,
            pickletools.pylong,
            pickletools.pyinteger_or_bool,
            pickletools.pybool,
            pickletools.pyfloat,
            pickletools.pystring,
            pickletools.pybytes,
            pickletools.pybytes_or_str,
            pickletools.pyunicode,
            pickletools.pybytearray,
        )
    }
    special = {
        "PUT": "put", "BINPUT": "put", "LONG_BINPUT": "put", "MEMOIZE": "memoize",
        "GET": "get", "BINGET": "get", "LONG_BINGET": "get", "GLOBAL": "global",
        "STACK_GLOBAL": "stack_global", "BINPERSID": "binpersid", "PERSID": "persid",
        "MARK": "mark", "TUPLE": "tuple", "LIST": "list", "EMPTY_TUPLE": "tuple0",
        "TUPLE1": "tuple1", "TUPLE2": "tuple2", "TUPLE3": "tuple3", "EMPTY_LIST": "list0",
        "APPEND": "append", "APPENDS": "appends", "STOP": "stop", "POP": "pop",
    }  # fmt: skip
    actions = {}
    for op in pickletools.opcodes:
        if op.name in special:
            actions[op.name] = (special[op.name], 0, 0)
        elif (
            op.arg is not None
            and not op.stack_before
            and len(op.stack_after) == 1
            and id(op.stack_after[0]) in literals
        ):
            actions[op.name] = ("literal", 0, 1)
        else:
            before = list(op.stack_before)
            if pickletools.markobject in before:  # the mark's items, then those below it
                below = before[: before.index(pickletools.markobject)]
                actions[op.name] = ("generic", -1 - len(below), len(op.stack_after))
            else:
                actions[op.name] = ("generic", len(before), len(op.stack_after))
    return actions


_ACTIONS = _opcode_actions()


class _Bounded:
    """A file seen through what pickletools reads: reads never past ``end`` (so a
    declared length does not allocate more than the file holds), lines bounded."""

    def __init__(self, f: BinaryIO, end: int):
        self._f, self._end = f, end

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._end - self._f.tell())
        return self._f.read(left if n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self._f.readline(min(_MAX_PICKLE_LINE, max(0, self._end - self._f.tell())))

    def tell(self) -> int:
        return self._f.tell()


def _scan_pickle(stream: object) -> tuple[object, list[object]]:
    """Walk one pickle from ``stream`` to its STOP without building or calling anything.

    Returns the pickle's value where it is a literal (an int, a str, a tuple or list
    of literals; ``_OPAQUE`` otherwise, a ``_Global`` for a global) and the persistent
    ids it names, as such values. Raises _Damaged if the pickle is cut short or
    malformed (an unknown opcode, a short argument, a stack or memo it misuses).
    """
    stack: list[object] = []
    marks: list[int] = []  # where each open mark is on the stack (as pickle's metastack)
    memo: dict[object, object] = {}
    pids: list[object] = []
    position = 0

    def damaged(what: str) -> _Damaged:
        return _Damaged(f"its pickle is damaged: at byte {position} it {what}")

    def pop() -> object:
        if len(stack) <= (marks[-1] if marks else 0):
            raise damaged("pops an empty stack")
        return stack.pop()

    def pop_to_mark() -> list[object]:
        if not marks:
            raise damaged("uses a mark it never set")
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    try:
        for opcode, arg, at in pickletools.genops(stream):
            position = at if at is not None else position
            action, popped, pushed = _ACTIONS[opcode.name]
            if action == "literal":
                stack.append(arg)
            elif action == "put" or action == "memoize":
                if len(stack) <= (marks[-1] if marks else 0):
                    raise damaged("memoizes nothing")
                memo[len(memo) if action == "memoize" else arg] = stack[-1]
            elif action == "get":
                if arg not in memo:
                    raise damaged(f"recalls memo {arg}, which it never stored")
                stack.append(memo[arg])
            elif action == "mark":
                marks.append(len(stack))
            elif action == "pop":  # as pickle's POP: an item, or the mark if none is above it
                if len(stack) > (marks[-1] if marks else 0):
                    stack.pop()
                else:
                    pop_to_mark()
            elif action == "generic":
                if popped < 0:
                    pop_to_mark()
                    popped = -1 - popped
                for _ in range(popped):
                    pop()
                stack.extend([_OPAQUE] * pushed)
            elif action == "binpersid":
                pids.append(pop())
                stack.append(_OPAQUE)
            elif action == "persid":
                pids.append(arg)
                stack.append(_OPAQUE)
            elif action == "global":
                module, _, attribute = str(arg).partition(" ")
                stack.append(_Global(module, attribute))
            elif action == "stack_global":
                attribute, module = pop(), pop()
                ok = isinstance(module, str) and isinstance(attribute, str)
                stack.append(_Global(module, attribute) if ok else _OPAQUE)  # type: ignore[arg-type]
            elif action == "tuple" or action == "list":
                items = pop_to_mark()
                stack.append(tuple(items) if action == "tuple" else items)
            elif action.startswith("tuple"):
                items = [pop() for _ in range(int(action[-1]))]
                stack.append(tuple(reversed(items)))
            elif action == "list0":
                stack.append([])
            elif action == "append" or action == "appends":
                items = [pop()] if action == "append" else pop_to_mark()
                target = pop()
                if isinstance(target, list):
                    target.extend(items)  # in place: a memoized list grows too, as in pickle
                stack.append(target if isinstance(target, list) else _OPAQUE)
            else:  # stop
                return pop(), pids
    except _Damaged:
        raise
    except (ValueError, EOFError, OverflowError, MemoryError) as exc:
        message = str(exc)
        try:
            at_end = stream.read(1) == b""  # type: ignore[attr-defined]
        except Exception:
            at_end = False
        if at_end or "exhausted before seeing STOP" in message or "remain" in message:
            raise _Damaged(
                f"its pickle is cut short: it ends after byte {position}, before its STOP "
                f"opcode ({message[:200]})"
            ) from None
        raise _Damaged(f"its pickle is damaged at byte {position}: {message[:200]}") from None
    raise _Damaged("its pickle is cut short: it has no STOP opcode")


@functools.cache
def _storage_element_sizes() -> dict[str, int]:
    """Bytes per element of each storage class a torch.save pickle may name."""
    sizes = {"UntypedStorage": 1}
    try:
        mapping = torch.storage._dtype_to_storage_type_map()
    except Exception:  # a private map: without it every storage is checked by torch alone
        return sizes
    for dtype, name in mapping.items():
        sizes[name] = torch.empty(0, dtype=dtype).element_size()
    return sizes


def _declared_storage(pid: object, *, legacy: bool) -> tuple[str, int, int] | None:
    """(key, bytes, bytes per element) of a storage persistent id as torch.save writes
    it, else None.

    Zip format: ``('storage', StorageClass, key, location, numel)``; legacy format:
    the same and ``view_metadata``. ``numel`` counts the storage class's elements.
    """
    if not isinstance(pid, tuple) or len(pid) != (6 if legacy else 5) or pid[0] != "storage":
        return None
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(storage_type, _Global) or not isinstance(key, str):
        return None
    if type(numel) is not int or numel < 0:
        return None
    element = _storage_element_sizes().get(storage_type.name)
    return None if element is None else (key, numel * element, element)


def _diagnose_legacy(f: BinaryIO, file_size: int) -> None:
    """Raise _Damaged if a legacy torch.save file is cut short or inconsistent.

    The layout: pickles of the magic number, the protocol version and system info,
    the object (whose persistent ids declare the storages), the list of storage keys;
    then per key, its element count (8 bytes, little-endian) and its bytes. A file
    that does not start with the magic number is not torch.save's: nothing is said.
    """
    stream = _Bounded(f, file_size)
    f.seek(0)
    magic, _ = _scan_pickle(stream)
    if type(magic) is not int or magic != torch.serialization.MAGIC_NUMBER:
        return
    _scan_pickle(stream)  # protocol version
    _scan_pickle(stream)  # system info
    _, pids = _scan_pickle(stream)
    keys, _ = _scan_pickle(stream)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _Damaged("its list of storage keys is damaged")
    declared: dict[str, tuple[int, int]] = {}
    for pid in pids:
        found = _declared_storage(pid, legacy=True)
        if found is not None:
            declared.setdefault(found[0], found[1:])
    offset = f.tell()
    for key in keys:
        if key not in declared:
            raise _Damaged(
                f"it lists the storage {key[:100]!r}, which no tensor in its pickle declares"
            )
        if offset + 8 > file_size:
            raise _Damaged(
                f"the file is cut short: storage {key[:100]!r} starts at byte {offset}, but the "
                f"file ends at byte {file_size}"
            )
        f.seek(offset)
        count = int.from_bytes(f.read(8), "little", signed=True)
        nbytes, element = declared[key]
        if count * element != nbytes:
            raise _Damaged(
                f"its storage {key[:100]!r} holds {count} elements of {element} bytes, but its "
                f"pickle declares {nbytes} bytes"
            )
        offset += 8 + nbytes
        if offset > file_size:
            raise _Damaged(
                f"the file is cut short: storage {key[:100]!r} needs {nbytes} bytes, up to byte "
                f"{offset}, but the file ends at byte {file_size}"
            )


def _diagnose_archive(f: BinaryIO, archive: _Archive) -> None:
    """Raise _Damaged if a zip-format file's pickle or storage records are broken."""
    _, pids = _scan_pickle(io.BytesIO(_archive_pickle(f, archive)))
    _check_archive_storages(archive, pids)


# -- torch.load, its verdicts made ours ------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message, without torch's advice to load unsafely."""
    text = str(exc)
    unsafe_advice = getattr(torch.serialization, "UNSAFE_MESSAGE", None)
    if unsafe_advice:
        text = text.replace(unsafe_advice, "")
    text = text.strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line if len(line) <= _MAX_QUOTED else line[: _MAX_QUOTED - 1] + "…"


def _weights_only_reason(message: str) -> str:
    """Why torch.load(weights_only=True) refused a pickle, from its (long) message."""
    match = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    match = match or re.search(r"unsupported GLOBAL (\S+) whose module \S+ is blocked", message)
    if match:
        return f"it needs the global {match.group(1)[:100]}, which is not allowed"
    match = re.search(r"Unsupported operand (\d+)", message)
    if match:
        code = int(match.group(1))
        names = {ord(op.code): op.name for op in pickletools.opcodes if len(op.code) == 1}
        opcode = f"{names[code]} ({code})" if code in names else f"{code}"
        return f"it uses the pickle opcode {opcode}, which is not allowed"
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    unsafe_advice = getattr(torch.serialization, "UNSAFE_MESSAGE", "")
    for line in message.replace(unsafe_advice, "").splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not line.startswith(boilerplate) and "weights_only" not in line:
            line = line.split(". ")[0].strip().rstrip(".")
            return line if len(line) <= _MAX_QUOTED else line[: _MAX_QUOTED - 1] + "…"
    return "unsupported pickle content"


def _unsafe(path: Path, exc: pickle.UnpicklingError) -> UnsafeCheckpointError:
    reason = _weights_only_reason(str(exc))
    return UnsafeCheckpointError(
        f"refused to load {path}: torch.load(weights_only=True) rejected it ({reason}); "
        "registry never loads pickles unsafely, so their code is not run. Save the "
        "weights alone with torch.save(model.state_dict(), path)"
    )


def _cannot_read(path: Path, why: str) -> NotACheckpointError:
    return NotACheckpointError(f"cannot read {path} as a PyTorch checkpoint: {why}")


def _torch_failure(exc: Exception) -> str:
    """What torch's error for a file says is wrong with it, in words of ours where we can."""
    if isinstance(exc, MemoryError):
        return "reading it asks for more memory than there is (MemoryError)"
    if isinstance(exc, OSError):
        return f"torch could not read it ({_strerror(exc)})"
    line = _first_line(exc)
    if "not resizable" in line:
        return f"a tensor needs more bytes than its storage holds (torch: {line})"
    return line


def _torch_load(path: Path, *, mmap: bool) -> object:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _load_pth(path: Path, f: BinaryIO, kind: str, file_size: int) -> object:
    """torch.load(weights_only=True) of a .pth whose format ``kind`` was sniffed."""
    archive = None
    if kind == "zip":
        try:
            with _reading(path):
                archive = _read_archive(f, file_size)
        except _Damaged as exc:
            raise _cannot_read(path, str(exc)) from None
        except _Hostile as exc:
            raise UnsafeCheckpointError(f"refused to read {path}: {exc}") from None
    try:
        loaded = _torch_load(path, mmap=archive is not None)
    except Exception as exc:  # torch's errors for a damaged file vary with the damage
        try:
            with _reading(path):
                if archive is not None:
                    _diagnose_archive(f, archive)
                else:
                    _diagnose_legacy(f, file_size)
        except _Damaged as damage:
            raise _cannot_read(path, str(damage)) from None
        except Exception:  # the diagnosis is a courtesy: torch's own verdict stands
            pass
        if isinstance(exc, pickle.UnpicklingError):
            raise _unsafe(path, exc) from None
        raise _cannot_read(path, _torch_failure(exc)) from None
    if archive is not None:
        try:
            with _reading(path):
                _, pids = _scan_pickle(io.BytesIO(_archive_pickle(f, archive)))
                understood = _check_archive_storages(archive, pids)
        except _Damaged as damage:
            raise _cannot_read(path, str(damage)) from None
        except CheckpointError:
            raise
        except Exception:  # not understood: torch's reading without mmap is the safe one
            understood = False
        if not understood:
            # A storage torch.save would not declare: read it again without mmap, where
            # torch checks each record's size itself.
            del loaded
            try:
                loaded = _torch_load(path, mmap=False)
            except Exception as exc:
                raise _cannot_read(path, _torch_failure(exc)) from None
    return loaded


def _load_safetensors(
    path: Path, f: BinaryIO, file_size: int
) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as opened:
            return opened.get_tensors(), opened.metadata()
    except Exception as exc:  # safetensors raises its own SafetensorError and others
        with _reading(path):
            why = _safetensors_cut_short(f, file_size) or _first_line(exc)
        raise NotACheckpointError(f"cannot read {path} as a safetensors file: {why}") from None


def _safetensors_cut_short(f: BinaryIO, file_size: int) -> str | None:
    """Why a safetensors file that its library refused is cut short, if it is."""
    f.seek(0)
    (header_length,) = struct.unpack("<Q", f.read(8))
    if 8 + header_length > file_size:
        return (
            f"the file is cut short: its header declares {header_length} bytes, but only "
            f"{file_size - 8} follow its length"
        )
    try:
        header = json.loads(f.read(header_length))
        ends = [
            int(entry["data_offsets"][1])
            for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict)
        ]
    except Exception:  # a damaged header: the library's own message says how
        return None
    needed = 8 + header_length + max(ends, default=0)
    if needed > file_size:
        return (
            f"the file is cut short: its tensors end at byte {needed}, but the file has "
            f"{file_size} bytes"
        )
    return None


def _check_expansion(path: Path, state: Mapping[str, object], file_size: int) -> None:
    """Refuse tensors that need far more memory than the file holds (a memory bomb)."""
    total = 0
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.layout == torch.strided and not value.is_meta:
            total += value.numel() * value.element_size()
    if total > _EXPANSION * file_size + _SLACK:
        raise UnsafeCheckpointError(
            f"refused to read {path}: its {len(state)} tensors need {format_size(total)} once "
            f"laid out, more than {_EXPANSION} times the file's {format_size(file_size)} plus "
            f"{format_size(_SLACK)}: tensors repeat their storage's bytes (a stride of 0) or "
            "view one storage many times. Save each tensor's own data (tensor.clone())"
        )


# -- what a loaded object holds ---------------------------------------------------------------


def _is_tensor_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def unwrap(
    obj: object, origin: str
) -> tuple[dict[str, torch.Tensor], OrderedDict[str, dict[str, object]] | None, list[str]]:
    """Find the state dict inside a loaded checkpoint object.

    Returns the tensors (keys as saved), the state dict's ``_metadata`` if it has
    one, and notes saying what was done (which key held the state dict). Raises
    NotACheckpointError saying what ``obj`` is instead.
    """
    notes: list[str] = []
    if not _is_tensor_dict(obj):
        if isinstance(obj, Mapping):
            for key in WRAPPER_KEYS:
                if key in obj and _is_tensor_dict(obj[key]):
                    notes.append(f"using the state dict stored under the {key!r} key")
                    obj = obj[key]
                    break
    if not _is_tensor_dict(obj):
        raise NotACheckpointError(_describe_non_state_dict(obj, origin))
    metadata = getattr(obj, "_metadata", None)
    if not isinstance(metadata, Mapping):
        metadata = None
    return dict(obj), metadata, notes  # type: ignore[arg-type]


def _short(value: object) -> str:
    """``repr(value)``, at most 60 characters (keys of a hostile file can be huge)."""
    if isinstance(value, (str, bytes)) and len(value) > 60:
        value = value[:60]
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _quantized_entry(obj: Mapping) -> str | None:
    """The first key that holds quantized weights (eager-mode quantization), if any.

    Nested mappings are searched breadth-first, each once (a pickle can nest a dict
    in itself or thousands deep)."""
    queue, seen = deque([obj]), {id(obj)}
    while queue:
        mapping = queue.popleft()
        for key, value in mapping.items():
            values = value if isinstance(value, (tuple, list)) else (value,)
            if any(isinstance(v, torch.Tensor) and v.is_quantized for v in values):
                return _short(key)[1:-1] if isinstance(key, str) else _short(key)
            if isinstance(key, str) and key.endswith("_packed_params"):
                return key[:60]
            if isinstance(value, Mapping) and id(value) not in seen:
                seen.add(id(value))
                queue.append(value)
    return None


def _describe_non_state_dict(obj: object, origin: str) -> str:
    if isinstance(obj, Mapping):
        quantized = _quantized_entry(obj)
        if quantized is not None:
            return (
                f"{origin} holds a quantized model's state dict ({quantized!r} holds "
                f"quantized weights): {QUANTIZED}"
            )
        if not obj:
            return f"{origin} holds an empty dict, not a state dict"
        odd_keys = [k for k in obj if not isinstance(k, str)]
        if odd_keys:
            shown = ", ".join(_short(k) for k in odd_keys[:5])
            return (
                f"{origin} is not a state dict: its keys must be strings, but "
                f"{len(odd_keys)} are not ({shown})"
            )
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        shown = ", ".join(f"{_short(k)} ({type(obj[k]).__name__})" for k in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        return (
            f"{origin} is not a state dict: {len(bad)} of its {len(obj)} entries are not "
            f"tensors ({shown}{more}), and none of the keys "
            f"{', '.join(repr(k) for k in WRAPPER_KEYS)} holds one"
        )
    return f"{origin} holds a {type(obj).__name__}, not a state dict (a dict of tensors)"


# -- entry points ------------------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read the state dict in ``path`` (a torch.save file, zip or legacy, or safetensors).

    Raises MissingFileError if there is no file; otherwise a CheckpointError naming the
    file and what is wrong: NotACheckpointError (not a checkpoint, cut short,
    damaged, not a state dict), UnsafeCheckpointError (a pickle torch.load with
    weights_only refuses, a zip bomb, entries outside the archive, tensors needing far
    more memory than the file holds), or CheckpointError (not a regular file, an
    error of the operating system while reading it).
    """
    path = check_file(path)
    with _open(path) as f:
        with _reading(path):
            file_size = os.fstat(f.fileno()).st_size
            head = f.read(16)
        kind = _sniff(path, head)
        # torch and safetensors warn about their own deprecations while reading (e.g.
        # TypedStorage, quantized tensors); the user gets our one-line verdict instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "safetensors":
                state, file_metadata = _load_safetensors(path, f, file_size)
                if not state:
                    raise NotACheckpointError(f"{path} is a safetensors file with no tensors")
                _check_expansion(path, state, file_size)
                meta = dict(file_metadata) if file_metadata is not None else None
                return Checkpoint(state, "safetensors", file_metadata=meta)
            loaded = _load_pth(path, f, kind, file_size)
            state, metadata, notes = unwrap(loaded, str(path))
            _check_expansion(path, state, file_size)
    return Checkpoint(state, "pth", notes, metadata=metadata)


def read_source(source: object) -> Checkpoint:
    """The state dict, source format, notes and metadata of what a user pushes or
    identifies: a path to a file, a state dict (any mapping) or an ``nn.Module``.

    Raises InvalidArgumentError for anything else, and what :func:`read_checkpoint`
    raises for a file.
    """
    from .errors import InvalidArgumentError

    if isinstance(source, (str, os.PathLike)):
        return read_checkpoint(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(source, torch.nn.Module):
            state, meta, notes = unwrap(source.state_dict(), "the module's state dict")
            return Checkpoint(state, "module", notes, metadata=meta)
        if isinstance(source, Mapping):
            state, meta, notes = unwrap(source, "the given state dict")
            return Checkpoint(state, "state_dict", notes, metadata=meta)
    raise InvalidArgumentError(
        f"cannot push a {type(source).__name__}: give a file path, a state dict or an nn.Module"
    )
