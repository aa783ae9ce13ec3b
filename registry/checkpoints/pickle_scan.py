"""Pickles inspected without being run: the tool that explains why torch refused a file.

Owns :func:`_scan_pickle`, a walk of one pickle with :mod:`pickletools` (a decoder that
builds no object and calls nothing) that keeps only literals, globals as names
(:class:`_Global`) and the persistent ids the pickle names, and raises ``_Damaged``
where the pickle is cut short or malformed; :class:`_Bounded`, which keeps that walk
inside the file (a declared length allocates no more than the file holds, a text
opcode's line is bounded); and how a persistent id declares a storage as torch.save
writes it (:func:`_declared_storage`: its key and size in bytes).

Never unpickles anything (no :mod:`pickle` loads, no ``torch.load``: only
``pth._torch_load`` calls torch.load, with ``weights_only=True``), never imports or
calls a global a pickle names, and never reads a file itself: callers hand it a stream.
"""

from __future__ import annotations

import functools
import pickletools
from typing import BinaryIO, NamedTuple

import torch

from .damage import _Damaged

#: The longest line a text pickle opcode (GLOBAL, INT...) may have when scanned.
_MAX_PICKLE_LINE = 1 << 20


class _Global(NamedTuple):
    module: str
    name: str


_OPAQUE = object()


def _opcode_actions() -> dict[str, tuple[str, int, int]]:
    """Per pickle opcode name: (action, items popped, items pushed).

    Actions are "literal" (push the argument), "put", "memoize", "get", "global",
    "stack_global", "binpersid", "persid", "mark", "tuple" (from the mark), "tupleN",
    "list" (from the mark), "append", "appends", "pop", "stop", or "generic": pop the mark and
    its items (items popped -1) or that many items, then push as many opaque values.
    """
    literals = {
        id(kind)
        for kind in (
            pickletools.pyint,
            pickletools.pylong,
            pickletools.pyinteger_or_bool,
            pickletools.pybool,
            pickletools.pyfloat,
            pickletools.pystring,
            pickletools.pybytes,
            pickletools.pybytes_or_str,
            pickletools.pyunicode,
            pickletools.pybytearray,
        )
    }
    special = {
        "PUT": "put", "BINPUT": "put", "LONG_BINPUT": "put", "MEMOIZE": "memoize",
        "GET": "get", "BINGET": "get", "LONG_BINGET": "get", "GLOBAL": "global",
        "STACK_GLOBAL": "stack_global", "BINPERSID": "binpersid", "PERSID": "persid",
        "MARK": "mark", "TUPLE": "tuple", "LIST": "list", "EMPTY_TUPLE": "tuple0",
        "TUPLE1": "tuple1", "TUPLE2": "tuple2", "TUPLE3": "tuple3", "EMPTY_LIST": "list0",
        "APPEND": "append", "APPENDS": "appends", "STOP": "stop", "POP": "pop",
    }  # fmt: skip
    actions = {}
    for op in pickletools.opcodes:
        if op.name in special:
            actions[op.name] = (special[op.name], 0, 0)
        elif (
            op.arg is not None
            and not op.stack_before
            and len(op.stack_after) == 1
            and id(op.stack_after[0]) in literals
        ):
            actions[op.name] = ("literal", 0, 1)
        else:
            before = list(op.stack_before)
            if pickletools.markobject in before:  # the mark's items, then those below it
                below = before[: before.index(pickletools.markobject)]
                actions[op.name] = ("generic", -1 - len(below), len(op.stack_after))
            else:
                actions[op.name] = ("generic", len(before), len(op.stack_after))
    return actions


_ACTIONS = _opcode_actions()


class _Bounded:
    """A file seen through what pickletools reads: reads never past ``end`` (so a
    declared length does not allocate more than the file holds), lines bounded."""

    def __init__(self, f: BinaryIO, end: int):
        self._f, self._end = f, end

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._end - self._f.tell())
        return self._f.read(left if n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self._f.readline(min(_MAX_PICKLE_LINE, max(0, self._end - self._f.tell())))

    def tell(self) -> int:
        return self._f.tell()


def _scan_pickle(stream: object) -> tuple[object, list[object]]:
    """Walk one pickle from ``stream`` to its STOP without building or calling anything.

    Returns the pickle's value where it is a literal (an int, a str, a tuple or list
    of literals; ``_OPAQUE`` otherwise, a ``_Global`` for a global) and the persistent
    ids it names, as such values. Raises _Damaged if the pickle is cut short or
    malformed (an unknown opcode, a short argument, a stack or memo it misuses).
    """
    stack: list[object] = []
    marks: list[int] = []  # where each open mark is on the stack (as pickle's metastack)
    memo: dict[object, object] = {}
    pids: list[object] = []
    position = 0

    def damaged(what: str) -> _Damaged:
        return _Damaged(f"its pickle is damaged: at byte {position} it {what}")

    def pop() -> object:
        if len(stack) <= (marks[-1] if marks else 0):
            raise damaged("pops an empty stack")
        return stack.pop()

    def pop_to_mark() -> list[object]:
        if not marks:
            raise damaged("uses a mark it never set")
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    try:
        for opcode, arg, at in pickletools.genops(stream):
            position = at if at is not None else position
            action, popped, pushed = _ACTIONS[opcode.name]
            if action == "literal":
                stack.append(arg)
            elif action == "put" or action == "memoize":
                if len(stack) <= (marks[-1] if marks else 0):
                    raise damaged("memoizes nothing")
                memo[len(memo) if action == "memoize" else arg] = stack[-1]
            elif action == "get":
                if arg not in memo:
                    raise damaged(f"recalls memo {arg}, which it never stored")
                stack.append(memo[arg])
            elif action == "mark":
                marks.append(len(stack))
            elif action == "pop":  # as pickle's POP: an item, or the mark if none is above it
                if len(stack) > (marks[-1] if marks else 0):
                    stack.pop()
                else:
                    pop_to_mark()
            elif action == "generic":
                if popped < 0:
                    pop_to_mark()
                    popped = -1 - popped
                for _ in range(popped):
                    pop()
                stack.extend([_OPAQUE] * pushed)
            elif action == "binpersid":
                pids.append(pop())
                stack.append(_OPAQUE)
            elif action == "persid":
                pids.append(arg)
                stack.append(_OPAQUE)
            elif action == "global":
                module, _, attribute = str(arg).partition(" ")
                stack.append(_Global(module, attribute))
            elif action == "stack_global":
                attribute, module = pop(), pop()
                ok = isinstance(module, str) and isinstance(attribute, str)
                stack.append(_Global(module, attribute) if ok else _OPAQUE)  # type: ignore[arg-type]
            elif action == "tuple" or action == "list":
                items = pop_to_mark()
                stack.append(tuple(items) if action == "tuple" else items)
            elif action.startswith("tuple"):
                items = [pop() for _ in range(int(action[-1]))]
                stack.append(tuple(reversed(items)))
            elif action == "list0":
                stack.append([])
            elif action == "append" or action == "appends":
                items = [pop()] if action == "append" else pop_to_mark()
                target = pop()
                if isinstance(target, list):
                    target.extend(items)  # in place: a memoized list grows too, as in pickle
                stack.append(target if isinstance(target, list) else _OPAQUE)
            else:  # stop
                return pop(), pids
    except _Damaged:
        raise
    except (ValueError, EOFError, OverflowError, MemoryError) as exc:
        message = str(exc)
        try:
            at_end = stream.read(1) == b""  # type: ignore[attr-defined]
        except Exception:
            at_end = False
        if at_end or "exhausted before seeing STOP" in message or "remain" in message:
            raise _Damaged(
                f"its pickle is cut short: it ends after byte {position}, before its STOP "
                f"opcode ({message[:200]})"
            ) from None
        raise _Damaged(f"its pickle is damaged at byte {position}: {message[:200]}") from None
    raise _Damaged("its pickle is cut short: it has no STOP opcode")


@functools.cache
def _storage_element_sizes() -> dict[str, int]:
    """Bytes per element of each storage class a torch.save pickle may name."""
    sizes = {"UntypedStorage": 1}
    try:
        mapping = torch.storage._dtype_to_storage_type_map()
    except Exception:  # a private map: without it every storage is checked by torch alone
        return sizes
    for dtype, name in mapping.items():
        sizes[name] = torch.empty(0, dtype=dtype).element_size()
    return sizes


def _declared_storage(pid: object, *, legacy: bool) -> tuple[str, int, int] | None:
    """(key, bytes, bytes per element) of a storage persistent id as torch.save writes
    it, else None.

    Zip format: ``('storage', StorageClass, key, location, numel)``; legacy format:
    the same and ``view_metadata``. ``numel`` counts the storage class's elements.
    """
    if not isinstance(pid, tuple) or len(pid) != (6 if legacy else 5) or pid[0] != "storage":
        return None
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(storage_type, _Global) or not isinstance(key, str):
        return None
    if type(numel) is not int or numel < 0:
        return None
    element = _storage_element_sizes().get(storage_type.name)
    return None if element is None else (key, numel * element, element)
