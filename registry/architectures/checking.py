"""torch's own verdict on weights: strict ``load_state_dict(assign=True)`` into a meta-device
copy of the architecture, and its refusal parsed into facts (:class:`Misfit`).

Owns what is accepted (exactly what torch accepts: every module's own loading code
runs), the per-process memory of acceptances that cannot depend on the tensors'
values, and the module versions (``_metadata``) an architecture carries. Imports only
``resolving`` and ``building`` of this package; never resolves names itself.
"""

from __future__ import annotations

import copy
import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ArchitectureMismatchError
from .building import meta_key, skeleton, template
from .resolving import Architecture

#: How many keys of each kind a mismatch message names.
SHOWN_KEYS = 5


@dataclass(frozen=True)
class Misfit:
    """Why torch's own strict ``load_state_dict`` refused weights: the same facts, parsed."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, list[int], list[int]]]  # key, weights' shape, model's shape
    errors: list[str]  # anything else the modules said, one line each

    def describe(self, label: str) -> str:
        parts = []
        if self.missing:
            parts.append(_listing(len(self.missing), "missing key", self.missing))
        if self.unexpected:
            parts.append(_listing(len(self.unexpected), "unexpected key", self.unexpected))
        if self.mismatched:
            shown = [f"{k}: weights {s} vs model {e}" for k, s, e in self.mismatched]
            parts.append(_listing(len(self.mismatched), "mis-shaped key", shown))
        parts += self.errors[:SHOWN_KEYS]
        return f"weights do not fit {label}: " + "; ".join(parts)

    def error(self, label: str, hint: str = "", prefix: str = "") -> ArchitectureMismatchError:
        return ArchitectureMismatchError(
            prefix + self.describe(label) + hint,
            missing=self.missing,
            unexpected=self.unexpected,
            mismatched=self.mismatched,
        )


def _listing(count: int, noun: str, items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN_KEYS])
    more = f", and {count - SHOWN_KEYS} more" if count > SHOWN_KEYS else ""
    return f"{count} {noun}{'s' if count != 1 else ''} ({shown}{more})"


_SIZE_MISMATCH = re.compile(
    r"size mismatch for (.+?): copying a param with shape torch\.Size\(\[([\d, ]*)\]\) from "
    r"checkpoint, the shape in current model is torch\.Size\(\[([\d, ]*)\]\)"
)


def _dims(text: str) -> list[int]:
    return [int(d) for d in text.split(",") if d.strip()]


def with_metadata(
    state: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None
) -> OrderedDict[str, torch.Tensor]:
    """A state dict as ``nn.Module.state_dict()`` makes them: ordered, with ``_metadata``.

    The metadata is a deep copy: ``load_state_dict`` writes into it.
    """
    out = OrderedDict(state)
    if metadata is not None:
        out._metadata = copy.deepcopy(metadata)  # type: ignore[attr-defined]
    return out


def load_by_torch(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any] | None,
    *,
    strict: bool = True,
) -> Misfit | None:
    """Assign ``state`` into ``module`` by torch's own ``load_state_dict(assign=True)``.

    Every module's own loading code runs (``_load_from_state_dict`` overrides, version
    upgrades, extra state), so what is accepted is exactly what torch accepts. Returns
    None when torch accepts the weights (with ``strict``, all keys), else the facts of
    its refusal. Warnings that the modules raise while loading are silenced.
    """
    import warnings

    captured: dict[str, Any] = {}

    def keep_keys(_module: nn.Module, incompatible: Any) -> None:
        captured["missing"] = list(incompatible.missing_keys)
        captured["unexpected"] = list(incompatible.unexpected_keys)

    handle = module.register_load_state_dict_post_hook(keep_keys)
    errors: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # strict=False only defers the verdict on keys to the lines below: torch
            # passes strict=True to every module's _load_from_state_dict either way.
            module.load_state_dict(with_metadata(state, metadata), strict=False, assign=True)
    except RuntimeError as exc:
        errors = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()] or [
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        ]
    except Exception as exc:  # a module's own loading code refused (e.g. a version check)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        errors = [f"{type(exc).__name__}: {first}".rstrip(": ")]
    finally:
        handle.remove()
    missing = captured.get("missing", []) if strict else []
    unexpected = captured.get("unexpected", []) if strict else []
    return _refusal(missing, unexpected, errors)


def _refusal(missing: list[str], unexpected: list[str], errors: list[str]) -> Misfit | None:
    """The facts of torch's refusal (its error lines parsed), or None when there is none."""
    mismatched = []
    other = []
    for line in errors:
        found = _SIZE_MISMATCH.search(line)
        if found:
            mismatched.append((found.group(1), _dims(found.group(2)), _dims(found.group(3))))
        else:
            other.append(line.rstrip(". "))
    if not (missing or unexpected or mismatched or other):
        return None
    return Misfit(missing, unexpected, mismatched, other)


def misfit(
    arch: Architecture,
    kwargs: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any] | None,
) -> Misfit | None:
    """Whether torch's strict ``load_state_dict`` into ``arch(**kwargs)`` takes ``state``.

    Runs on a copy of the cached meta-device module: no memory, no init; the
    tensors are assigned, never copied. torch's acceptance is remembered for the
    process where it cannot depend on the tensors' values (see :func:`_value_blind`),
    keyed by everything it can depend on: names, shapes, dtypes and metadata.
    """
    key = None
    if _value_blind(arch, kwargs):
        key = (
            meta_key(arch, kwargs),
            tuple((k, tuple(v.shape), v.dtype) for k, v in state.items()),
            json.dumps(metadata, sort_keys=False, default=str),
        )
        if key in _ACCEPTED:
            return None
    refused = load_by_torch(skeleton(arch, kwargs), state, metadata)
    if refused is None and key is not None:
        if len(_ACCEPTED) >= _ACCEPTED_MAX:
            _ACCEPTED.pop(next(iter(_ACCEPTED)))
        _ACCEPTED[key] = True
    return refused


#: torch's acceptances that cannot depend on values, most recent last (see misfit).
_ACCEPTED: dict[tuple[Any, ...], bool] = {}
_ACCEPTED_MAX = 64
_BLIND: dict[str, bool] = {}


def _value_blind(arch: Architecture, kwargs: Mapping[str, Any]) -> bool:
    """Whether torch's verdict on weights for ``arch(**kwargs)`` depends only on their
    names, shapes, dtypes and ``_metadata``, never on their values.

    True when every module loads with ``nn.Module``'s own code or an override from
    ``torch.nn`` itself (BatchNorm's and InstanceNorm's read key names and versions),
    and none has load hooks or extra state. Anything else (a torchvision or user
    override, a quantized module, a hook) is asked every time.
    """
    key = meta_key(arch, kwargs)
    found = _BLIND.get(key)
    if found is None:
        found = True
        for module in template(arch, kwargs).modules():
            cls = type(module)
            owner = next(c for c in cls.__mro__ if "_load_from_state_dict" in vars(c))
            if owner is not nn.Module and not owner.__module__.startswith("torch.nn.modules."):
                found = False
            elif module._load_state_dict_pre_hooks or module._load_state_dict_post_hooks:
                found = False
            elif getattr(cls, "set_extra_state", None) is not nn.Module.set_extra_state:
                found = False
            if not found:
                break
        _BLIND[key] = found
    return found


def module_versions(arch: Architecture, kwargs: Mapping[str, Any]) -> OrderedDict[str, Any]:
    """The ``_metadata`` that ``arch(**kwargs).state_dict()`` carries with this torch."""
    metadata = getattr(template(arch, kwargs).state_dict(), "_metadata", None)
    return OrderedDict((k, dict(v)) for k, v in (metadata or {}).items())
