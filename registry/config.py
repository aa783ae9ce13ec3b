"""Settings: the only module that reads environment variables.

A registry is a *home* folder holding the SQLite catalogue and the local tensor
store. Either part can be moved elsewhere: ``REGISTRY_DATABASE_URL`` takes any
SQLAlchemy URL, ``REGISTRY_STORAGE_URL`` a folder (or ``file://`` URL).
Explicit arguments to :class:`registry.Registry` win over the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import ConfigurationError

ENV_HOME = "REGISTRY_HOME"
ENV_DATABASE_URL = "REGISTRY_DATABASE_URL"
ENV_STORAGE_URL = "REGISTRY_STORAGE_URL"
ENV_USER = "REGISTRY_USER"

DATABASE_FILENAME = "registry.db"
STORE_DIRNAME = "objects"

#: How long a SQLite writer waits for another one's lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 60.0

#: Worker threads for hashing; hashlib releases the GIL, so two cores hash at ~2x.
HASH_THREADS = max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Settings:
    """Where a registry keeps its catalogue and its tensors."""

    home: Path
    database_url: str
    storage_path: Path


def default_home() -> Path:
    """``$REGISTRY_HOME``, else ``$XDG_DATA_HOME/registry``, else ``~/.local/share/registry``."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "registry"


def _storage_path(url: str) -> Path:
    if "://" not in url:
        return Path(url).expanduser()
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    raise ConfigurationError(
        f"unsupported storage URL {url!r}: this version stores tensors in a local folder "
        "(a path or file:// URL)"
    )


def cache_dir() -> Path:
    """Where derived, rebuildable data goes: ``$REGISTRY_CACHE_DIR``, else the XDG cache."""
    env = os.environ.get("REGISTRY_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "registry"


def acting_user() -> str:
    """Who is acting, for the record: ``$REGISTRY_USER``, else the login name, else "unknown"."""
    env = os.environ.get(ENV_USER, "").strip()
    if env:
        return env
    import getpass

    try:
        return getpass.getuser() or "unknown"
    except Exception:  # no login name (a container's uid without a passwd entry)
        return "unknown"


def sqlite_path(database_url: str) -> Path | None:
    """The file of a plain ``sqlite:///PATH`` URL, else None (other databases, options)."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if database_url.startswith(prefix):
            rest = database_url[len(prefix) :]
            if rest and "?" not in rest and rest != ":memory:" and not rest.startswith("file:"):
                return Path(unquote(rest))
    return None


def resolve(
    home: str | os.PathLike[str] | None = None,
    database_url: str | None = None,
    storage_url: str | os.PathLike[str] | None = None,
) -> Settings:
    """Combine explicit arguments with the environment into :class:`Settings`."""
    home_path = Path(home).expanduser() if home is not None else default_home()
    db = database_url or os.environ.get(ENV_DATABASE_URL)
    store = storage_url if storage_url is not None else os.environ.get(ENV_STORAGE_URL)
    if not db or not store:  # the home folder is used
        _must_be_folder(home_path, "home=" if home is not None else _home_source())
    if not db:
        db = f"sqlite:///{(home_path / DATABASE_FILENAME).absolute()}"
    storage_path = _storage_path(os.fspath(store)) if store else home_path / STORE_DIRNAME
    if store:
        _must_be_folder(
            storage_path, "storage_url=" if storage_url is not None else ENV_STORAGE_URL
        )
    return Settings(home=home_path, database_url=db, storage_path=storage_path.absolute())


def _home_source() -> str:
    return ENV_HOME if os.environ.get(ENV_HOME) else "the default home"


def _must_be_folder(path: Path, source: str) -> None:
    """Refuse a path that exists as something other than a folder (or is under a file)."""
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                what = "is a file" if part == path else f"is under {part}, which is a file"
                raise ConfigurationError(
                    f"{source} {path} {what}: the registry needs a folder there"
                )
            return
