"""Recognising an architecture from its weights: every known architecture's key/shape
signature, ranked against the weights' (:func:`identify`), and the on-disk cache of
torchvision's signatures (computed once per torchvision release).

The top of this package: builds on ``resolving`` (the known names) and ``signatures``
(their shapes, head-size inference); must never be imported by those.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .. import plugins
from .._files import replacing
from ..config import cache_dir
from ..errors import StorageError
from .resolving import available, resolve
from .signatures import head_size_fix, signature


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

    return cache_dir() / f"signatures-torchvision-{torchvision.__version__}.json"


@cache
def _torchvision_signatures() -> dict[str, dict[str, list[int]] | None]:
    path = signature_cache_path()
    try:
        cached = json.loads(path.read_text())
        if isinstance(cached, dict) and set(cached) == set(plugins.torchvision_names()):
            return cached
    except (OSError, ValueError):
        pass
    import warnings

    from tqdm import tqdm

    names = plugins.torchvision_names()
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
