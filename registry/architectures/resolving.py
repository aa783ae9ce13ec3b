"""Resolving an architecture name to a builder: registered in code, timm, an import path,
a plugin's entry point, or torchvision; and importing the module a stored name needs.

Owns :class:`Architecture` (a name, where it came from, and its builder) and the lookup
order. Builds nothing and never imports torch at module level (timm and torchvision
are imported only when a name asks for them); must never import the other modules of
this package, which all build on it.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from .. import plugins
from ..errors import ArchitectureNotFoundError
from ..keyvalue import format_kwargs
from ..plugins import plugin_entry_points

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Architecture:
    """A buildable architecture: its registry name, where it comes from, and its builder."""

    name: str
    source: str
    builder: Callable[..., nn.Module]
    fixed_kwargs: tuple[tuple[str, Any], ...] = ()

    def label(self, kwargs: Mapping[str, Any]) -> str:
        return f"{self.name}({format_kwargs(kwargs)})"


def available() -> list[tuple[str, str]]:
    """(name, source) of every architecture that can be rebuilt by name.

    Registered names and plugins first, then torchvision. Import paths
    (``mypkg.models:TinyNet``) and timm models (``timm:NAME``, when timm is
    installed) work too without being listed here.
    """
    found = [(n, r.source) for n, r in sorted(plugins.registered().items())]
    found += [
        (n, f"plugin ({ep.value})")
        for n, ep in sorted(plugin_entry_points().items())
        if n not in plugins.registered() and not plugins.is_builtin(n)
    ]
    return found + [(n, "torchvision") for n in plugins.torchvision_names()]


def resolve(name: str) -> Architecture:
    """The architecture called ``name``, looked up in this order.

    1. a name registered in code (``@registry.architecture``),
    2. ``timm:NAME``, a timm model (never pretrained),
    3. ``package.module:Class`` (or a factory function), imported,
    4. a plugin's entry point in the ``registry.architectures`` group,
    5. a torchvision model (built with ``weights=None``).
    """
    if not isinstance(name, str) or not name:
        raise ArchitectureNotFoundError("empty architecture name")
    entry = plugins.registered().get(name)
    if entry is not None:
        return Architecture(name=name, source=entry.source, builder=entry.builder)
    if name.startswith("timm:"):
        return _timm(name)
    if ":" in name:
        return Architecture(name=name, source="import", builder=_import(name))
    point = plugin_entry_points().get(name)
    # A plugin never shadows torchvision.
    if point is not None and not plugins.is_builtin(name):
        try:
            builder = point.load()
        except Exception as exc:
            raise ArchitectureNotFoundError(
                f"plugin architecture {name!r} ({point.value}) cannot be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        return Architecture(name=name, source=f"plugin ({point.value})", builder=builder)
    return _torchvision(name)


def resolve_stored(name: str, module: str | None) -> Architecture:
    """The architecture a stored version names, as :func:`resolve` finds it; a name that
    was registered in code by ``module`` when the version was pushed, and is not
    registered in this process, imports ``module`` first (the same trust as an import
    path; never a standard-library module, which a stored row or a bundle could name
    for its import's side effects). Raises ArchitectureNotFoundError naming the module
    when that fails."""
    if module == "__main__" and name not in plugins.registered():
        try:
            return resolve(name)
        except ArchitectureNotFoundError:
            raise ArchitectureNotFoundError(
                f"architecture {name!r} was registered by the script that pushed the version "
                f"(__main__); register it in this process (@registry.architecture({name!r})) "
                "before loading"
            ) from None
    stdlib = module is not None and module.split(".")[0] in _STDLIB  # registers no model
    if module and not stdlib and name not in plugins.registered() and ":" not in name:
        try:
            import_module(module, f"architecture {name!r} (it registered the name at push)")
        except ArchitectureNotFoundError:
            try:
                return resolve(name)  # known some other way here (a plugin)
            except ArchitectureNotFoundError:
                pass
            raise
    return resolve(name)


def registering_module(name: str) -> str | None:
    """The module whose code registered ``name`` in this process (``__main__`` for a
    script); None for names not registered in code."""
    entry = plugins.registered().get(name)
    return getattr(entry.builder, "__module__", None) if entry is not None else None


def import_module(module_name: str, purpose: str) -> Any:
    """Import ``module_name`` as ``python -m`` would find it: on ``sys.path``, then in
    the current folder (appended, so an installed package of the same name wins).

    Raises ArchitectureNotFoundError saying where it looked and how to add a folder
    (``PYTHONPATH``) when the module cannot be found, or what it raised while importing.
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = module_name.split(".")[0]
        cwd = os.getcwd()
        retried = exc.name == top and cwd not in sys.path and "" not in sys.path
        if retried:
            sys.path.append(cwd)
            importlib.invalidate_caches()
            try:
                return importlib.import_module(module_name)
            except ModuleNotFoundError as again:
                exc = again
            except Exception as again:
                raise _import_failed(module_name, purpose, again) from None
        if exc.name is not None and exc.name != top and not module_name.startswith(exc.name):
            raise _import_failed(module_name, purpose, exc) from None  # it imports a missing one
        raise ArchitectureNotFoundError(
            f"cannot import module {module_name!r} for {purpose}: no {exc.name or top!r} in the "
            f"current folder ({cwd}) nor on Python's path; run from the folder that holds it, or "
            "add that folder to PYTHONPATH"
        ) from None
    except Exception as exc:
        raise _import_failed(module_name, purpose, exc) from None


def _import_failed(module_name: str, purpose: str, exc: BaseException) -> ArchitectureNotFoundError:
    return ArchitectureNotFoundError(
        f"cannot import module {module_name!r} for {purpose}: {type(exc).__name__}: {exc}"
    )


#: Modules an import path may not name: a version's architecture is called with its
#: arguments when it is loaded, and a catalogue row or an imported bundle must not be
#: able to make that ``os:system`` or ``subprocess:run``.
_STDLIB = frozenset(sys.stdlib_module_names)


def _import(path: str) -> Callable[..., nn.Module]:
    """``package.module:Class.attr`` -> the object, or ArchitectureNotFoundError saying why."""
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname or any(not p.isidentifier() for p in qualname.split(".")):
        raise ArchitectureNotFoundError(
            f"invalid architecture import path {path!r}: expected package.module:ClassName"
        )
    if module_name.split(".")[0] in _STDLIB:
        raise ArchitectureNotFoundError(
            f"architecture {path!r} names the Python standard library, which builds no "
            "model; an import path names an nn.Module class or a function that returns one"
        )
    obj: Any = import_module(module_name, f"architecture {path!r}")
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ArchitectureNotFoundError(
                f"module {module_name!r} has no {qualname!r} (architecture {path!r})"
            ) from None
    import torch.nn

    builds = issubclass(obj, torch.nn.Module) if isinstance(obj, type) else inspect.isfunction(obj)
    if not builds:
        raise ArchitectureNotFoundError(
            f"{path!r} is not an nn.Module class or a Python function that returns one"
        )
    return obj  # type: ignore[no-any-return]


@cache
def _timm(name: str) -> Architecture:
    try:
        import timm
    except ImportError:
        raise ArchitectureNotFoundError(
            f"{name!r} needs timm, which is not installed: pip install 'registry[timm]'"
        ) from None
    model = name.removeprefix("timm:")
    if not timm.is_model(model):
        close = difflib.get_close_matches(model, timm.list_models(), n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise ArchitectureNotFoundError(f"timm has no model {model!r}{hint}")

    def build_timm(**kwargs: Any) -> nn.Module:
        return timm.create_model(model, **kwargs)

    return Architecture(
        name=name,
        source=f"timm {timm.__version__}",
        builder=build_timm,
        fixed_kwargs=(("pretrained", False),),
    )


@cache
def _torchvision(name: str) -> Architecture:
    names = plugins.torchvision_names()
    if name not in names:
        known = list(names) + list(plugins.registered()) + list(plugin_entry_points())
        lowered = {n.lower(): n for n in known}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=4, cutoff=0.6)
        base = f"unknown architecture {name!r}"
        if close:
            hint = f"; did you mean {', '.join(lowered[c] for c in close)}?"
            raise ArchitectureNotFoundError(base + hint)
        raise ArchitectureNotFoundError(
            f"{base}; Registry().architectures() lists the known names",
            cli=f"{base}; run `registry archs` for the list",
        )
    import torchvision.models

    builder = torchvision.models.get_model_builder(name)
    params = inspect.signature(builder).parameters
    fixed: list[tuple[str, Any]] = [("weights", None)]
    if "weights_backbone" in params:
        fixed.append(("weights_backbone", None))
    return Architecture(name=name, source="torchvision", builder=builder, fixed_kwargs=tuple(fixed))
