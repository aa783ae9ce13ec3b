"""Who is writing, and whether a writer recorded earlier is still running.

A push, an import or a gc records :func:`this_process` in the catalogue before it
writes a pack (``pending_packs``); gc asks :func:`running` whether that writer still
runs before it collects a pack file no version names. A process on gc's own machine
is judged exactly: the same host name, boot (Linux's ``boot_id``) and pid namespace,
and a process with that pid that started at the same clock tick. One elsewhere
cannot be seen from here: :func:`running` answers None and gc falls back on its
grace period. Must import nothing of ours.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Writer:
    """A process, as recorded: ``host`` name, ``boot_id`` and ``pid_ns`` (None where
    the system has none), ``pid``, and ``pid_started`` (clock ticks after boot at which
    the process started, from /proc; None where unknown)."""

    host: str
    boot_id: str | None
    pid_ns: str | None
    pid: int
    pid_started: int | None


def this_process() -> Writer:
    """This process, as a :class:`Writer` (the pid is read afresh: a fork is another)."""
    pid = os.getpid()
    boot_id, pid_ns = _machine()
    return Writer(socket.gethostname(), boot_id, pid_ns, pid, _started(pid))


def running(writer: Writer) -> bool | None:
    """True if ``writer`` is still running, False if it is gone, None if that cannot be
    told from this machine (another host, boot or pid namespace)."""
    boot_id, pid_ns = _machine()
    if (writer.host, writer.boot_id, writer.pid_ns) != (socket.gethostname(), boot_id, pid_ns):
        return None
    if boot_id is None:  # no /proc: the pid alone (a reused pid looks alive: safe side)
        try:
            os.kill(writer.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    started = _started(writer.pid)
    return started is not None and started == writer.pid_started


@cache
def _machine() -> tuple[str | None, str | None]:
    """(boot id, pid namespace) of this machine and process; Nones off Linux."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot_id = f.read().strip()
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None, None
    return boot_id, pid_ns


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot), None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22 (starttime), counted after the command name, which may hold spaces.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None
