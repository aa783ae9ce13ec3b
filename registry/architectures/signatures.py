"""Key/shape signatures of an architecture built with given arguments, and what they tell:
its parameter count, and the ``num_classes`` under which a head's shapes fit.

Owns :class:`Signature` and its per-process cache. Computed from the cached meta-device
template (``building``); never loads weights, and imports only ``resolving`` and
``building`` of this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ArchitectureError
from .building import meta_key, parameter_count, template
from .resolving import Architecture


@dataclass(frozen=True)
class Signature:
    """What a push checks weights against: the state-dict shapes and parameter count."""

    shapes: dict[str, list[int]]
    param_count: int


_SIGNATURES: dict[str, Signature] = {}


def signature(arch: Architecture, kwargs: Mapping[str, Any]) -> Signature:
    """The key/shape signature of ``arch(**kwargs)``, computed once per process."""
    key = meta_key(arch, kwargs)
    found = _SIGNATURES.get(key)
    if found is None:
        module = template(arch, kwargs)  # only read: no copy needed
        found = Signature(
            shapes={k: list(v.shape) for k, v in module.state_dict(keep_vars=True).items()},
            param_count=parameter_count(module),
        )
        _SIGNATURES[key] = found
    return found


def num_classes_hint(
    arch: Architecture, kwargs: Mapping[str, Any], shapes: Mapping[str, list[int]]
) -> str:
    """A hint naming the ``num_classes`` that makes the weights fit, where one does.

    Only when the architecture takes ``num_classes`` and the tensors that differ are
    its head (the ones whose shapes follow ``num_classes``).
    """
    fitting = _with_num_classes(arch, kwargs, shapes)
    return f" (the head fits num_classes={fitting['num_classes']})" if fitting else ""


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
