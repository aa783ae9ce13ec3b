"""What a loaded object holds: the state dict inside it, or why there is none.

Owns the wrapper keys under which training scripts nest a state dict
(:data:`WRAPPER_KEYS`) and :func:`unwrap`, which finds the state dict (string keys,
tensor values) and its ``_metadata``; the message saying what an object is instead
(a quantized model's state dict, an empty dict, keys that are not strings, entries that
are not tensors); and :func:`_check_expansion`, the limit on the memory a file's
tensors may need once laid out (``_EXPANSION`` times the file's size plus ``_SLACK``:
tensors repeating their storage with a stride of 0, or many views of one storage,
would make a small file a memory bomb).

Never reads a file, never decides wrapper prefixes on the keys (``module.``,
``_orig_mod.``: only the architecture can say which keys fit, see ``fitting``), and
never recurses over nested mappings (a pickle can nest a dict in itself or thousands
deep): they are searched breadth-first, each once.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from pathlib import Path

import torch

from .._format import size as format_size
from ..errors import NotACheckpointError, UnsafeCheckpointError
from ..tensors import QUANTIZED

#: Keys under which training scripts commonly nest the model's state dict.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "net", "network")

#: A file's tensors may need at most this many times its size once laid out, plus _SLACK.
_EXPANSION = 4
_SLACK = 64 << 20


def _check_expansion(path: Path, state: Mapping[str, object], file_size: int) -> None:
    """Refuse tensors that need far more memory than the file holds (a memory bomb)."""
    total = 0
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.layout == torch.strided and not value.is_meta:
            total += value.numel() * value.element_size()
    if total > _EXPANSION * file_size + _SLACK:
        raise UnsafeCheckpointError(
            f"refused to read {path}: its {len(state)} tensors need {format_size(total)} once "
            f"laid out, more than {_EXPANSION} times the file's {format_size(file_size)} plus "
            f"{format_size(_SLACK)}: tensors repeat their storage's bytes (a stride of 0) or "
            "view one storage many times. Save each tensor's own data (tensor.clone())"
        )


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
    one, and notes saying what was done (which key held the state dict). Raises
    NotACheckpointError saying what ``obj`` is instead.
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


def _short(value: object) -> str:
    """``repr(value)``, at most 60 characters (keys of a hostile file can be huge)."""
    if isinstance(value, (str, bytes)) and len(value) > 60:
        value = value[:60]
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _quantized_entry(obj: Mapping) -> str | None:
    """The first key that holds quantized weights (eager-mode quantization), if any.

    Nested mappings are searched breadth-first, each once (a pickle can nest a dict
    in itself or thousands deep)."""
    queue, seen = deque([obj]), {id(obj)}
    while queue:
        mapping = queue.popleft()
        for key, value in mapping.items():
            values = value if isinstance(value, (tuple, list)) else (value,)
            if any(isinstance(v, torch.Tensor) and v.is_quantized for v in values):
                return _short(key)[1:-1] if isinstance(key, str) else _short(key)
            if isinstance(key, str) and key.endswith("_packed_params"):
                return key[:60]
            if isinstance(value, Mapping) and id(value) not in seen:
                seen.add(id(value))
                queue.append(value)
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
            shown = ", ".join(_short(k) for k in odd_keys[:5])
            return (
                f"{origin} is not a state dict: its keys must be strings, but "
                f"{len(odd_keys)} are not ({shown})"
            )
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        shown = ", ".join(f"{_short(k)} ({type(obj[k]).__name__})" for k in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        return (
            f"{origin} is not a state dict: {len(bad)} of its {len(obj)} entries are not "
            f"tensors ({shown}{more}), and none of the keys "
            f"{', '.join(repr(k) for k in WRAPPER_KEYS)} holds one"
        )
    return f"{origin} holds a {type(obj).__name__}, not a state dict (a dict of tensors)"
