"""A ``.pth``/``.pt`` file (torch.save, zip or legacy) read by torch, its verdicts made ours.

Owns the one call of ``torch.load`` in the package (:func:`_torch_load`:
``weights_only=True``, ``map_location="cpu"``) and :func:`_load_pth`, the order of the
checks around it: the zip layout before torch opens the file; after torch's mmap read,
the storages the pickle declares against their records (a storage it does not
understand: read again without mmap, where torch checks each record itself); when torch
refuses the file, a diagnosis of its structure (``zip_layout``, ``legacy``) so that a
file cut short or damaged is called so, and only an intact pickle torch refuses is
called unsafe (:class:`~registry.errors.UnsafeCheckpointError`, with torch's reason in
our words, :func:`_weights_only_reason`).

Never unpickles except through ``torch.load(weights_only=True)``: no fallback to
``weights_only=False``, no :mod:`pickle` loads. Every failure leaves as a
:class:`~registry.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
from pathlib import Path
from typing import BinaryIO

import torch

from ..errors import CheckpointError, NotACheckpointError, UnsafeCheckpointError
from .damage import _MAX_QUOTED, _Damaged, _first_line, _Hostile
from .legacy import _diagnose_legacy
from .opening import _reading, _strerror
from .pickle_scan import _scan_pickle
from .zip_layout import (
    _archive_pickle,
    _check_archive_storages,
    _diagnose_archive,
    _read_archive,
)


def _weights_only_reason(message: str) -> str:
    """Why torch.load(weights_only=True) refused a pickle, from its (long) message."""
    match = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    match = match or re.search(r"unsupported GLOBAL (\S+) whose module \S+ is blocked", message)
    if match:
        return f"it needs the global {match.group(1)[:100]}, which is not allowed"
    match = re.search(r"Unsupported operand (\d+)", message)
    if match:
        code = int(match.group(1))
        names = {ord(op.code): op.name for op in pickletools.opcodes if len(op.code) == 1}
        opcode = f"{names[code]} ({code})" if code in names else f"{code}"
        return f"it uses the pickle opcode {opcode}, which is not allowed"
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    unsafe_advice = getattr(torch.serialization, "UNSAFE_MESSAGE", "")
    for line in message.replace(unsafe_advice, "").splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not line.startswith(boilerplate) and "weights_only" not in line:
            line = line.split(". ")[0].strip().rstrip(".")
            return line if len(line) <= _MAX_QUOTED else line[: _MAX_QUOTED - 1] + "…"
    return "unsupported pickle content"


def _unsafe(path: Path, exc: pickle.UnpicklingError) -> UnsafeCheckpointError:
    reason = _weights_only_reason(str(exc))
    return UnsafeCheckpointError(
        f"refused to load {path}: torch.load(weights_only=True) rejected it ({reason}); "
        "registry never loads pickles unsafely, so their code is not run. Save the "
        "weights alone with torch.save(model.state_dict(), path)"
    )


def _cannot_read(path: Path, why: str) -> NotACheckpointError:
    return NotACheckpointError(f"cannot read {path} as a PyTorch checkpoint: {why}")


def _torch_failure(exc: Exception) -> str:
    """What torch's error for a file says is wrong with it, in words of ours where we can."""
    if isinstance(exc, MemoryError):
        return "reading it asks for more memory than there is (MemoryError)"
    if isinstance(exc, OSError):
        return f"torch could not read it ({_strerror(exc)})"
    line = _first_line(exc)
    if "not resizable" in line:
        return f"a tensor needs more bytes than its storage holds (torch: {line})"
    return line


def _torch_load(path: Path, *, mmap: bool) -> object:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _load_pth(path: Path, f: BinaryIO, kind: str, file_size: int) -> object:
    """torch.load(weights_only=True) of a .pth whose format ``kind`` was sniffed."""
    archive = None
    if kind == "zip":
        try:
            with _reading(path):
                archive = _read_archive(f, file_size)
        except _Damaged as exc:
            raise _cannot_read(path, str(exc)) from None
        except _Hostile as exc:
            raise UnsafeCheckpointError(f"refused to read {path}: {exc}") from None
    try:
        loaded = _torch_load(path, mmap=archive is not None)
    except Exception as exc:  # torch's errors for a damaged file vary with the damage
        try:
            with _reading(path):
                if archive is not None:
                    _diagnose_archive(f, archive)
                else:
                    _diagnose_legacy(f, file_size)
        except _Damaged as damage:
            raise _cannot_read(path, str(damage)) from None
        except Exception:  # the diagnosis is a courtesy: torch's own verdict stands
            pass
        if isinstance(exc, pickle.UnpicklingError):
            raise _unsafe(path, exc) from None
        raise _cannot_read(path, _torch_failure(exc)) from None
    if archive is None:  # torch read a legacy file: did it read bytes the file holds?
        try:
            with _reading(path):
                _diagnose_legacy(f, file_size)
        except _Damaged as damage:  # a storage with no bytes: torch gave unfilled memory
            raise _cannot_read(path, str(damage)) from None
        except Exception:  # the layout not understood: torch's reading stands
            pass
    if archive is not None:
        try:
            with _reading(path):
                _, pids = _scan_pickle(io.BytesIO(_archive_pickle(f, archive)))
                understood = _check_archive_storages(archive, pids)
        except _Damaged as damage:
            raise _cannot_read(path, str(damage)) from None
        except CheckpointError:
            raise
        except Exception:  # not understood: torch's reading without mmap is the safe one
            understood = False
        if not understood:
            # A storage torch.save would not declare: read it again without mmap, where
            # torch checks each record's size itself.
            del loaded
            try:
                loaded = _torch_load(path, mmap=False)
            except Exception as exc:
                raise _cannot_read(path, _torch_failure(exc)) from None
    return loaded
