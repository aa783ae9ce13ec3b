"""Architecture names -> ``nn.Module``: build, check weights against, and load into.

Every torchvision model in ``torchvision.models.list_models()`` is known by its
name, built with ``weights=None`` (and ``weights_backbone=None`` where the builder
has it) so nothing is ever downloaded. Modules are built on the meta device: no
memory, no random init, and the stored tensors are assigned in place.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import json
import os
import re
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import plugins
from .errors import ArchitectureError, ArchitectureMismatchError, ArchitectureNotFoundError
from .keyvalue import format_kwargs
from .plugins import plugin_entry_points

#: How many keys of each kind a mismatch message names.
SHOWN_KEYS = 5


@dataclass(frozen=True)
class Architecture:
    """A buildable architecture: its registry name, where it comes from, and its builder."""

    name: str
    source: str
    builder: Callable[..., nn.Module]
    fixed_kwargs: tuple[tuple[str, Any], ...] = ()

    def label(self, kwargs: Mapping[str, Any]) -> str:
        return f"{self.name}({format_kwargs(kwargs)})"


@lru_cache(maxsize=1)
def _torchvision_names() -> tuple[str, ...]:
    import torchvision.models

    return tuple(sorted(torchvision.models.list_models()))


def is_builtin(name: str) -> bool:
    """Whether ``name`` is a torchvision architecture (which nothing may shadow)."""
    return name in _torchvision_names()


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
        if n not in plugins.registered() and not is_builtin(n)
    ]
    return found + [(n, "torchvision") for n in _torchvision_names()]


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
    if point is not None and not is_builtin(name):  # a plugin never shadows torchvision
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
    path). Raises ArchitectureNotFoundError naming the module when that fails."""
    if module == "__main__" and name not in plugins.registered():
        try:
            return resolve(name)
        except ArchitectureNotFoundError:
            raise ArchitectureNotFoundError(
                f"architecture {name!r} was registered by the script that pushed the version "
                f"(__main__); register it in this process (@registry.architecture({name!r})) "
                "before loading"
            ) from None
    if module and name not in plugins.registered() and ":" not in name:
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


def _import(path: str) -> Callable[..., nn.Module]:
    """``package.module:Class.attr`` -> the object, or ArchitectureNotFoundError saying why."""
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname or any(not p.isidentifier() for p in qualname.split(".")):
        raise ArchitectureNotFoundError(
            f"invalid architecture import path {path!r}: expected package.module:ClassName"
        )
    obj: Any = import_module(module_name, f"architecture {path!r}")
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ArchitectureNotFoundError(
                f"module {module_name!r} has no {qualname!r} (architecture {path!r})"
            ) from None
    if not callable(obj):
        raise ArchitectureNotFoundError(f"{path!r} is not a class or a function")
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
    names = _torchvision_names()
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


_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)
_TENSOR_INIT_METHODS = ("normal_", "uniform_", "fill_", "zero_", "bernoulli_", "exponential_")


@contextmanager
def _skip_init_on_meta() -> Iterator[None]:
    """Random init of meta tensors is pure overhead (half of a resnet50 meta build).

    Init functions become no-ops for meta tensors only; any other tensor, say from a
    concurrent thread, is initialised as usual.
    """
    saved_init = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS}
    saved_methods = {name: getattr(torch.Tensor, name) for name in _TENSOR_INIT_METHODS}

    def skipping(original):  # type: ignore[no-untyped-def]
        def init(tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
            return original(tensor, *args, **kwargs)

        return init

    for name, fn in saved_init.items():
        setattr(torch.nn.init, name, skipping(fn))
    for name, fn in saved_methods.items():
        setattr(torch.Tensor, name, skipping(fn))
    try:
        yield
    finally:
        for name, fn in saved_init.items():
            setattr(torch.nn.init, name, fn)
        for name, fn in saved_methods.items():
            setattr(torch.Tensor, name, fn)


def build(
    arch: Architecture, kwargs: Mapping[str, Any], device: str | torch.device = "meta"
) -> nn.Module:
    """Construct ``arch`` with the user's arguments on ``device``."""
    skip = _skip_init_on_meta() if torch.device(device).type == "meta" else nullcontext()
    try:
        with skip, torch.device(device):
            module = arch.builder(**dict(arch.fixed_kwargs), **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArchitectureError(f"cannot build {arch.label(kwargs)}: {detail}") from None
    if not isinstance(module, nn.Module):
        raise ArchitectureError(f"{arch.name} built a {type(module).__name__}, not an nn.Module")
    return module


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


@dataclass(frozen=True)
class Signature:
    """What a push checks weights against: the state-dict shapes and parameter count."""

    shapes: dict[str, list[int]]
    param_count: int


def signature(arch: Architecture, kwargs: Mapping[str, Any]) -> Signature:
    """The key/shape signature of ``arch(**kwargs)``, computed once per process."""
    key = _meta_key(arch, kwargs)
    found = _SIGNATURES.get(key)
    if found is None:
        module = _template(arch, kwargs)  # only read: no copy needed
        found = Signature(
            shapes={k: _shape(v) for k, v in module.state_dict(keep_vars=True).items()},
            param_count=parameter_count(module),
        )
        _SIGNATURES[key] = found
    return found


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
            _meta_key(arch, kwargs),
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
    key = _meta_key(arch, kwargs)
    found = _BLIND.get(key)
    if found is None:
        found = True
        for module in _template(arch, kwargs).modules():
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
    metadata = getattr(_template(arch, kwargs).state_dict(), "_metadata", None)
    return OrderedDict((k, dict(v)) for k, v in (metadata or {}).items())


def _listing(count: int, noun: str, items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN_KEYS])
    more = f", and {count - SHOWN_KEYS} more" if count > SHOWN_KEYS else ""
    return f"{count} {noun}{'s' if count != 1 else ''} ({shown}{more})"


def num_classes_hint(
    arch: Architecture, kwargs: Mapping[str, Any], shapes: Mapping[str, list[int]]
) -> str:
    """A hint naming the ``num_classes`` that makes the weights fit, where one does.

    Only when the architecture takes ``num_classes`` and the tensors that differ are
    its head (the ones whose shapes follow ``num_classes``).
    """
    fitting = _with_num_classes(arch, kwargs, shapes)
    return f" (the head fits num_classes={fitting['num_classes']})" if fitting else ""


def parameter_count(module: nn.Module) -> int:
    """Number of parameter elements, counting tied parameters once."""
    return sum(p.numel() for p in module.parameters())


def _tied_groups(module: nn.Module) -> list[list[str]]:
    """State-dict keys that name the same tensor (tied weights), in groups."""
    groups: dict[int, list[str]] = {}
    for name, tensor in list(module.named_parameters(remove_duplicate=False)) + list(
        module.named_buffers(remove_duplicate=False)
    ):
        groups.setdefault(id(tensor), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _set_by_path(module: nn.Module, path: str, value: torch.Tensor) -> None:
    owner_path, _, attr = path.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    if isinstance(value, nn.Parameter):
        owner.register_parameter(attr, value)
    else:
        owner._buffers[attr] = value


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


#: Architectures (with arguments) whose modules keep tensors a state dict cannot fill,
#: and those known not to.
_NEEDS_CPU: set[str] = set()
_META_OK: set[str] = set()
#: Meta-device modules to copy instead of constructing again (keyed by _meta_key).
_SKELETONS: dict[str, nn.Module] = {}
_SIGNATURES: dict[str, Signature] = {}


def _meta_key(arch: Architecture, kwargs: Mapping[str, Any]) -> str:
    """The cache key of an architecture built with ``kwargs``."""
    return f"{arch.name}:{id(arch.builder)}:{json.dumps(dict(kwargs), sort_keys=True, default=str)}"


def skeleton(arch: Architecture, kwargs: Mapping[str, Any]) -> nn.Module:
    """The module on the meta device, with the right keys and shapes, as cheaply as can be.

    The first call per architecture and arguments builds it on the meta device (no
    memory, no init), or, for builders that need real data while constructing (e.g.
    RegNet computes widths with tensors), on the CPU and then moves it to meta. That
    module is kept and every call returns a deep copy: copying is cheaper than
    constructing (7 ms against 170 ms for vit_b_16; seconds for a large RegNet), and
    the copy is the caller's to fill.
    """
    return _copy_structure(_template(arch, kwargs))


def _template(arch: Architecture, kwargs: Mapping[str, Any]) -> nn.Module:
    """The cached meta-device module that :func:`skeleton` copies; never to be modified."""
    key = _meta_key(arch, kwargs)
    cached = _SKELETONS.get(key)
    if cached is None:
        try:
            cached = build(arch, kwargs, "meta")
        except (NotImplementedError, RuntimeError) as exc:
            if "meta" not in str(exc):
                raise ArchitectureError(f"cannot build {arch.label(kwargs)}: {exc}") from None
            cached = _build_on_cpu(arch, kwargs).to("meta")
        _SKELETONS[key] = cached
    return cached


_PLAIN_CONTAINERS = (dict, OrderedDict, list, set)


class _NeedsDeepCopy(Exception):
    pass


def _copy_structure(template: nn.Module) -> nn.Module:
    """A copy of a meta-device module tree whose tensors the caller will replace.

    Every module object and its containers (parameter, buffer, hook and submodule
    dicts, attribute lists and sets) are new; the meta tensors and immutable
    attributes are shared with the template, which is safe because meta tensors hold
    no data and loading assigns new tensors in the copy's dicts. Four times cheaper
    than ``copy.deepcopy``; a module that keeps modules somewhere unusual (inside a
    plain list, say) gets ``copy.deepcopy`` instead.
    """
    try:
        return _clone(template, {})
    except _NeedsDeepCopy:
        return copy.deepcopy(template)


def _clone(module: nn.Module, memo: dict[int, nn.Module]) -> nn.Module:
    found = memo.get(id(module))
    if found is not None:
        return found
    if any("__slots__" in vars(cls) for cls in type(module).__mro__[:-1]):
        raise _NeedsDeepCopy  # slot values live outside __dict__
    new = object.__new__(type(module))
    memo[id(module)] = new
    state: dict[str, Any] = {}
    for key, value in module.__dict__.items():
        if key == "_modules":
            state[key] = type(value)(
                (name, None if child is None else _clone(child, memo))
                for name, child in value.items()
            )
        elif isinstance(value, nn.Module):
            state[key] = _clone(value, memo)
        elif isinstance(value, (dict, list, set)):
            items = value.values() if isinstance(value, dict) else value
            if value and any(isinstance(v, (nn.Module, dict, list, set)) for v in items):
                raise _NeedsDeepCopy
            # .copy() keeps these exact types and is ~10x faster than copy.copy for the
            # hook OrderedDicts every module carries; other subclasses go the long way.
            state[key] = value.copy() if type(value) in _PLAIN_CONTAINERS else copy.copy(value)
        elif isinstance(value, tuple) and any(
            isinstance(v, (nn.Module, dict, list, set)) for v in value
        ):
            raise _NeedsDeepCopy
        else:
            state[key] = value
    new.__dict__.update(state)
    return new


def _build_on_cpu(arch: Architecture, kwargs: Mapping[str, Any]) -> nn.Module:
    try:
        return build(arch, kwargs, "cpu")
    except (NotImplementedError, RuntimeError) as exc:
        raise ArchitectureError(f"cannot build {arch.label(kwargs)}: {exc}") from None


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
    for names in tied:
        first = (
            module.get_parameter(names[0])
            if _is_param(module, names[0])
            else module.get_buffer(names[0])
        )
        for other in names[1:]:
            _set_by_path(module, other, first)
    if torch.device(device) != torch.device("cpu"):
        module.to(device)
    module.eval()
    return module


def _fresh(arch: Architecture, kwargs: Mapping[str, Any], strict: bool) -> nn.Module:
    """A module to load into: a meta skeleton, or a CPU build where meta cannot do."""
    key = _meta_key(arch, kwargs)
    if key in _NEEDS_CPU or not strict:
        # Without strict, keys the weights lack keep a real initialisation.
        return _build_on_cpu(arch, kwargs)
    module = skeleton(arch, kwargs)
    if key not in _META_OK:
        if _leftover_meta(module):
            _NEEDS_CPU.add(key)
            return _build_on_cpu(arch, kwargs)
        _META_OK.add(key)
    return module


def _is_param(module: nn.Module, path: str) -> bool:
    try:
        module.get_parameter(path)
    except AttributeError:
        return False
    return True


# -- recording how to rebuild a module -------------------------------------------------


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
    name = plugins.registered_name_of(cls)
    if name is None and cls.__module__.split(".")[0] in ("torch", "torchvision", "timm"):
        raise ArchitectureError(
            f"cannot record how to rebuild a {cls.__qualname__} from its class alone (a "
            f"{cls.__module__.split('.')[0]} building block, built by some factory): pass "
            "arch= (e.g. arch='resnet18', or a package.module:function that builds it)"
        )
    if name is None:
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
            where = "in __main__" if cls.__module__ == "__main__" else "inside a function"
            raise ArchitectureError(
                f"cannot record how to rebuild {cls.__qualname__}: it is defined {where}, so "
                "no other process can import it; move it to an importable module, or "
                "register it with @registry.architecture('name')"
            )
        name = f"{cls.__module__}:{cls.__qualname__}"
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


def head_size_fix(
    arch: Architecture, kwargs: Mapping[str, Any], shapes: Mapping[str, list[int]]
) -> dict[str, Any] | None:
    """``kwargs`` plus the ``num_classes`` the weights' head implies, if that makes them fit.

    Only when no ``num_classes`` was given, the keys all match and the only differences
    are the output size of at most two tensors (a classifier's weight and bias).
    """
    if "num_classes" in kwargs:
        return None
    return _with_num_classes(arch, kwargs, shapes, classifier_only=True)


def _with_num_classes(
    arch: Architecture,
    kwargs: Mapping[str, Any],
    shapes: Mapping[str, list[int]],
    *,
    classifier_only: bool = False,
) -> dict[str, Any] | None:
    """``kwargs`` with the ``num_classes`` under which ``arch`` has exactly ``shapes``.

    The candidate is the one first dimension that all differing tensors share; with
    ``classifier_only``, at most two tensors may differ, and only in that dimension.
    """
    expected = signature(arch, kwargs).shapes
    if set(expected) != set(shapes):
        return None
    differing = [k for k in expected if list(shapes[k]) != expected[k]]
    if not differing:
        return None
    if classifier_only and (
        len(differing) > 2
        or not all(
            shapes[k] and expected[k] and shapes[k][1:] == expected[k][1:] for k in differing
        )
    ):
        return None
    outs = {shapes[k][0] for k in differing if shapes[k]}
    if len(outs) != 1:
        return None
    candidate = {**kwargs, "num_classes": outs.pop()}
    try:
        fits = signature(arch, candidate).shapes == {k: list(v) for k, v in shapes.items()}
    except ArchitectureError:
        return None
    return candidate if fits else None


# -- recognising an architecture from its weights ------------------------------------


@dataclass(frozen=True)
class Match:
    """An architecture the weights could be: exact (score 1.0) or partial (0..1)."""

    name: str
    score: float
    arch_kwargs: dict[str, Any]
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "score": round(self.score, 4),
            "arch_kwargs": self.arch_kwargs,
            "source": self.source,
        }


def identify(
    shapes: Mapping[str, list[int]],
    limit: int = 5,
    signatures: Iterable[tuple[str, str, dict[str, list[int]] | None]] | None = None,
) -> list[Match]:
    """Known architectures ranked by how well their key/shape signature fits ``shapes``.

    Score 1.0: every key and shape matches (with ``num_classes`` inferred when only
    the head's size differs). Otherwise the Jaccard similarity of the (key, shape)
    sets. ``signatures`` are the (name, source, signature) to rank, by default every
    known architecture's: torchvision's computed on the meta device once and cached on
    disk (``signature_cache_path()``), registered and plugin ones per process.
    """
    given = {k: list(v) for k, v in shapes.items()}
    pairs = {(k, tuple(v)) for k, v in given.items()}
    matches = []
    for name, source, sig in _all_signatures() if signatures is None else signatures:
        if sig is None:
            continue
        if sig == given:
            matches.append(Match(name, 1.0, {}, source))
            continue
        score = len(pairs & _pairs(name, sig)) / max(1, len(pairs | _pairs(name, sig)))
        if set(sig) == set(given) and score > 0.5:
            fixed = head_size_fix(resolve(name), {}, given)
            if fixed is not None:
                matches.append(Match(name, 1.0, fixed, source))
                continue
        if score > 0:
            matches.append(Match(name, score, {}, source))
    exact = {m.name for m in matches if m.score == 1.0}
    # torchvision's quantizable twins (quantized_resnet18) share the float model's keys.
    matches = [m for m in matches if not (m.name.startswith("quantized_") and m.name[10:] in exact)]
    matches.sort(key=lambda m: (-m.score, m.name))
    return matches[:limit]


def exact_fits(shapes: Mapping[str, list[int]], near: str) -> list[Match]:
    """Known architectures other than ``near`` that ``shapes`` fit exactly (head size
    inferred). With the signature cache in place that is every known architecture;
    before it exists, only ``near``'s family (torchvision names with its leading letters,
    ``resnet`` for ``resnet34``) and names known in code, so a refusal never waits for
    the first full identification."""
    family = None
    if not signature_cache_path().exists():
        stem = re.match(r"[A-Za-z]*", near.rpartition(":")[2]).group(0)  # type: ignore[union-attr]
        family = [
            (name, source, _signature_or_none(name))
            for name, source in available()
            if source != "torchvision" or (stem and name.startswith(stem))
        ]
    return [m for m in identify(shapes, 3, family) if m.score == 1.0 and m.name != near]


#: (name, id of the signature dict) -> its (key, shape) pairs; signature dicts are
#: themselves cached for the life of the process, so an id is never reused for another.
_PAIRS: dict[tuple[str, int], set[tuple[str, tuple[int, ...]]]] = {}


def _pairs(name: str, sig: Mapping[str, list[int]]) -> set[tuple[str, tuple[int, ...]]]:
    found = _PAIRS.get((name, id(sig)))
    if found is None:
        found = _PAIRS[(name, id(sig))] = {(k, tuple(v)) for k, v in sig.items()}
    return found


def signature_cache_path() -> Path:
    import torchvision

    from .config import cache_dir

    return cache_dir() / f"signatures-torchvision-{torchvision.__version__}.json"


@cache
def _torchvision_signatures() -> dict[str, dict[str, list[int]] | None]:
    path = signature_cache_path()
    try:
        cached = json.loads(path.read_text())
        if isinstance(cached, dict) and set(cached) == set(_torchvision_names()):
            return cached
    except (OSError, ValueError):
        pass
    import warnings

    from tqdm import tqdm

    names = _torchvision_names()
    sys.stderr.write(
        f"registry: computing the key/shape signatures of {len(names)} torchvision "
        "architectures to recognise weights; this happens once per torchvision release "
        f"(cached in {path})\n"
    )
    found: dict[str, dict[str, list[int]] | None] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of some builders
        # A bar only where stderr is a terminal (tqdm's disable=None).
        for name in tqdm(names, desc="signatures", unit="arch", disable=None, leave=False):
            found[name] = _signature_or_none(name)
    _write_atomically(path, json.dumps(found, separators=(",", ":")))
    return found


def _write_atomically(path: Path, text: str) -> None:
    from ._files import replacing
    from .errors import StorageError

    try:
        with replacing(path) as tmp:
            tmp.write_text(text)
    except StorageError:
        pass  # a cache: without it, identification is only slower


def _signature_or_none(name: str) -> dict[str, list[int]] | None:
    """The default signature of ``name``, or None when it cannot be built with defaults."""
    try:
        return signature(resolve(name), {}).shapes
    except Exception:
        return None


def _all_signatures() -> Iterator[tuple[str, str, dict[str, list[int]] | None]]:
    for name, source in available():
        if source != "torchvision":
            yield name, source, _signature_or_none(name)
    for name, sig in _torchvision_signatures().items():
        yield name, "torchvision", sig
