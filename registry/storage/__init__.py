"""The tensor store: content-addressed tensor bytes in immutable pack files.

This layer knows bytes and digests, not torch: tensors come in and go out as
buffers (memoryviews), so the catalogue-only commands never import torch.
"""

from .hashing import checksum_many, manifest_digest, same_bytes, sha256_many
from .local import LocalStore, PackWritten

__all__ = [
    "LocalStore",
    "PackWritten",
    "checksum_many",
    "manifest_digest",
    "same_bytes",
    "sha256_many",
]
