"""Conversions between torch tensors and raw bytes (the only torch code storage needs).

Imported lazily: modules that merely list the catalogue never load torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .errors import InvalidArgumentError

#: What to do instead of pushing quantized weights (said wherever they are refused).
QUANTIZED = (
    "quantized tensors are not supported; push the model's state dict from before "
    "quantization (float weights) and quantize after loading"
)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise InvalidArgumentError(f"unknown dtype {name!r}")
    return dtype


def check_storable(name: str, value: object) -> torch.Tensor:
    """Return ``value`` as a plain dense CPU tensor, or explain why it cannot be stored."""
    if not isinstance(value, torch.Tensor):
        raise InvalidArgumentError(
            f"state dict entry {name!r} is a {type(value).__name__}, not a tensor"
        )
    if value.layout != torch.strided:
        raise InvalidArgumentError(
            f"tensor {name!r} has layout {value.layout}; only dense tensors can be stored"
        )
    if value.is_quantized:
        raise InvalidArgumentError(f"tensor {name!r} is quantized ({value.dtype}): {QUANTIZED}")
    if value.is_meta:
        raise InvalidArgumentError(f"tensor {name!r} is on the meta device and holds no data")
    return value


def raw_bytes(tensor: torch.Tensor) -> tuple[torch.Tensor, memoryview]:
    """The tensor's bytes in C order without a copy where possible.

    Returns the contiguous CPU tensor that owns the bytes too: the memoryview is only
    valid while that tensor is alive.
    """
    flat = tensor.detach()
    if flat.device.type != "cpu":
        flat = flat.cpu()
    flat = flat.resolve_conj().resolve_neg().contiguous().reshape(-1)
    if flat.numel() == 0:
        return flat, memoryview(b"")
    if flat.stride(0) != 1:
        # torch calls a size-1 tensor contiguous whatever its stride (diagonal() of a 1x1,
        # x[:, ::2] of an Nx1): reshape keeps that stride, and a byte view needs 1.
        flat = flat.clone(memory_format=torch.contiguous_format)
    return flat, memoryview(flat.view(torch.uint8).numpy())


def from_buffer(buffer: memoryview, dtype: torch.dtype, shape: Sequence[int]) -> torch.Tensor:
    """A tensor sharing memory with ``buffer`` (which must be writable, e.g. a COW mmap)."""
    numel = math.prod(shape)
    if numel == 0:
        return torch.empty(tuple(shape), dtype=dtype)
    return torch.frombuffer(buffer, dtype=dtype, count=numel).reshape(tuple(shape))


def difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max |b - a|, ||b - a|| / ||a||) in float64, one block at a time.

    The relative norm is 0 when both are zero and inf when only ``a`` is.
    """
    x, y = a.reshape(-1), b.reshape(-1)
    max_abs, diff_sq, base_sq = 0.0, 0.0, 0.0
    step = 1 << 22
    for start in range(0, x.numel(), step):
        xs = x[start : start + step].to(torch.float64)
        delta = y[start : start + step].to(torch.float64) - xs
        if delta.numel():
            max_abs = max(max_abs, float(delta.abs().max()))
        diff_sq += float(delta.square().sum())
        base_sq += float(xs.square().sum())
    if base_sq == 0.0:
        return max_abs, 0.0 if diff_sq == 0.0 else math.inf
    return max_abs, math.sqrt(diff_sq / base_sq)
