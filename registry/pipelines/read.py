"""The read pipeline: locate a version's tensors, map them, verify them, rebuild.

``open_version`` is the first half of every read (``load``, ``load_state_dict``,
``diff``, ``export``, ``pull``): one read of the catalogue gives the version, where
each tensor's bytes are and what its source carried; each pack is opened once through
the ``Store`` interface; every distinct blob is checked (XXH3 checksum, or the full
sha256) before any byte is used. ``state_dict`` then gives the state dict with
exactly the storage sharing recorded at push, and ``load`` rebuilds the architecture
around it (on the meta device, weights assigned without a copy).

Mapped tensors are copy-on-write views of the packs: writing to a loaded tensor
never changes what is stored. Must never import ``api`` or ``cli``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import metadata
from .._progress import begin
from ..catalog.gateway import Gateway, Location
from ..errors import (
    ArchitectureMismatchError,
    ArchitectureNotFoundError,
    IntegrityError,
    InvalidArgumentError,
    StorageError,
)
from ..keyvalue import format_kwargs
from ..records import Diff, ModelVersion, TensorChange, TensorInfo
from ..refs import parse_ref
from ..storage import PackMissing, Store, checksum_many, sha256_many

if TYPE_CHECKING:
    import torch
    from torch import nn

VERIFY_MODES = (True, False, "sha256")
#: How often a read looks the version up again when a pack it named went away (gc).
_OPEN_ATTEMPTS = 5


@dataclass
class Opened:
    """A version opened for reading: its record, tensor locations, checked views of its
    blobs (by digest), and what its source carried besides tensors."""

    record: ModelVersion
    located: list[Location]
    views: dict[str, memoryview]
    state_metadata: Any
    file_metadata: Any
    assumed_metadata: Any

    @property
    def module_metadata(self) -> Any:
        """The ``_metadata`` a module loading these weights reads: as pushed, else the
        module versions recorded at push for weights that carried none, else none."""
        return metadata.decode(
            self.state_metadata if self.state_metadata is not None else self.assumed_metadata
        )

    def tensor_infos(self) -> tuple[TensorInfo, ...]:
        """The tensor table the locations already carry (no second query)."""
        return tuple(t.info() for t in self.located)


def open_version(
    gateway: Gateway,
    store: Store,
    ref: str,
    verify: bool | str,
    progress: Callable[[int], None] | None = None,
    only: set[str] | None = None,
) -> Opened:
    """The version ``ref`` names, where its tensors are, and a checked view of each blob
    (with ``only``, of the blobs with those digests: the others are not read).

    Only the byte ranges of its tensors are read: from a remote store they are fetched
    (``progress`` gets byte counts) into the local cache first. Bytes that come from a
    remote store or its cache are always checked (``verify=False`` applies to local
    packs only); a tensor that fails is fetched once more before it counts as damaged.

    Raises InvalidArgumentError for an unknown ``verify``, the NotFound errors of a
    reference, StorageError for a missing pack, IntegrityError for bytes that fail
    their check (naming the tensors).
    """
    if verify not in VERIFY_MODES:
        raise InvalidArgumentError(
            f"verify={verify!r}: use True (checksums), 'sha256' (full digests) or False"
        )
    parsed = parse_ref(ref)
    for attempt in range(_OPEN_ATTEMPTS):
        with gateway.read() as catalog:
            row = catalog.resolve(parsed)
            record = catalog.records([row])[0]
            located = catalog.tensor_locations(row.id)
            state_metadata, file_metadata, assumed = catalog.version_metadata(row.id)
        if len(located) != record.tensor_count:
            raise IntegrityError(
                f"{record.ref} lists {record.tensor_count} tensors but the catalogue "
                f"locates {len(located)}; the catalogue is damaged"
            )
        reading = located if only is None else [b for b in located if b.digest in only]
        wanted: dict[str, dict[int, int]] = {}
        for blob in reading:
            wanted.setdefault(blob.pack_id, {})[blob.offset] = blob.nbytes
        try:
            packs = store.open_ranges(
                {pack: list(ranges.items()) for pack, ranges in wanted.items()}, progress
            )
            break
        except PackMissing:
            # `registry gc` may have just moved these tensors to a new pack; look again.
            if attempt == _OPEN_ATTEMPTS - 1:
                raise
    views: dict[str, memoryview] = {}
    for blob in reading:
        if blob.digest not in views:
            views[blob.digest] = packs[blob.pack_id].view(blob.offset, blob.nbytes)
    if verify or store.remote:
        mode = verify or True
        bad = _failing(reading, views, mode)
        if bad and _refetched(reading, packs, bad):
            for blob in reading:
                if blob.digest in bad:
                    views[blob.digest] = packs[blob.pack_id].view(blob.offset, blob.nbytes)
            bad = _failing(reading, {d: views[d] for d in bad}, mode)
        if bad:
            _damaged(record, located, bad)
    return Opened(record, located, views, state_metadata, file_metadata, assumed)


def _refetched(located: list[Location], packs: Mapping[str, Any], bad: set[str]) -> bool:
    """Ask each pack to read the failed ranges again; True if any could."""
    again: dict[str, list[tuple[int, int]]] = {}
    for blob in located:
        if blob.digest in bad:
            again.setdefault(blob.pack_id, []).append((blob.offset, blob.nbytes))
    return any([packs[pack].refetch(sorted(set(ranges))) for pack, ranges in again.items()])


def _failing(
    located: list[Location], views: Mapping[str, memoryview], mode: bool | str
) -> set[str]:
    """Digests among ``views`` whose bytes fail the check: the checksum where known
    (``mode=True``), else (or with ``mode="sha256"``) the sha256."""
    checksums = {b.digest: b.checksum for b in located}
    if mode == "sha256":
        fast, full = [], list(views)
    else:
        fast = [d for d in views if checksums.get(d)]
        full = [d for d in views if not checksums.get(d)]
    bad = {d for d, a in zip(fast, checksum_many([views[d] for d in fast])) if a != checksums[d]}
    bad |= {d for d, a in zip(full, sha256_many([views[d] for d in full])) if a != d}
    return bad


def _damaged(record: ModelVersion, located: list[Location], bad: set[str]) -> None:
    """Raise the IntegrityError naming the tensors whose stored bytes are damaged."""
    names = [t.name for t in located if t.digest in bad]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    base = (
        f"{record.ref}: stored bytes of {len(names)} tensor"
        f"{'s' if len(names) != 1 else ''} do not match their digest ({shown}); "
        "the tensor store is corrupt: pushing the original weights again heals it"
    )
    raise IntegrityError(
        f"{base}, and verify() finds every damaged tensor",
        cli=f"{base}, and `registry verify` finds every damaged tensor",
    )


def state_dict(opened: Opened) -> dict[str, torch.Tensor]:
    """The state dict over the opened views, with exactly the storage sharing recorded
    at push (see ``registry.sharing``), and its ``_metadata`` if it had one."""
    from collections import OrderedDict

    from ..sharing import materialize

    tensors = materialize(opened.located, opened.views)
    state: OrderedDict[str, torch.Tensor] = OrderedDict(
        (t.name, tensor) for t, tensor in zip(opened.located, tensors)
    )
    decoded = metadata.decode(opened.state_metadata)
    if decoded is not None:
        state._metadata = decoded  # type: ignore[attr-defined]
    return state


def load(
    gateway: Gateway,
    store: Store,
    ref: str,
    *,
    device: str | torch.device,
    dtype: torch.dtype | None,
    strict: bool,
    verify: bool | str,
) -> nn.Module:
    """The version's architecture rebuilt with its stored arguments, weights in, eval mode."""
    from .. import architectures

    opened = open_version(gateway, store, ref, verify)
    record = opened.record
    try:
        architecture = architectures.resolve_stored(record.arch, record.arch_module)
    except ArchitectureNotFoundError as exc:
        raise ArchitectureNotFoundError(
            f"{exc}; {record.ref} was stored as {record.arch}({format_kwargs(record.arch_kwargs)})"
        ) from None
    return architectures.instantiate(
        architecture,
        record.arch_kwargs,
        cast(state_dict(opened), dtype),
        device,
        strict=strict,
        metadata=opened.module_metadata,
    )


def load_into(
    gateway: Gateway, store: Store, module: nn.Module, ref: str, *, strict: bool, verify: bool | str
) -> nn.Module:
    """Copy the weights of ``ref`` into a module the caller built; returns that module."""
    import warnings

    from ..architectures import with_metadata

    opened = open_version(gateway, store, ref, verify)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module.load_state_dict(
                with_metadata(state_dict(opened), opened.module_metadata), strict=strict
            )
    except Exception as exc:  # torch's RuntimeError, or a module's own check
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = "; ".join(lines[1:] or lines[:1]) or type(exc).__name__
        raise ArchitectureMismatchError(
            f"{ref} does not fit {type(module).__name__}: {detail}"
        ) from None
    return module


def check_dtype(dtype: Any) -> None:
    """``dtype`` for ``load``: None or a floating-point ``torch.dtype``."""
    import torch

    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InvalidArgumentError(
            f"dtype={dtype!r}: give a floating-point torch.dtype (torch.bfloat16, "
            "torch.float16, ...) or None; integer buffers always keep theirs"
        )


def cast(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Floating tensors cast to ``dtype``; keys that were the same view of one storage
    (tied weights) share their cast tensor."""
    if dtype is None:
        return state
    done: dict[tuple[Any, ...], torch.Tensor] = {}
    out = type(state)()
    for key, value in state.items():
        if value.is_floating_point() and value.dtype != dtype:
            same = (
                value.untyped_storage()._cdata,
                value.storage_offset(),
                tuple(value.shape),
                value.stride(),
                value.dtype,
            )
            if same not in done:
                done[same] = value.to(dtype)
            value = done[same]
        out[key] = value
    if hasattr(state, "_metadata"):
        out._metadata = state._metadata  # type: ignore[attr-defined]
    return out


def diff(gateway: Gateway, store: Store, a: str, b: str) -> Diff:
    """How version ``b`` differs from version ``a``, tensor by tensor.

    Tensors with the same digest count as identical without being read; only tensors
    that differ (same name, shape and dtype, another digest) are read and checked, to
    measure the largest absolute difference and the relative L2 norm of the change: a
    fine-tune of a 40,000-tensor model's head reads the head.
    """
    from ..tensors import difference, from_buffer, parse_dtype

    with gateway.read() as catalog:  # both tensor tables, one snapshot
        rows = [catalog.resolve(parse_ref(r)) for r in (a, b)]
        tables = [catalog.tensor_infos(row.id) for row in rows]
    info_a = {t.name: t for t in tables[0]}
    info_b = {t.name: t for t in tables[1]}
    differing = [
        (info_a[n], t)
        for n, t in info_b.items()
        if n in info_a
        and info_a[n].digest != t.digest
        and (info_a[n].shape, info_a[n].dtype) == (t.shape, t.dtype)
    ]
    # Numbers are never reused under a name, so NAME:N opens the version read above.
    opened_a, opened_b = (
        open_version(gateway, store, f"{row.name}:{row.version}", True, only=digests)
        for row, digests in (
            (rows[0], {ta.digest for ta, _ in differing}),
            (rows[1], {tb.digest for _, tb in differing}),
        )
    )

    def value(opened: Opened, t: TensorInfo) -> torch.Tensor:  # read only
        return from_buffer(opened.views[t.digest], parse_dtype(t.dtype), t.shape)

    added = [t for n, t in info_b.items() if n not in info_a]
    removed = [t for n, t in info_a.items() if n not in info_b]
    reshaped, retyped, changed = [], [], []
    identical = 0
    changed_bytes = sum(t.nbytes for t in added)
    for name, tb in info_b.items():
        ta = info_a.get(name)
        if ta is None:
            continue
        if ta.digest == tb.digest and ta.dtype == tb.dtype and ta.shape == tb.shape:
            identical += 1
            continue
        changed_bytes += tb.nbytes
        if ta.shape != tb.shape:
            reshaped.append((name, ta.shape, tb.shape))
        elif ta.dtype != tb.dtype:
            retyped.append((name, ta.dtype, tb.dtype))
        else:
            max_abs, rel = difference(value(opened_a, ta), value(opened_b, tb))
            changed.append(TensorChange(name, max_abs, rel, tb.nbytes))
    return Diff(
        a=opened_a.record.ref,
        b=opened_b.record.ref,
        added=added,
        removed=removed,
        reshaped=reshaped,
        dtype_changed=retyped,
        changed=changed,
        identical=identical,
        changed_bytes=changed_bytes,
        total_bytes=sum(t.nbytes for t in info_b.values()),
    )


# -- pull: the weights as a file plain torch (or safetensors) reads -----------------

PULL_FORMATS = ("pth", "safetensors")


def pull(
    gateway: Gateway,
    store: Store,
    ref: str,
    path: Any,
    *,
    format: str | None,
    overwrite: bool,
    progress: Callable[[int], None] | None,
) -> Path:
    """Write the weights of ``ref`` to a file (see ``Registry.pull``); returns its path."""
    from .._files import pull_target, refuse_existing

    if format is not None and format not in PULL_FORMATS:
        raise InvalidArgumentError(f"unknown format {format!r}: choose pth or safetensors")
    with gateway.read() as catalog:
        row = catalog.resolve(parse_ref(ref))
    exact = f"{row.name}:{row.version}"  # the same version, even if `ref` moves meanwhile
    target, format = pull_target(path, format, f"{row.name.replace('/', '-')}-v{row.version}")
    if target.is_dir():
        raise StorageError(f"cannot write {target}: it is a folder")
    if not overwrite:
        refuse_existing(target)
    opened = open_version(gateway, store, exact, verify="sha256", progress=progress)
    _write_weights(opened, target, format, progress, overwrite=overwrite)
    return target


class _Counting:
    """A binary file that reports how many bytes went through each write."""

    def __init__(self, raw: Any, progress: Callable[[int], None]):
        self._raw, self._progress = raw, progress

    def write(self, data: Any) -> int:
        written = self._raw.write(data)
        self._progress(written)
        return written

    def flush(self) -> None:
        self._raw.flush()

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, *args: Any) -> int:
        return self._raw.seek(*args)


def _write_weights(
    opened: Opened,
    target: Path,
    format: str,
    progress: Callable[[int], None] | None = None,
    *,
    overwrite: bool,
) -> None:
    """Write atomically: a temporary file in the target folder, then rename.

    A ``.pth`` is the state dict as pushed (storage sharing and ``_metadata``
    included); a ``.safetensors`` file cannot share storage, so each key gets its own
    bytes, and its header carries the pushed file's metadata, ``format: pt`` and the
    registry's keys.
    """
    import torch

    from .._files import replacing

    state, record = state_dict(opened), opened.record
    begin(progress, record.total_bytes, "writing")
    with replacing(target, overwrite=overwrite) as tmp:
        if format == "safetensors":
            from safetensors.torch import save_file

            save_file(
                _unshared(state),
                str(tmp),
                metadata=metadata.safetensors_header(opened.file_metadata, _registry_keys(record)),
            )
            if progress is not None:
                progress(record.total_bytes)
        else:
            with open(tmp, "wb") as raw:
                torch.save(state, _Counting(raw, progress) if progress else raw)


def _unshared(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each key with bytes of its own: safetensors refuses shared or strided tensors."""
    import torch

    from ..sharing import contiguous_strides

    seen: set[int] = set()
    unshared = {}
    for key, value in state.items():
        storage = value.untyped_storage()._cdata if value.numel() else None
        if storage in seen or value.stride() != contiguous_strides(value.shape):
            value = value.clone(memory_format=torch.contiguous_format)
        seen.add(storage)
        unshared[key] = value
    return unshared


def _registry_keys(record: ModelVersion) -> dict[str, str]:
    return {
        "registry.ref": record.ref,
        "registry.digest": f"sha256:{record.digest}",
        "registry.arch": record.arch,
        "registry.arch_kwargs": json.dumps(record.arch_kwargs, sort_keys=True),
    }
