"""A C library function through ctypes, looked up once: the store's two system calls
that Python does not expose (``memcmp`` for byte comparison, ``sync_file_range`` for
writeback). ctypes releases the GIL during the call. Imports nothing of ours."""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any


@cache
def function(name: str, argtypes: tuple[Any, ...], restype: Any) -> Any:
    """libc's ``name`` with these argument and result types, or None where there is none."""
    try:
        fn = getattr(ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = list(argtypes)
    fn.restype = restype
    return fn
