"""Which architecture names exist before anything is built, and who may claim a name.

Three kinds of name: torchvision's (built in; nothing may shadow them), names
registered in code, and plugins' entry points. Two ways to make a name resolvable:

- in code: ``@registry.architecture("tinynet")`` on an ``nn.Module`` class or a
  factory function, or ``registry.register_architecture("tinynet", builder)``;
- from an installed package: an entry point in the ``registry.architectures`` group,
  ``tinynet = "mypkg.models:TinyNet"``; loaded only when its name is asked for.

The bottom of the architecture layer: ``registry/__init__.py`` imports it, so it must
never import torch, torchvision or ``registry.architectures`` at module level (the
catalogue-only commands stay torch-free); torchvision is imported only inside
:func:`torchvision_names`, when a name is checked against it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, TypeVar

from .errors import InvalidArgumentError

ENTRY_POINT_GROUP = "registry.architectures"
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,127}")

B = TypeVar("B", bound=Callable[..., Any])


@dataclass(frozen=True)
class Registered:
    """A builder registered under a name, and where it came from."""

    name: str
    builder: Callable[..., Any]
    source: str


_REGISTERED: dict[str, Registered] = {}


@lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """Every torchvision architecture name, sorted (imports torchvision, once)."""
    import torchvision.models

    return tuple(sorted(torchvision.models.list_models()))


def is_builtin(name: str) -> bool:
    """Whether ``name`` is a torchvision architecture (which nothing may shadow)."""
    return name in torchvision_names()


def validate_arch_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidArgumentError(
            f"invalid architecture name {name!r}: start with a letter, then letters, digits, "
            "'.', '_' or '-' (a ':' is for import paths like mypkg.models:TinyNet)"
        )
    return name


def register_architecture(name: str, builder: B) -> B:
    """Make ``name`` build ``builder(**kwargs)`` (a module class or a factory)."""
    validate_arch_name(name)
    if not callable(builder):
        raise InvalidArgumentError(f"the builder for {name!r} must be callable")
    if is_builtin(name):
        raise InvalidArgumentError(
            f"{name!r} is a torchvision architecture: versions stored under that name must "
            "keep loading as torchvision's; register yours under another name"
        )
    existing = _REGISTERED.get(name)
    if existing is not None and existing.builder is not builder:
        raise InvalidArgumentError(
            f"architecture {name!r} is already registered (by {existing.source}); "
            "unregister it first or pick another name"
        )
    module = getattr(builder, "__module__", "?")
    _REGISTERED[name] = Registered(name, builder, f"registered ({module})")
    return builder


def architecture(name: str) -> Callable[[B], B]:
    """Decorator form of :func:`register_architecture`."""
    validate_arch_name(name)

    def decorate(builder: B) -> B:
        return register_architecture(name, builder)

    return decorate


def unregister_architecture(name: str) -> None:
    """Forget a name registered in code (plugins stay)."""
    _REGISTERED.pop(name, None)


def registered() -> dict[str, Registered]:
    return dict(_REGISTERED)


def registered_name_of(builder: Any) -> str | None:
    """The name ``builder`` was registered under, if any."""
    for entry in _REGISTERED.values():
        if entry.builder is builder:
            return entry.name
    return None


@cache
def plugin_entry_points() -> dict[str, Any]:
    """Entry points of the ``registry.architectures`` group, by name (not loaded)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def refresh_plugins() -> None:
    """Look for plugins again (after installing a package in a running process)."""
    plugin_entry_points.cache_clear()
