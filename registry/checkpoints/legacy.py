"""The legacy (pre-1.6, non-zip) torch.save layout, checked when torch refused a file.

Owns :func:`_diagnose_legacy`: a legacy file is a run of pickles (the magic number, the
protocol version, system info, the object, the list of storage keys) followed by each
storage's element count and bytes; it raises ``_Damaged`` saying where such a file is
cut short or inconsistent. It is a diagnosis only: torch reads the file, this module
says why torch could not.

Never unpickles anything (the pickles are walked by ``pickle_scan``), never calls
torch.load, and reads nothing past the end of the file.
"""

from __future__ import annotations

from typing import BinaryIO

import torch

from .damage import _Damaged
from .pickle_scan import _Bounded, _declared_storage, _scan_pickle


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
    held = set(keys)
    for key in declared:  # torch would hand back uninitialised memory for its bytes
        if key not in held:
            raise _Damaged(
                f"its pickle declares the storage {key[:100]!r}, whose bytes the file does not "
                "hold (it is missing from the list of storages)"
            )
