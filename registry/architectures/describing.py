"""Recording how to rebuild a module object: its architecture name and constructor
arguments (:func:`describe_module`), for a push given an ``nn.Module`` rather than a name.

Reads the names registered in code (``registry.plugins``); builds nothing and must
never import the other modules of this package.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .. import plugins
from ..errors import ArchitectureError


def describe_module(
    module: nn.Module, arch_kwargs: Mapping[str, Any] | None
) -> tuple[str, dict[str, Any], str]:
    """(architecture name, constructor arguments, where they came from) for a module object.

    The name is the one its class was registered under, else its import path. The
    arguments are ``arch_kwargs`` if given, else the module's ``config`` or ``hparams``
    (a dict, a dataclass, or anything with ``to_dict()``), else none if the
    constructor needs none. Raises ArchitectureError when neither can be known.
    """
    cls = type(module)
    name = _recorded_name(cls)
    if arch_kwargs is not None:
        return name, dict(arch_kwargs), "arch_kwargs"
    for attribute in ("config", "hparams"):
        value = getattr(module, attribute, None)
        if value is not None and not isinstance(value, (nn.Module, torch.Tensor)):
            converted = _as_dict(value)
            if converted is not None:
                return name, converted, attribute
    required = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self"
        and p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if required:
        raise ArchitectureError(
            f"cannot know the constructor arguments of {cls.__qualname__} "
            f"(it needs {', '.join(required)}): pass arch_kwargs={{...}}, or give the module "
            "a `config` attribute holding them"
        )
    return name, {}, "defaults"


def _recorded_name(cls: type) -> str:
    """The name ``cls`` was registered under, else its import path; ArchitectureError when
    no other process could rebuild it from that (a torch building block, a local class)."""
    name = plugins.registered_name_of(cls)
    if name is not None:
        return name
    package = cls.__module__.split(".")[0]
    if package in ("torch", "torchvision", "timm"):
        raise ArchitectureError(
            f"cannot record how to rebuild a {cls.__qualname__} from its class alone (a "
            f"{package} building block, built by some factory): pass "
            "arch= (e.g. arch='resnet18', or a package.module:function that builds it)"
        )
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        where = "in __main__" if cls.__module__ == "__main__" else "inside a function"
        raise ArchitectureError(
            f"cannot record how to rebuild {cls.__qualname__}: it is defined {where}, so "
            "no other process can import it; move it to an importable module, or "
            "register it with @registry.architecture('name')"
        )
    return f"{cls.__module__}:{cls.__qualname__}"


def _as_dict(value: Any) -> dict[str, Any] | None:
    import dataclasses

    if isinstance(value, Mapping):
        return dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        result = to_dict()
        return dict(result) if isinstance(result, Mapping) else None
    return None
