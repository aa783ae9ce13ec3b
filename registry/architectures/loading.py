"""Loading stored weights into a fresh module of an architecture: :func:`instantiate`.

Owns the choice of module to load into (a meta-device skeleton, or a CPU build for
architectures that keep tensors a state dict cannot fill) and keeping tied weights
tied. Accepts exactly what ``checking.load_by_torch`` accepts; imports only
``resolving``, ``building`` and ``checking`` of this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .building import build_on_cpu, meta_key, skeleton
from .checking import load_by_torch, module_versions
from .resolving import Architecture

#: Architectures (with arguments) whose modules keep tensors a state dict cannot fill,
#: and those known not to (keyed by meta_key).
_NEEDS_CPU: set[str] = set()
_META_OK: set[str] = set()


def instantiate(
    arch: Architecture,
    kwargs: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    device: str | torch.device = "cpu",
    *,
    strict: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build ``arch`` and assign ``state_dict`` into it; eval mode, on ``device``.

    ``metadata`` is the state dict's ``_metadata`` (module versions) that the modules'
    loading code reads, as :func:`load_by_torch` passes it.

    The module is built on the meta device and the given tensors become its
    parameters and buffers (no copy). Architectures that keep tensors the state dict
    cannot fill (non-persistent buffers, plain tensor attributes) are built on the
    CPU instead, once detected. Tied weights stay tied.
    """
    module = _fresh(arch, kwargs, strict)
    tied = _tied_groups(module)
    refused = load_by_torch(module, state_dict, metadata, strict=strict)
    if refused is not None and metadata is None and refused.errors:
        # A version stored before the registry kept module versions (schema 0003) may
        # be refused for lacking them (mnasnet's version check): give the current ones.
        module = _fresh(arch, kwargs, strict)
        tied = _tied_groups(module)
        if load_by_torch(module, state_dict, module_versions(arch, kwargs), strict=strict) is None:
            refused = None
    if refused is not None:
        raise refused.error(arch.label(kwargs), prefix="stored ")
    _tie_again(module, tied)
    if torch.device(device) != torch.device("cpu"):
        module.to(device)
    module.eval()
    return module


def _fresh(arch: Architecture, kwargs: Mapping[str, Any], strict: bool) -> nn.Module:
    """A module to load into: a meta skeleton, or a CPU build where meta cannot do."""
    key = meta_key(arch, kwargs)
    if key in _NEEDS_CPU or not strict:
        # Without strict, keys the weights lack keep a real initialisation.
        return build_on_cpu(arch, kwargs)
    module = skeleton(arch, kwargs)
    if key not in _META_OK:
        if _leftover_meta(module):
            _NEEDS_CPU.add(key)
            return build_on_cpu(arch, kwargs)
        _META_OK.add(key)
    return module


def _leftover_meta(module: nn.Module) -> list[str]:
    """Tensors the state dict cannot fill: non-persistent buffers, plain tensor attributes."""
    found = []
    for mod_name, mod in module.named_modules():
        for name in getattr(mod, "_non_persistent_buffers_set", ()):
            buf = mod._buffers.get(name)
            if buf is not None and buf.is_meta:
                found.append(f"{mod_name}.{name}".lstrip("."))
        for name, value in vars(mod).items():
            values = value if isinstance(value, (list, tuple)) else (value,)
            if any(isinstance(v, torch.Tensor) and v.is_meta for v in values):
                found.append(f"{mod_name}.{name}".lstrip("."))
    return found


def _tied_groups(module: nn.Module) -> list[list[str]]:
    """State-dict keys that name the same tensor (tied weights), in groups."""
    groups: dict[int, list[str]] = {}
    for name, tensor in list(module.named_parameters(remove_duplicate=False)) + list(
        module.named_buffers(remove_duplicate=False)
    ):
        groups.setdefault(id(tensor), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _tie_again(module: nn.Module, tied: list[list[str]]) -> None:
    """Make each group of keys name one tensor again, the first's (assign=True untied them)."""
    for names in tied:
        first = (
            module.get_parameter(names[0])
            if _is_param(module, names[0])
            else module.get_buffer(names[0])
        )
        for other in names[1:]:
            _set_by_path(module, other, first)


def _is_param(module: nn.Module, path: str) -> bool:
    try:
        module.get_parameter(path)
    except AttributeError:
        return False
    return True


def _set_by_path(module: nn.Module, path: str, value: torch.Tensor) -> None:
    owner_path, _, attr = path.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    if isinstance(value, nn.Parameter):
        owner.register_parameter(attr, value)
    else:
        owner._buffers[attr] = value
