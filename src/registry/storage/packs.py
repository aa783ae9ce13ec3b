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
from dataclasses import dataclass

PACK_FORMAT = "registry-pack"
PACK_FORMAT_VERSION = "1"
DATA_ALIGNMENT = 64
PAD_PREFIX = "__pad__"


@dataclass(frozen=True)
class BlobSpec:
    """A blob to write: its digest, its bytes, and its element size (for alignment)."""

    digest: str
    data: memoryview

    @property
    def nbytes(self) -> int:
        return self.data.nbytes


@dataclass(frozen=True)
class PackLayout:
    header: bytes  # length prefix + JSON, padded to DATA_ALIGNMENT
    order: list[BlobSpec]  # blobs in file order; zero padding between them
    offsets: dict[str, int]  # digest -> absolute file offset
    nbytes: int  # total file size


def layout(blobs: list[BlobSpec]) -> PackLayout:
    """Place ``blobs`` (unique digests) in a pack; return header bytes and offsets."""
    order = list(blobs)
    entries: dict[str, object] = {
        "__metadata__": {"format": PACK_FORMAT, "version": PACK_FORMAT_VERSION}
    }
    relative: dict[str, int] = {}
    position = 0
    for blob in order:
        gap = -position % DATA_ALIGNMENT
        if gap:
            entries[f"{PAD_PREFIX}{len(entries)}"] = {
                "dtype": "U8",
                "shape": [gap],
                "data_offsets": [position, position + gap],
            }
            position += gap
        entries[blob.digest] = {
            "dtype": "U8",
            "shape": [blob.nbytes],
            "data_offsets": [position, position + blob.nbytes],
        }
        relative[blob.digest] = position
        position += blob.nbytes
    text = json.dumps(entries, separators=(",", ":")).encode("utf-8")
    padded = len(text) + (-(8 + len(text)) % DATA_ALIGNMENT)
    header = struct.pack("<Q", padded) + text + b" " * (padded - len(text))
    start = len(header)
    return PackLayout(
        header=header,
        order=order,
        offsets={d: start + off for d, off in relative.items()},
        nbytes=start + position,
    )


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
