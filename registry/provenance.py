"""Provenance: who pushed a version, from where, and with which code (torch-free).

Collected at push and kept with the version: the acting user (``REGISTRY_USER``,
else the login name), the host, the absolute path of the pushed file, the git commit
of the repository holding the current folder and whether its tracked files had
uncommitted changes, and this package's version (torch's is kept already).

Git is asked in the background (:func:`start`) while the push reads and hashes the
weights; no git, no repository, a slow or failing git all give ``None``: provenance
never fails a push.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from . import config

#: How long git may take before the push goes on without its answer.
GIT_TIMEOUT_S = 2.0
#: Widest user and host names the catalogue keeps (its columns are 255 wide).
MAX_NAME = 255


@dataclass(frozen=True)
class Provenance:
    """Where a version came from, as recorded with it."""

    user: str
    host: str | None
    registry_version: str | None
    source_path: str | None
    git_commit: str | None
    git_dirty: bool | None

    def columns(self) -> dict[str, Any]:
        """The catalogue's column names for these values (keys of the row ``Catalog.add_version`` inserts)."""
        return {
            "pushed_by": self.user,
            "pushed_host": self.host,
            "source_path": self.source_path,
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
            "registry_version": self.registry_version,
        }


def user() -> str:
    """The acting user (``REGISTRY_USER``, else the login name, else "unknown")."""
    return config.acting_user()[:MAX_NAME]


def host() -> str | None:
    """This machine's host name, or None if it has none."""
    import socket

    try:
        return socket.gethostname()[:MAX_NAME] or None
    except OSError:  # pragma: no cover - gethostname does not fail on Linux
        return None


def actor() -> tuple[str, str | None]:
    """(user, host) of whoever changes the catalogue now: an event's actor."""
    return user(), host()


@lru_cache(maxsize=1)
def registry_version() -> str | None:
    """The installed ``registry`` package's version (None when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("registry")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return None


def source_path(source: Any) -> str | None:
    """The absolute path of a pushed file; None for a state dict or a module."""
    if isinstance(source, (str, os.PathLike)):
        return os.path.abspath(os.fspath(source))
    return None


class _Git:
    """``git rev-parse HEAD`` and ``git status`` started now, read by :meth:`result`."""

    def __init__(self, cwd: str | os.PathLike[str] | None = None):
        self._procs: list[subprocess.Popen[bytes]] = []
        try:
            where = os.fspath(cwd) if cwd is not None else os.getcwd()
            # --no-optional-locks: `git status` must never take (nor, when this process
            # ends it early, leave behind) the repository's index.lock, nor rewrite the
            # index; the user's own git commands would fail on a stale lock.
            for args in (
                ["git", "--no-optional-locks", "rev-parse", "--verify", "-q", "HEAD"],
                ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            ):
                self._procs.append(
                    subprocess.Popen(
                        args,
                        cwd=where,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                    )
                )
        except (OSError, ValueError):  # no git, no current folder
            self.close()
            self._procs = []

    def __del__(self) -> None:  # a push that failed before asking: end git quietly
        self.close()

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def result(self, timeout: float = GIT_TIMEOUT_S) -> tuple[str | None, bool | None]:
        """(commit, dirty), or (None, None) when there is no repository or git fails."""
        if len(self._procs) != 2:
            return None, None
        outputs = []
        try:
            for proc in self._procs:
                out, _ = proc.communicate(timeout=timeout)
                if proc.returncode != 0:
                    return None, None
                outputs.append(out.decode("utf-8", "replace").strip())
        except (OSError, subprocess.SubprocessError):
            return None, None
        finally:
            self.close()
        commit, status = outputs
        if len(commit) not in (40, 64) or any(c not in "0123456789abcdef" for c in commit):
            return None, None
        return commit, bool(status)


def git_state(cwd: str | os.PathLike[str] | None = None) -> tuple[str | None, bool | None]:
    """(HEAD commit, tracked files changed?) of the repository holding ``cwd``
    (default: the current folder); (None, None) outside a repository or without git."""
    return _Git(cwd).result()


class Pending:
    """Provenance being collected; git runs meanwhile. :meth:`result` gives it."""

    def __init__(self, source: Any):
        self._source = source
        self._git = _Git()

    def result(self) -> Provenance:
        commit, dirty = self._git.result()
        return Provenance(
            user=user(),
            host=host(),
            registry_version=registry_version(),
            source_path=source_path(self._source),
            git_commit=commit,
            git_dirty=dirty,
        )


def start(source: Any) -> Pending:
    """Begin collecting the provenance of a push of ``source`` (see :class:`Pending`)."""
    return Pending(source)
