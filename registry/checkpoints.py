"""Read a state dict from a user's file: ``.pth``/``.pt`` (torch.save) or ``.safetensors``.

Files from users are untrusted. Pickle-based checkpoints are read only with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers; there is no fallback to unsafe loading. The format is told by the
file's first bytes, not its name. Warnings that torch or safetensors raise while
reading a user's file are theirs to log, not the user's to read: they are silenced.

What the file carried besides tensors is kept: the state dict's ``_metadata``
(each module's version, which ``_load_from_state_dict`` reads to upgrade old
layouts) and a safetensors file's header metadata. Wrapper prefixes on the keys
(``module.``, ``_orig_mod.``, ``model.``) are not decided here: only the
architecture can say which keys fit (see ``fitting``).
"""

from __future__ import annotations

import os
import pickle
import re
import struct
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import (
    CheckpointError,
    MissingFileError,
    NotACheckpointError,
    UnsafeCheckpointError,
)
from .tensors import QUANTIZED

#: Keys under which training scripts commonly nest the model's state dict.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "net", "network")


@dataclass
class Checkpoint:
    """A state dict read from a file, with how it was found and what came with it."""

    state_dict: dict[str, torch.Tensor]
    source_format: str  # "pth" or "safetensors"
    notes: list[str] = field(default_factory=list)
    #: The state dict's ``_metadata`` (module prefix -> {"version": N}), None if none.
    metadata: OrderedDict[str, dict[str, object]] | None = None
    #: A safetensors file's header metadata (str -> str), None for other files.
    file_metadata: dict[str, str] | None = None


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "pth"
    if head[:1] == b"\x80":  # legacy (non-zip) torch.save: a raw pickle stream
        return "pth"
    if len(head) >= 9:
        (length,) = struct.unpack("<Q", head[:8])
        if 2 <= length <= 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    raise NotACheckpointError(f"{path} is not a PyTorch checkpoint (.pth) or a safetensors file")


def _load_pth(path: Path) -> object:
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            # mmap needs the zip format; legacy files are read without it (still weights_only).
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _weights_only_reason(str(exc))
        raise UnsafeCheckpointError(
            f"refused to load {path}: torch.load(weights_only=True) rejected it ({reason}); "
            "registry never loads pickles unsafely, so their code is not run. Save the "
            "weights alone with torch.save(model.state_dict(), path)"
        ) from None
    except (
        RuntimeError,
        EOFError,
        IndexError,
        KeyError,
        TypeError,
        AttributeError,
        zipfile.BadZipFile,
        ValueError,
        struct.error,
    ) as exc:  # what torch raises for damaged files varies with where the damage is
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotACheckpointError(f"cannot read {path} as a PyTorch checkpoint: {first}") from None


def _weights_only_reason(message: str) -> str:
    match = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if match:
        return f"it needs the global {match.group(1)}, which is not allowed"
    match = re.search(r"WeightsUnpickler error: ([^\n]+)", message)
    if match:
        return match.group(1).split(". ")[0].strip().rstrip(".")
    return "unsupported pickle content"


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            return f.get_tensors(), f.metadata()
    except Exception as exc:  # safetensors raises its own SafetensorError and others
        raise NotACheckpointError(f"cannot read {path} as a safetensors file: {exc}") from None


def _is_tensor_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def unwrap(
    obj: object, origin: str
) -> tuple[dict[str, torch.Tensor], OrderedDict[str, dict[str, object]] | None, list[str]]:
    """Find the state dict inside a loaded checkpoint object.

    Returns the tensors (keys as saved), the state dict's ``_metadata`` if it has
    one, and notes saying what was done (which key held the state dict).
    """
    notes: list[str] = []
    if not _is_tensor_dict(obj):
        if isinstance(obj, Mapping):
            for key in WRAPPER_KEYS:
                if key in obj and _is_tensor_dict(obj[key]):
                    notes.append(f"using the state dict stored under the {key!r} key")
                    obj = obj[key]
                    break
    if not _is_tensor_dict(obj):
        raise NotACheckpointError(_describe_non_state_dict(obj, origin))
    metadata = getattr(obj, "_metadata", None)
    if not isinstance(metadata, Mapping):
        metadata = None
    return dict(obj), metadata, notes  # type: ignore[arg-type]


def _quantized_entry(obj: Mapping) -> str | None:
    """The first key that holds quantized weights (eager-mode quantization), if any."""
    for key, value in obj.items():
        values = value if isinstance(value, (tuple, list)) else (value,)
        if any(isinstance(v, torch.Tensor) and v.is_quantized for v in values):
            return str(key)
        if isinstance(key, str) and key.endswith("_packed_params"):
            return key
        if isinstance(value, Mapping):
            found = _quantized_entry(value)
            if found is not None:
                return found
    return None


def _describe_non_state_dict(obj: object, origin: str) -> str:
    if isinstance(obj, Mapping):
        quantized = _quantized_entry(obj)
        if quantized is not None:
            return (
                f"{origin} holds a quantized model's state dict ({quantized!r} holds "
                f"quantized weights): {QUANTIZED}"
            )
        if not obj:
            return f"{origin} holds an empty dict, not a state dict"
        odd_keys = [k for k in obj if not isinstance(k, str)]
        if odd_keys:
            shown = ", ".join(repr(k) for k in odd_keys[:5])
            return (
                f"{origin} is not a state dict: its keys must be strings, but "
                f"{len(odd_keys)} are not ({shown})"
            )
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        shown = ", ".join(f"{k!r} ({type(obj[k]).__name__})" for k in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        return (
            f"{origin} is not a state dict: {len(bad)} of its {len(obj)} entries are not "
            f"tensors ({shown}{more}), and none of the keys "
            f"{', '.join(repr(k) for k in WRAPPER_KEYS)} holds one"
        )
    return f"{origin} holds a {type(obj).__name__}, not a state dict (a dict of tensors)"


def check_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, if it is a file: else MissingFileError, or CheckpointError for
    a folder."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    return path


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read the state dict in ``path``; raise a CheckpointError saying why if it cannot."""
    path = check_file(path)
    try:
        kind = _sniff(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    # torch and safetensors warn about their own deprecations while reading (e.g.
    # TypedStorage, quantized tensors); the user gets our one-line verdict instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "safetensors":
            state, file_metadata = _load_safetensors(path)
            if not state:
                raise NotACheckpointError(f"{path} is a safetensors file with no tensors")
            meta = dict(file_metadata) if file_metadata is not None else None
            return Checkpoint(state, "safetensors", file_metadata=meta)
        loaded = _load_pth(path)
        state, metadata, notes = unwrap(loaded, str(path))
    return Checkpoint(state, "pth", notes, metadata=metadata)


def read_source(source: object) -> Checkpoint:
    """The state dict, source format, notes and metadata of what a user pushes or
    identifies: a path to a file, a state dict (any mapping) or an ``nn.Module``.

    Raises InvalidArgumentError for anything else, and what :func:`read_checkpoint`
    raises for a file.
    """
    from .errors import InvalidArgumentError

    if isinstance(source, (str, os.PathLike)):
        return read_checkpoint(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(source, torch.nn.Module):
            state, meta, notes = unwrap(source.state_dict(), "the module's state dict")
            return Checkpoint(state, "module", notes, metadata=meta)
        if isinstance(source, Mapping):
            state, meta, notes = unwrap(source, "the given state dict")
            return Checkpoint(state, "state_dict", notes, metadata=meta)
    raise InvalidArgumentError(
        f"cannot push a {type(source).__name__}: give a file path, a state dict or an nn.Module"
    )
