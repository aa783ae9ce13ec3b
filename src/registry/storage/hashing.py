"""sha256 of tensor bytes and of version manifests.

A tensor's digest is the sha256 of its raw bytes (C order, native little-endian),
so it can be checked with any sha256 tool against a slice of a pack. A version's
digest is the sha256 of its canonical manifest (sorted keys with dtype, shape and
tensor digest): the same weights give the same digest whether they came from a
``.pth`` or a ``.safetensors`` file, whatever the file was called.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..config import HASH_THREADS

#: Below this size a buffer is hashed inline: a thread hop costs more than the hash.
_INLINE_BYTES = 1 << 20


def sha256_hex(buffer: memoryview | bytes) -> str:
    return hashlib.sha256(buffer).hexdigest()


def sha256_many(buffers: Sequence[memoryview | bytes], threads: int = HASH_THREADS) -> list[str]:
    """Hex sha256 of each buffer, large ones on a thread pool (hashlib releases the GIL)."""
    results: list[str | None] = [None] * len(buffers)
    large = []
    for i, buf in enumerate(buffers):
        if threads > 1 and len(buf) >= _INLINE_BYTES:
            large.append(i)
        else:
            results[i] = sha256_hex(buf)
    if large:
        # Largest first, so one huge tensor does not run alone at the end.
        large.sort(key=lambda i: -len(buffers[i]))
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for i, digest in zip(large, pool.map(lambda i: sha256_hex(buffers[i]), large)):
                results[i] = digest
    return results  # type: ignore[return-value]


def manifest_digest(entries: Iterable[tuple[str, str, Sequence[int], str]]) -> str:
    """sha256 of the canonical manifest of (name, dtype, shape, tensor digest) entries."""
    manifest = sorted([name, dtype, list(shape), digest] for name, dtype, shape, digest in entries)
    text = json.dumps(manifest, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()
