"""Read a state dict from a user's file: ``.pth``/``.pt`` (torch.save) or ``.safetensors``.

Files from users are untrusted. Pickle-based checkpoints are read only with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers; there is no fallback to unsafe loading. The format is told by the
file's first bytes, not its name. Warnings that torch or safetensors raise while
reading a user's file are theirs to log, not the user's to read: they are silenced.

Whatever the bytes, reading a file ends in a :class:`Checkpoint` or a
:class:`~registry.errors.CheckpointError` (:class:`~registry.errors.MissingFileError`
if nothing is there) naming the file and what is wrong with it; no other exception
escapes, and nothing in the file runs:

- only a regular file is opened (a FIFO would block the reader for ever; a device or
  a socket is no checkpoint);
- a zip-format ``.pth`` is checked before torch opens it: its directory complete,
  every entry inside the file, under a name inside the archive, once, and stored
  uncompressed (torch.save never compresses; a compressed entry could inflate
  without bound, a zip bomb, and torch's mmap reader would take its compressed bytes
  for tensor data);
- once torch has read it (mmap), every storage the pickle declares must be as long
  as its record: the mmap reader takes the declared size at its word and would read
  past the record, where ``torch.load`` without mmap refuses the file;
- when torch refuses a file, the file's structure says why (cut short, a damaged
  pickle, a storage record missing or short); only an intact pickle that torch
  refuses is called unsafe (:class:`~registry.errors.UnsafeCheckpointError`);
- the tensors may not need more than ``_EXPANSION`` times the file's size plus
  ``_SLACK`` once laid out, both in ``state_dicts`` (tensors repeating their storage
  with a stride of 0, or many views of one storage, would make a small file a memory
  bomb).

Pickles are inspected with :mod:`pickletools` (a decoder that builds no object and
calls nothing), never unpickled outside ``torch.load(weights_only=True)``.

What the file carried besides tensors is kept: the state dict's ``_metadata``
(each module's version, which ``_load_from_state_dict`` reads to upgrade old
layouts) and a safetensors file's header metadata. Wrapper prefixes on the keys
(``module.``, ``_orig_mod.``, ``model.``) are not decided here: only the
architecture can say which keys fit (see ``fitting``).

The package, from the top (imports point down only):

- this module: :class:`Checkpoint`, :func:`read_checkpoint`, :func:`read_source`;
- ``pth`` (torch.load and the checks around it) and ``safetensors``;
- ``state_dicts`` (the state dict inside a loaded object; the expansion limit);
- ``legacy`` and ``zip_layout`` (the two layouts of torch.save, checked);
- ``pickle_scan`` (pickles walked with pickletools);
- ``opening`` (which files are opened, and how; the format sniffed) and ``damage``
  (the internal verdicts ``_Damaged`` and ``_Hostile``).

This module never unpickles, never reads a file's bytes beyond its first 16 and never
parses a format itself: it opens the file, sniffs it and hands it to ``pth`` or
``safetensors``.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..errors import NotACheckpointError
from .opening import _open, _reading, _sniff, check_file
from .pth import _load_pth
from .safetensors import _load_safetensors
from .state_dicts import WRAPPER_KEYS, _check_expansion, unwrap

__all__ = [
    "WRAPPER_KEYS",
    "Checkpoint",
    "check_file",
    "read_checkpoint",
    "read_source",
    "unwrap",
]


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


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read the state dict in ``path`` (a torch.save file, zip or legacy, or safetensors).

    Raises MissingFileError if there is no file; otherwise a CheckpointError naming the
    file and what is wrong: NotACheckpointError (not a checkpoint, cut short,
    damaged, not a state dict), UnsafeCheckpointError (a pickle torch.load with
    weights_only refuses, a zip bomb, entries outside the archive, tensors needing far
    more memory than the file holds), or CheckpointError (not a regular file, an
    error of the operating system while reading it).
    """
    path = check_file(path)
    with _open(path) as f:
        with _reading(path):
            file_size = os.fstat(f.fileno()).st_size
            head = f.read(16)
        kind = _sniff(path, head)
        # torch and safetensors warn about their own deprecations while reading (e.g.
        # TypedStorage, quantized tensors); the user gets our one-line verdict instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "safetensors":
                state, file_metadata = _load_safetensors(path, f, file_size)
                if not state:
                    raise NotACheckpointError(f"{path} is a safetensors file with no tensors")
                _check_expansion(path, state, file_size)
                meta = dict(file_metadata) if file_metadata is not None else None
                return Checkpoint(state, "safetensors", file_metadata=meta)
            loaded = _load_pth(path, f, kind, file_size)
            state, metadata, notes = unwrap(loaded, str(path))
            _check_expansion(path, state, file_size)
    return Checkpoint(state, "pth", notes, metadata=metadata)


def read_source(source: object) -> Checkpoint:
    """The state dict, source format, notes and metadata of what a user pushes or
    identifies: a path to a file, a state dict (any mapping) or an ``nn.Module``.

    Raises InvalidArgumentError for anything else, and what :func:`read_checkpoint`
    raises for a file.
    """
    from ..errors import InvalidArgumentError

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
