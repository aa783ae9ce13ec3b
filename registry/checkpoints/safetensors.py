"""A ``.safetensors`` file read by the safetensors library, its refusals made ours.

Owns :func:`_load_safetensors` (the tensors and the header metadata, read on the CPU)
and, when the library refuses a file, :func:`_safetensors_cut_short`, which says whether
the file is cut short (its header, or its tensors' data, running past the end);
otherwise the library's own first line is quoted. Any failure leaves as a
:class:`~registry.errors.NotACheckpointError` naming the file.

Never uses torch.load or pickle (a safetensors file holds no pickle), and never trusts a
length in the header to size a read beyond the file.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import BinaryIO

import torch

from ..errors import NotACheckpointError
from .damage import _first_line
from .opening import _reading


def _load_safetensors(
    path: Path, f: BinaryIO, file_size: int
) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as opened:
            return opened.get_tensors(), opened.metadata()
    except Exception as exc:  # safetensors raises its own SafetensorError and others
        with _reading(path):
            why = _safetensors_cut_short(f, file_size) or _first_line(exc)
        raise NotACheckpointError(f"cannot read {path} as a safetensors file: {why}") from None


def _safetensors_cut_short(f: BinaryIO, file_size: int) -> str | None:
    """Why a safetensors file that its library refused is cut short, if it is."""
    f.seek(0)
    (header_length,) = struct.unpack("<Q", f.read(8))
    if 8 + header_length > file_size:
        return (
            f"the file is cut short: its header declares {header_length} bytes, but only "
            f"{file_size - 8} follow its length"
        )
    try:
        header = json.loads(f.read(header_length))
        ends = [
            int(entry["data_offsets"][1])
            for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict)
        ]
    except Exception:  # a damaged header: the library's own message says how
        return None
    needed = 8 + header_length + max(ends, default=0)
    if needed > file_size:
        return (
            f"the file is cut short: its tensors end at byte {needed}, but the file has "
            f"{file_size} bytes"
        )
    return None
