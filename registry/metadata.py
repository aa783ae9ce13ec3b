"""What a state dict carries besides tensors, kept per version and given back.

- The state dict's ``_metadata``: an ordered mapping of module prefix (``""`` for the
  root, ``"layer1.0.bn1"``, ...) to a small dict, ``{"version": 2}``, that
  ``nn.Module._load_from_state_dict`` reads to upgrade layouts saved by older module
  versions. ``torch.save(model.state_dict())`` keeps it; the catalogue stores it as
  ``[[prefix, {...}], ...]`` so the order survives any database's JSON type.
- A safetensors file's header metadata (str -> str). Pulled safetensors files get it
  back, always with ``format: pt`` (what Hugging Face loaders require) and the
  registry's own keys beside it.

Torch-free: these are plain containers.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

#: The prefix of the registry's own keys in a pulled safetensors file's metadata.
REGISTRY_KEY_PREFIX = "registry."
#: The values a ``_metadata`` entry may hold: what JSON keeps exactly.
PLAIN_VALUES = (str, int, float, bool, type(None))


def encode(metadata: Mapping[Any, Any] | None, notes: list[str] | None = None) -> list[Any] | None:
    """``_metadata`` as JSON for the catalogue; None stays None.

    Values that JSON cannot hold exactly (only str, int, finite float, bool and None
    can: PostgreSQL refuses NaN and infinities in JSON) are left out, with a note;
    torch itself only ever writes ``{"version": int}``.
    """
    if metadata is None:
        return None
    encoded: list[Any] = []
    dropped = 0
    for prefix, entry in metadata.items():
        if not isinstance(prefix, str) or not isinstance(entry, Mapping):
            dropped += 1
            continue
        clean = {}
        for key, value in entry.items():
            if isinstance(key, str) and _plain(value):
                clean[key] = value
            else:
                dropped += 1
        encoded.append([prefix, clean])
    if dropped and notes is not None:
        notes.append(
            f"left out {dropped} entr{'ies' if dropped != 1 else 'y'} of the state dict's "
            "_metadata that are not plain values"
        )
    return encoded


def _plain(value: Any) -> bool:
    """Whether JSON keeps ``value`` exactly, on every database."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, PLAIN_VALUES)


def decode(encoded: Any) -> OrderedDict[str, dict[str, Any]] | None:
    """The ``_metadata`` mapping that ``encode`` stored (a fresh, mutable copy)."""
    if encoded is None:
        return None
    if isinstance(encoded, (str, bytes)):
        encoded = json.loads(encoded)
    return OrderedDict((prefix, dict(entry)) for prefix, entry in encoded)


def strip(encoded: list[Any] | None, prefix: str) -> list[Any] | None:
    """``_metadata`` of the module under ``prefix`` (``"module."``), re-rooted at it.

    The wrapper modules' own entries (the root, and modules above the prefix) go.
    """
    if encoded is None or not prefix:
        return encoded
    root = prefix[:-1]
    out = []
    for key, entry in encoded:
        if key == root:
            out.append(["", entry])
        elif key.startswith(prefix):
            out.append([key[len(prefix) :], entry])
    return out


def safetensors_header(
    file_metadata: Mapping[str, str] | None, registry_keys: Mapping[str, str]
) -> dict[str, str]:
    """Header metadata for a pulled safetensors file: what the pushed file carried,
    ``format: pt``, and the registry's keys (which replace any it carried before)."""
    header = {
        k: v for k, v in (file_metadata or {}).items() if not k.startswith(REGISTRY_KEY_PREFIX)
    }
    header["format"] = "pt"
    header.update(registry_keys)
    return header
