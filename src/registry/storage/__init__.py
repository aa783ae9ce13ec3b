"""The tensor store: content-addressed tensor bytes in immutable pack files.

This layer knows bytes and digests, not torch: tensors come in and go out as
buffers (memoryviews), so the catalogue-only commands never import torch.
"""

from .hashing import manifest_digest, sha256_many
from .local import LocalStore, PackWritten
from .packs import BlobSpec

__all__ = ["BlobSpec", "LocalStore", "PackWritten", "manifest_digest", "sha256_many"]
