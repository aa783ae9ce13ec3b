"""The tensor store: content-addressed tensor bytes in immutable pack files.

This layer knows bytes and digests, not torch: tensors come in and go out as
buffers (memoryviews), so the catalogue-only commands never import torch. The
pipelines see only the ``Store`` interface of ``base.py``; ``local.py`` is the folder
implementation, ``packs.py`` the pack format and ``hashing.py`` the digests.
"""

from .base import PackReader, PackWritten, Store, StoredFile
from .hashing import checksum_many, manifest_digest, same_bytes, sha256_many
from .local import LocalStore

__all__ = [
    "LocalStore",
    "PackReader",
    "PackWritten",
    "Store",
    "StoredFile",
    "checksum_many",
    "manifest_digest",
    "same_bytes",
    "sha256_many",
]
