"""Make a user's weights fit an architecture by torch's own rules, or say exactly why not.

A push accepts exactly what ``arch(**kwargs).load_state_dict(weights, strict=True)``
accepts, checked on the meta device (see ``architectures.load_by_torch``), after
the two adjustments a user would make by hand, each said in a note:

- **Wrapper prefixes.** Keys that fit as they are stay as they are. Otherwise the
  one common prefix (any number of ``module.`` and ``_orig_mod.``, from
  DataParallel/DDP and ``torch.compile``, and at most one attribute name such as
  ``model.`` from a Lightning module holding the net) whose removal makes them fit
  is stripped. ``strip_prefix=`` says it outright.
- **Head size.** When only a classifier head's size differs, ``num_classes`` is
  inferred and recorded.

Weights that carry no module versions (``_metadata``: a .safetensors file, a plain
dict) are checked as torch checks them, without any; where the architecture refuses
that, its current module versions are assumed and recorded, and a note says which.

The push pipeline's check-and-match step, one floor above ``registry.architectures``
(whose names, builds and torch verdicts it uses) and ``metadata``; it must never be
imported by them, nor import the catalogue, storage or ``api``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import architectures, metadata
from .architectures import Architecture, Misfit
from .errors import (
    ArchitectureError,
    ArchitectureMismatchError,
    ArchitectureNotFoundError,
    InvalidArgumentError,
)
from .keyvalue import format_kwargs, validate_arch_kwargs

#: Segments a wrapper adds in front of every key: DataParallel/DDP and torch.compile.
WRAPPER_SEGMENTS = ("module", "_orig_mod")


@dataclass
class Fitted:
    """The architecture that takes the weights, and the weights as it takes them."""

    arch: Architecture
    kwargs: dict[str, Any]
    state: dict[str, torch.Tensor]
    metadata: list[Any] | None  # encoded _metadata, re-rooted past a stripped prefix
    assumed: list[Any] | None  # encoded module versions load assumes, if the weights had none
    param_count: int
    notes: list[str] = field(default_factory=list)


def prefix_candidates(keys: list[str]) -> list[str]:
    """Prefixes every key shares that a wrapper could have added, shortest first.

    Any number of ``module.``/``_orig_mod.`` segments and at most one other segment
    (the attribute a wrapper holds the net in), always leaving a non-empty key.
    """
    if not keys:
        return []
    parents = [k.split(".")[:-1] for k in keys]
    common: list[str] = []
    for segments in zip(*parents):
        if any(s != segments[0] for s in segments):
            break
        common.append(segments[0])
    found = []
    for end in range(1, len(common) + 1):
        chain = common[:end]
        if sum(s not in WRAPPER_SEGMENTS for s in chain) > 1:
            break
        found.append(".".join(chain) + ".")
    return found


def strip_keys(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items()} if prefix else dict(state)


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in state.items()}


def _prefixes(state: Mapping[str, torch.Tensor], strip_prefix: str | None) -> list[str]:
    if strip_prefix is None:
        return [""] + prefix_candidates(list(state))
    if not isinstance(strip_prefix, str):
        raise InvalidArgumentError("the prefix to strip must be a string, e.g. 'module.'")
    if strip_prefix and not strip_prefix.endswith("."):
        strip_prefix += "."
    stray = [k for k in state if not k.startswith(strip_prefix) or k == strip_prefix]
    if stray:
        raise InvalidArgumentError(
            f"cannot strip the prefix {strip_prefix!r}: {len(stray)} key"
            f"{'s do' if len(stray) != 1 else ' does'} not start with it (e.g. {stray[0]!r})"
        )
    return [strip_prefix]


def identify(
    state: Mapping[str, torch.Tensor], limit: int = 5, strip_prefix: str | None = None
) -> list[architectures.Match]:
    """Architectures ranked by fit, trying the wrapper prefixes the keys could carry."""
    first: list[architectures.Match] | None = None
    for prefix in _prefixes(state, strip_prefix):
        matches = architectures.identify(_shapes(strip_keys(state, prefix)), limit)
        if first is None:
            first = matches
        if any(m.score == 1.0 for m in matches):
            return matches
    return first or []


def fit(
    source: Any,
    state: dict[str, torch.Tensor],
    encoded_metadata: list[Any] | None,
    *,
    arch: str | None,
    arch_kwargs: Mapping[str, Any] | None,
    strip_prefix: str | None = None,
    notes: list[str],
) -> Fitted:
    """The architecture, arguments and key prefix under which torch takes ``state``.

    ``notes`` holds what was done to the input so far (which checkpoint key held the
    weights); every refusal repeats it, so the key lists it shows make sense.
    Raises ArchitectureNotFoundError when no architecture can be chosen, and
    ArchitectureMismatchError (torch's facts, one line) when the weights do not fit.
    """
    prefixes = _prefixes(state, strip_prefix)
    kwargs = validate_arch_kwargs(arch_kwargs)
    try:
        chosen = arch is None
        if arch is None:
            arch, kwargs, prefixes = _choose(source, arch_kwargs, state, prefixes, notes)
        architecture = architectures.resolve(arch)
        try:
            return _fit_prefixes(
                architecture, kwargs, state, encoded_metadata, prefixes, notes, suggest=not chosen
            )
        except ArchitectureMismatchError as exc:
            if chosen and isinstance(source, nn.Module) and not kwargs:
                exc.add(
                    f"; the module was recorded as {arch}() with its constructor's defaults: "
                    "pass arch_kwargs={...} with the arguments it was built with, or give it "
                    "a `config` attribute holding them"
                )
            raise
    except (ArchitectureError, ArchitectureNotFoundError) as exc:
        if notes and "(after " not in str(exc):
            exc.add(f" (after {'; '.join(notes)})")
        raise


def _fit_prefixes(
    architecture: Architecture,
    kwargs: dict[str, Any],
    state: dict[str, torch.Tensor],
    encoded_metadata: list[Any] | None,
    prefixes: list[str],
    notes: list[str],
    suggest: bool = False,
) -> Fitted:
    best: tuple[int, Misfit, dict[str, Any], dict[str, list[int]], str] | None = None
    for prefix in prefixes:
        candidate = strip_keys(state, prefix)
        encoded = metadata.strip(encoded_metadata, prefix)
        shapes = _shapes(candidate)
        tried = [kwargs]
        fixed = architectures.head_size_fix(architecture, kwargs, shapes)
        if fixed is not None:
            tried.append(fixed)
        for attempt in tried:
            outcome = _fit_metadata(architecture, attempt, candidate, encoded)
            if isinstance(outcome, Misfit):
                expected = architectures.signature(architecture, attempt).shapes
                overlap = len(set(expected) & set(candidate))
                if best is None or overlap > best[0]:
                    best = (overlap, outcome, attempt, shapes, prefix)
                continue
            assumed, metadata_notes = outcome
            if prefix:
                notes.append(f"stripped the {prefix!r} prefix from {len(candidate)} keys")
            if attempt is not kwargs:
                notes.append(
                    f"inferred num_classes={attempt['num_classes']} from the weights' head size"
                )
            notes.extend(metadata_notes)
            return Fitted(
                arch=architecture,
                kwargs=attempt,
                state=candidate,
                metadata=encoded,
                assumed=assumed,
                param_count=architectures.signature(architecture, attempt).param_count,
                notes=notes,
            )
    assert best is not None
    _overlap, refusal, attempt, shapes, prefix = best
    raise _refusal(architecture, refusal, attempt, shapes, prefix, prefixes, suggest)


def _refusal(
    architecture: Architecture,
    refusal: Misfit,
    kwargs: dict[str, Any],
    shapes: dict[str, list[int]],
    prefix: str,
    prefixes: list[str],
    suggest: bool,
) -> ArchitectureMismatchError:
    """torch's refusal of the closest attempt, with what else was tried and what fits."""
    label = architecture.label(kwargs)
    if prefix:
        label += f" (keys without their {prefix!r} prefix)"
    hint = architectures.num_classes_hint(architecture, kwargs, shapes)
    others = [p for p in prefixes if p and p != prefix]
    if others:
        hint += f"; removing {', '.join(map(repr, others))} did not make them fit either"
    if prefix and "" in prefixes:
        hint += "; nor do the keys as they are"
    if suggest:
        fits = architectures.exact_fits(shapes, architecture.name)
        if fits:
            hint += (
                "; they fit "
                + " and ".join(f"{m.name}({format_kwargs(m.arch_kwargs)})" for m in fits)
                + " exactly"
            )
    return refusal.error(label, hint)


def _fit_metadata(
    architecture: Architecture,
    kwargs: dict[str, Any],
    state: dict[str, torch.Tensor],
    encoded: list[Any] | None,
) -> Misfit | tuple[list[Any] | None, list[str]]:
    """torch's verdict on ``state``; if it takes them: (assumed metadata, notes)."""
    refused = architectures.misfit(architecture, kwargs, state, metadata.decode(encoded))
    if encoded is not None:
        return refused if refused is not None else (None, [])
    if refused is None:
        return None, [
            "the weights carry no module versions (no _metadata, as in any .safetensors "
            "file): load passes none, as torch's load_state_dict does"
        ]
    if not refused.errors:
        return refused
    current = architectures.module_versions(architecture, kwargs)
    if architectures.misfit(architecture, kwargs, state, current) is not None:
        return refused
    return metadata.encode(current), [
        "the weights carry no module versions (no _metadata, as in any .safetensors file) "
        f"and {architecture.label(kwargs)} refuses weights without them "
        f"({refused.errors[0]}): load gives its modules their versions in torch "
        f"{torch.__version__}, recorded with the version"
    ]


def _choose(
    source: Any,
    arch_kwargs: Mapping[str, Any] | None,
    state: dict[str, torch.Tensor],
    prefixes: list[str],
    notes: list[str],
) -> tuple[str, dict[str, Any], list[str]]:
    """The architecture to record when the caller named none, and the prefixes to try."""
    refusal: ArchitectureError | None = None
    if isinstance(source, nn.Module):
        try:
            arch, found, origin = architectures.describe_module(source, arch_kwargs)
        except ArchitectureError as exc:
            refusal = exc
        else:
            kwargs = validate_arch_kwargs(found)
            if origin not in ("arch_kwargs", "defaults"):
                notes.append(f"recorded {arch} with the arguments in its `{origin}`")
            return arch, kwargs, prefixes
    closest: list[architectures.Match] = []
    for prefix in prefixes:
        matches = architectures.identify(_shapes(strip_keys(state, prefix)))
        closest = closest or matches
        exact = [m for m in matches if m.score == 1.0]
        if len(exact) == 1:
            match = exact[0]
            kwargs = validate_arch_kwargs({**match.arch_kwargs, **(arch_kwargs or {})})
            notes.append(f"identified the weights as {match.name} ({match.source})")
            return match.name, kwargs, [prefix]
        if exact:
            if refusal is not None:
                raise refusal
            base = f"the weights fit several architectures ({', '.join(m.name for m in exact)})"
            raise ArchitectureNotFoundError(
                f"{base}; choose one with arch=", cli=f"{base}; choose one with --arch"
            )
    if refusal is not None:
        raise refusal
    shown = ", ".join(f"{m.name} ({m.score:.0%})" for m in closest[:3])
    tried = [p for p in prefixes if p]
    base = (
        "no known architecture fits these weights"
        + (f" (also tried without the prefix {', '.join(map(repr, tried))})" if tried else "")
        + (f"; closest: {shown}" if shown else "")
    )
    raise ArchitectureNotFoundError(
        f"{base}; name one with arch= (a name Registry().architectures() lists, or "
        "package.module:Class)",
        cli=f"{base}; name one with --arch (see `registry archs`, or use package.module:Class)",
    )
