"""The pack file format: one file per push holding the tensors that push added.

A pack is a valid safetensors file: an 8-byte little-endian header length, a JSON
header, then the raw bytes. Each entry is named by its sha256 and described as a
flat ``U8`` array (the catalogue keeps the real dtype and shape), so any
safetensors reader can open a pack and ``sha256sum`` can check a slice.

Every blob starts on a 64-byte boundary, as torch's own CPU allocations do: math
libraries pick kernels (and so rounding) by alignment, and a model loaded from a
pack must compute bit-for-bit what the original did. The gaps are explicit
``__pad__N`` entries, since safetensors requires the data section to be contiguous.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

PACK_FORMAT = "registry-pack"
PACK_FORMAT_VERSION = "1"
DATA_ALIGNMENT = 64
PAD_PREFIX = "__pad__"


#: Length of every entry name: a hex sha256.
NAME_LENGTH = 64


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


def read_index(header_bytes: bytes) -> dict[str, tuple[int, int]]:
    """Parse a pack header (from its first bytes) into digest -> (offset, nbytes)."""
    (length,) = struct.unpack("<Q", header_bytes[:8])
    entries = json.loads(header_bytes[8 : 8 + length])
    start = 8 + length
    return {
        digest: (start + meta["data_offsets"][0], meta["data_offsets"][1] - meta["data_offsets"][0])
        for digest, meta in entries.items()
        if digest != "__metadata__" and not digest.startswith(PAD_PREFIX)
    }
