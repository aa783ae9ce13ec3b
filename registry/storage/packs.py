"""The pack file format: one file per push holding the tensors that push added.

A pack is a valid safetensors file: an 8-byte little-endian header length, a JSON
header, then the raw bytes. Each entry is named by its sha256 and described as a
flat ``U8`` array (the catalogue keeps the real dtype and shape), so any
safetensors reader can open a pack and ``sha256sum`` can check a slice.

Every blob starts on a 64-byte boundary, as torch's own CPU allocations do: math
libraries pick kernels (and so rounding) by alignment, and a model loaded from a
pack must compute bit-for-bit what the original did. The gaps are explicit
``__pad__N`` entries, since safetensors requires the data section to be contiguous.

Reads never trust a pack's header: the catalogue says where each blob is, and every
blob is checked against its checksum or sha256 before use. :func:`read_index`, which
parses a header (for tools and tests), is strict: a damaged header is an
IntegrityError, never another exception and never an entry outside the pack.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import IntegrityError

PACK_FORMAT = "registry-pack"
PACK_FORMAT_VERSION = "1"
DATA_ALIGNMENT = 64
PAD_PREFIX = "__pad__"


#: Length of every entry name: a hex sha256.
NAME_LENGTH = 64
#: The largest header :func:`read_index` parses (a pack of a million blobs needs ~120 MB).
MAX_HEADER_BYTES = 256 << 20
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_PAD_RE = re.compile(rf"{PAD_PREFIX}[0-9]+")


@dataclass(frozen=True)
class PackLayout:
    header: bytes  # length prefix + JSON, padded to DATA_ALIGNMENT
    offsets: list[int]  # absolute file offset of each blob, in the order given
    nbytes: int  # total file size


def layout(names: Sequence[str], sizes: Sequence[int]) -> PackLayout:
    """Place blobs of ``sizes`` in order, named ``names`` (unique, NAME_LENGTH long).

    The header's length depends only on the sizes, never on the names, so a writer can
    lay out a pack with placeholder names, write the data while it is still being
    hashed, and write the real header over the placeholder at the end.
    """
    if len(set(names)) != len(names) or any(len(n) != NAME_LENGTH for n in names):
        raise ValueError("pack entries need unique names of 64 characters")
    entries: dict[str, object] = {
        "__metadata__": {"format": PACK_FORMAT, "version": PACK_FORMAT_VERSION}
    }
    relative: list[int] = []
    position = 0
    for name, size in zip(names, sizes):
        gap = -position % DATA_ALIGNMENT
        if gap:
            entries[f"{PAD_PREFIX}{len(entries)}"] = {
                "dtype": "U8",
                "shape": [gap],
                "data_offsets": [position, position + gap],
            }
            position += gap
        entries[name] = {
            "dtype": "U8",
            "shape": [size],
            "data_offsets": [position, position + size],
        }
        relative.append(position)
        position += size
    text = json.dumps(entries, separators=(",", ":")).encode("utf-8")
    padded = len(text) + (-(8 + len(text)) % DATA_ALIGNMENT)
    header = struct.pack("<Q", padded) + text + b" " * (padded - len(text))
    start = len(header)
    return PackLayout(
        header=header, offsets=[start + off for off in relative], nbytes=start + position
    )


def placeholder_names(count: int) -> list[str]:
    """Distinct stand-in names with the length of a digest."""
    return [format(i, f"0{NAME_LENGTH}x") for i in range(count)]


def read_index(header_bytes: bytes, size: int | None = None) -> dict[str, tuple[int, int]]:
    """Parse a pack header (from the pack's first bytes, at least the whole header)
    into digest -> (absolute offset, nbytes).

    With ``size`` (the pack file's length in bytes), every entry must also end inside
    the pack. Raises IntegrityError for anything that is not a header this module
    wrote: a short or oversized length prefix, JSON that does not parse, metadata of
    another format, an entry name that is neither a sha256 nor padding, an entry that
    is not a flat ``U8`` array whose shape matches its offsets.
    """
    if len(header_bytes) < 8:
        raise IntegrityError(f"pack header is truncated: {len(header_bytes)} bytes")
    (length,) = struct.unpack("<Q", header_bytes[:8])
    if length > MAX_HEADER_BYTES or 8 + length > len(header_bytes):
        raise IntegrityError(
            f"pack header says it is {length} bytes long; {len(header_bytes) - 8} are there"
        )
    try:
        entries = json.loads(bytes(header_bytes[8 : 8 + length]).decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise IntegrityError(f"pack header is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(entries, dict):
        raise IntegrityError("pack header is not a JSON object")
    meta = entries.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != PACK_FORMAT:
        raise IntegrityError(f"pack header's metadata does not say {PACK_FORMAT!r}")
    start = 8 + length
    index: dict[str, tuple[int, int]] = {}
    for name, entry in entries.items():
        if name == "__metadata__":
            continue
        begin, end = _entry_range(name, entry)
        if size is not None and start + end > size:
            raise IntegrityError(f"pack entry {name[:12]}... ends past the pack's {size} bytes")
        if not _PAD_RE.fullmatch(name):
            index[name] = (start + begin, end - begin)
    return index


def _entry_range(name: str, entry: Any) -> tuple[int, int]:
    """An entry's data offsets (begin, end), relative to the data section."""
    if not _DIGEST_RE.fullmatch(name) and not _PAD_RE.fullmatch(name):
        raise IntegrityError(f"pack entry name {name[:80]!r} is neither a sha256 nor padding")
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    shape = entry.get("shape") if isinstance(entry, dict) else None
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
        or entry.get("dtype") != "U8"
        or shape != [offsets[1] - offsets[0]]
    ):
        raise IntegrityError(f"pack entry {name[:12]}... is not a flat U8 array at valid offsets")
    return offsets[0], offsets[1]
