"""Which keys of a state dict are one storage, recorded at push and restored on load.

The store keeps equal bytes once; that is a storage matter and must never show.
What a user gets back has exactly the storage sharing the source had, as
``torch.save``/``torch.load`` would give it:

- keys whose tensors were one storage at push (tied weights: an embedding and an LM
  head; or several views of one tensor) come back as views of one storage, each at
  its recorded byte offset with its recorded strides;
- keys that were separate storages come back independent, whatever their values:
  the first key to use a stored blob gets a copy-on-write view of the pack, every
  later key with the same bytes gets its own copy.

A shared storage is recorded per key as ``(group, byte offset, strides)``, where
``group`` is the position of the group's first key. Sharing is torch's own notion:
the same storage object (``untyped_storage()._cdata``), not equal bytes or equal
addresses. Empty tensors hold nothing to share and are never grouped.

Only the functions that build tensors import torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .errors import IntegrityError
from .records import Shared

if TYPE_CHECKING:
    import torch

#: Bytes per element of every dtype a registry stores (torch names, without torch).
DTYPE_SIZES = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "complex128": 16,
    "complex64": 8, "complex32": 4, "int64": 8, "int32": 4, "int16": 2, "int8": 1,
    "uint64": 8, "uint32": 4, "uint16": 2, "uint8": 1, "bool": 1,
    "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e4m3fnuz": 1, "float8_e5m2fnuz": 1,
}  # fmt: skip


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """C-order strides (in elements) of ``shape``."""
    strides, step = [], 1
    for size in reversed(list(shape)):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def span(shape: Sequence[int], stride: Sequence[int], itemsize: int) -> int:
    """Bytes from a view's first element to just past its last one (0 when empty)."""
    if any(size == 0 for size in shape):
        return 0
    return (sum((size - 1) * step for size, step in zip(shape, stride)) + 1) * itemsize


# -- push: what the source shared ---------------------------------------------------------


def storage_layout(tensors: Sequence[torch.Tensor]) -> list[Shared | None]:
    """Per tensor, its place in a storage shared with others, or None if it has its own."""
    by_storage: dict[int, list[int]] = {}
    for i, tensor in enumerate(tensors):
        if tensor.numel() == 0:
            continue
        by_storage.setdefault(tensor.untyped_storage()._cdata, []).append(i)
    found: list[Shared | None] = [None] * len(tensors)
    for members in by_storage.values():
        if len(members) < 2:
            continue
        for i in members:
            tensor = tensors[i]
            found[i] = Shared(
                members[0], tensor.storage_offset() * tensor.element_size(), tuple(tensor.stride())
            )
    return found


# -- the catalogue's and the manifest's form of it -----------------------------------------


def to_columns(shared: Shared | None, shape: Sequence[int]) -> tuple[int | None, list[Any] | None]:
    """(storage_group, storage_view) columns; the view is NULL for offset 0, contiguous."""
    if shared is None:
        return None, None
    if shared.offset == 0 and shared.stride == contiguous_strides(shape):
        return shared.group, None
    return shared.group, [shared.offset, list(shared.stride)]


def from_columns(group: int | None, view: Any, shape: Sequence[int]) -> Shared | None:
    if group is None:
        return None
    if view is None:
        return Shared(int(group), 0, contiguous_strides(shape))
    offset, stride = view
    return Shared(int(group), int(offset), tuple(int(s) for s in stride))


def manifest_terms(names: Sequence[str], shared: Sequence[Shared | None]) -> list[list[Any] | None]:
    """Each key's sharing as the version digest sees it: ``[group's first name, offset,
    strides]``, or None. Groups are named by their smallest key so that the digest does
    not depend on key order; keys with a storage of their own add nothing, so a version
    without sharing has the digest it always had."""
    smallest: dict[int, str] = {}
    for name, entry in zip(names, shared):
        if entry is not None:
            smallest[entry.group] = min(smallest.get(entry.group, name), name)
    return [
        None if entry is None else [smallest[entry.group], entry.offset, list(entry.stride)]
        for entry in shared
    ]


def check_groups(
    dtypes: Sequence[str], shapes: Sequence[Sequence[int]], shared: Sequence[Shared | None]
) -> None:
    """Refuse a sharing table that no real storage could have (from an untrusted bundle).

    Raises ValueError naming the first problem.
    """
    members: dict[int, list[int]] = {}
    for i, entry in enumerate(shared):
        if entry is None:
            continue
        first = shared[entry.group] if 0 <= entry.group <= i else None
        if first is None or first.group != entry.group:
            raise ValueError(
                f"tensor {i} names storage group {entry.group}, which does not start there"
            )
        itemsize = DTYPE_SIZES[dtypes[i]]
        if (
            entry.offset < 0
            or entry.offset % itemsize
            or len(entry.stride) != len(shapes[i])
            or any(s < 0 for s in entry.stride)
            or not math.prod(shapes[i])
        ):
            raise ValueError(f"tensor {i} has an impossible place in its storage")
        members.setdefault(entry.group, []).append(i)
    for group, found in members.items():
        if len(found) < 2:
            raise ValueError(f"storage group {group} has a single tensor")
        extent = group_extent([(dtypes[i], shapes[i], shared[i]) for i in found])  # type: ignore[misc]
        nbytes = sum(math.prod(shapes[i]) * DTYPE_SIZES[dtypes[i]] for i in found)
        if extent > 64 * nbytes + (1 << 20):
            raise ValueError(f"storage group {group} spans {extent} bytes for {nbytes} of tensors")


def group_extent(members: Sequence[tuple[str, Sequence[int], Shared]]) -> int:
    """Bytes a shared storage needs to hold every member view."""
    return max(
        entry.offset + span(shape, entry.stride, DTYPE_SIZES[dtype])
        for dtype, shape, entry in members
    )


# -- load: independent keys, shared storages ----------------------------------------------


class Located(Protocol):
    """What :func:`materialize` reads of a key (the catalogue's ``Location`` has it)."""

    dtype: str
    shape: Sequence[int]
    digest: str
    shared: Shared | None


def materialize(entries: Sequence[Located], views: Mapping[str, memoryview]) -> list[torch.Tensor]:
    """The tensors of ``entries`` over ``views`` (digest -> the stored bytes, writable,
    e.g. a copy-on-write map), with exactly the recorded sharing and no other.

    The first key to use a blob gets a view of it without a copy; later ones get
    copies. Raises IntegrityError if a shared storage's members contradict each other.
    """
    from .tensors import parse_dtype

    out: list[torch.Tensor | None] = [None] * len(entries)
    used: set[str] = set()

    def own(i: int) -> torch.Tensor:
        entry = entries[i]
        tensor = _tensor(
            views[entry.digest], parse_dtype(entry.dtype), entry.shape, entry.digest in used
        )
        used.add(entry.digest)
        return tensor

    groups: dict[int, list[int]] = {}
    for i, entry in enumerate(entries):
        if entry.shared is None:
            out[i] = own(i)
        else:
            groups.setdefault(entry.shared.group, []).append(i)
    for members in groups.values():
        for i, tensor in zip(members, _group(entries, members, views, own)):
            out[i] = tensor
    return out  # type: ignore[return-value]


def _tensor(
    buffer: memoryview, dtype: torch.dtype, shape: Sequence[int], copy: bool
) -> torch.Tensor:
    from .tensors import from_buffer

    tensor = from_buffer(buffer, dtype, shape)
    # A copy comes from torch's allocator, which aligns to 64 bytes as the packs do, so
    # kernels (and their rounding) are the same as for the original tensor.
    return tensor.clone() if copy and tensor.numel() else tensor


def _group(
    entries: Sequence[Located], members: list[int], views: Mapping[str, memoryview], own: Any
) -> list[torch.Tensor]:
    import torch

    from .storage import same_bytes
    from .tensors import parse_dtype, raw_bytes

    items = [(entries[i].dtype, entries[i].shape, entries[i].shared) for i in members]
    extent = group_extent(items)  # type: ignore[arg-type]
    covering = next(
        (
            i
            for i in members
            if entries[i].shared.offset == 0  # type: ignore[union-attr]
            and entries[i].shared.stride == contiguous_strides(entries[i].shape)  # type: ignore[union-attr]
            and math.prod(entries[i].shape) * DTYPE_SIZES[entries[i].dtype] == extent
        ),
        None,
    )
    if covering is not None:
        base = own(covering)
        storage = base.untyped_storage()
    else:
        storage = torch.empty(extent, dtype=torch.uint8).untyped_storage()
        for i in members:
            entry = entries[i]
            target = _view(storage, entry)
            target.copy_(_tensor(views[entry.digest], parse_dtype(entry.dtype), entry.shape, False))
    result = []
    for i in members:
        entry = entries[i]
        tensor = base if i == covering else _view(storage, entry)
        same_as_base = (
            covering is not None
            and entry.digest == entries[covering].digest
            and entry.dtype == entries[covering].dtype
            and entry.shape == entries[covering].shape
            and entry.shared == entries[covering].shared  # type: ignore[union-attr]
        )
        if (
            i != covering
            and not same_as_base
            and not same_bytes(raw_bytes(tensor)[1], views[entry.digest])
        ):
            raise IntegrityError(
                f"tensors recorded as one storage disagree where they overlap (sha256:{entry.digest[:12]}...)"
            )
        result.append(tensor)
    return result


def _view(storage: Any, entry: Located) -> torch.Tensor:
    import torch

    from .tensors import parse_dtype

    dtype = parse_dtype(entry.dtype)
    shared = entry.shared
    assert shared is not None
    itemsize = DTYPE_SIZES[entry.dtype]
    return torch.empty(0, dtype=dtype).set_(
        storage, shared.offset // itemsize, tuple(entry.shape), shared.stride
    )
