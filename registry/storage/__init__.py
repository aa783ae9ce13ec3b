"""The tensor store: content-addressed tensor bytes in immutable pack files.

This layer knows bytes and digests, not torch: tensors come in and go out as
buffers (memoryviews), so the catalogue-only commands never import torch. The
pipelines see only the ``Store`` interface of ``base.py``; ``local.py`` is the folder
implementation, ``s3.py`` the object-store one (read through ``cache.py``), ``packs.py``
the pack format and ``hashing.py`` the digests. :func:`store_for` picks one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import PackMissing, PackReader, PackWritten, Store, StoredFile, new_pack_id
from .hashing import checksum_many, manifest_digest, same_bytes, sha256_many
from .local import LocalStore

if TYPE_CHECKING:
    from ..config import Settings


def store_for(settings: Settings) -> Store:
    """The store ``settings`` name: a folder, or a bucket read through the local cache."""
    if settings.object_store is not None:
        from .. import config
        from .cache import PackCache
        from .s3 import S3Store

        cache = PackCache(settings.pack_cache_dir, _cache_key(settings), config.cache_max_bytes())
        return S3Store(settings.object_store, cache)
    assert settings.storage_path is not None
    return LocalStore(settings.storage_path)


def _cache_key(settings: Settings) -> str:
    """What makes two object stores the same one: the endpoint, bucket and prefix."""
    from .. import config

    return f"{settings.storage_url} at {config.object_store_endpoint() or 'AWS'}"


__all__ = [
    "LocalStore",
    "PackMissing",
    "PackReader",
    "PackWritten",
    "Store",
    "StoredFile",
    "checksum_many",
    "manifest_digest",
    "new_pack_id",
    "same_bytes",
    "sha256_many",
    "store_for",
]
