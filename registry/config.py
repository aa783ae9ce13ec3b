"""Settings: the only module that reads environment variables.

A registry is a *home* folder holding the SQLite catalogue and the local tensor
store. Either part can be moved elsewhere: ``REGISTRY_DATABASE_URL`` takes a SQLite or
PostgreSQL URL, ``REGISTRY_STORAGE_URL`` a folder (or ``file://`` URL) or an
S3-compatible bucket (``s3://bucket/prefix``; endpoint from ``AWS_ENDPOINT_URL``,
credentials and region from the standard ``AWS_*`` variables and profiles, which
boto3 reads itself). Packs read from an object store are kept in a bounded local
cache: ``REGISTRY_CACHE_DIR`` (else ``REGISTRY_HOME/cache``), at most
``REGISTRY_CACHE_MAX_SIZE`` (default 10GB). Explicit arguments to
:class:`registry.Registry` win over the environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import ConfigurationError

ENV_HOME = "REGISTRY_HOME"
ENV_DATABASE_URL = "REGISTRY_DATABASE_URL"
ENV_STORAGE_URL = "REGISTRY_STORAGE_URL"
ENV_USER = "REGISTRY_USER"
ENV_CACHE_DIR = "REGISTRY_CACHE_DIR"
ENV_CACHE_MAX_SIZE = "REGISTRY_CACHE_MAX_SIZE"
#: The web page's access token (``registry ui``): required on every request when set,
#: and when the page is bound to anything but loopback (then generated if unset).
ENV_UI_TOKEN = "REGISTRY_UI_TOKEN"

#: The read cache's bound when REGISTRY_CACHE_MAX_SIZE is not set, in bytes.
DEFAULT_CACHE_MAX_BYTES = 10 * 10**9

DATABASE_FILENAME = "registry.db"
STORE_DIRNAME = "objects"

#: How long a SQLite writer waits for another one's lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 60.0

#: Worker threads for hashing; hashlib releases the GIL, so two cores hash at ~2x.
HASH_THREADS = max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class ObjectStoreLocation:
    """An ``s3://bucket/prefix`` storage URL, split; ``prefix`` is "" or ends with "/"."""

    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class Settings:
    """Where a registry keeps its catalogue and its tensors.

    Exactly one of ``storage_path`` (a folder) and ``object_store`` (a bucket) is set.
    """

    home: Path
    database_url: str
    storage_path: Path | None
    object_store: ObjectStoreLocation | None = None

    @property
    def storage_url(self) -> str:
        """Where the tensors are, as a user would write it."""
        if self.object_store is not None:
            return self.object_store.url
        return str(self.storage_path)

    @property
    def pack_cache_dir(self) -> Path:
        """Where packs read from an object store are cached: ``$REGISTRY_CACHE_DIR/packs``,
        else ``HOME/cache/packs``."""
        env = os.environ.get(ENV_CACHE_DIR)
        return (Path(env).expanduser() if env else self.home / "cache") / "packs"


def ui_token() -> str | None:
    """REGISTRY_UI_TOKEN, or None when unset or empty."""
    return os.environ.get(ENV_UI_TOKEN) or None


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
        f"unsupported storage URL {url!r}: use a folder (a path or file:// URL) or an "
        "S3-compatible bucket (s3://bucket/prefix)"
    )


_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


def object_store_location(url: str, source: str = ENV_STORAGE_URL) -> ObjectStoreLocation:
    """Split ``s3://bucket/prefix``; ConfigurationError for a bucket name S3 refuses."""
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise ConfigurationError(
            f"{source} {url!r} does not name a bucket: use s3://bucket/prefix (3-63 "
            "lower-case letters, digits, '.' and '-')"
        )
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ConfigurationError(f"{source} {url!r}: the prefix may not hold '.' or '..' parts")
    return ObjectStoreLocation(bucket, "".join(f"{p}/" for p in parts))


def object_store_endpoint() -> str | None:
    """The object store's endpoint as boto3 reads it (``AWS_ENDPOINT_URL_S3``, else
    ``AWS_ENDPOINT_URL``); None means AWS itself."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def cache_max_bytes() -> int:
    """The read cache's bound in bytes: ``$REGISTRY_CACHE_MAX_SIZE`` (e.g. ``10GB``,
    ``500MB``, ``0``), else DEFAULT_CACHE_MAX_BYTES."""
    env = os.environ.get(ENV_CACHE_MAX_SIZE, "").strip()
    if not env:
        return DEFAULT_CACHE_MAX_BYTES
    try:
        return parse_size(env)
    except ValueError as exc:
        raise ConfigurationError(f"{ENV_CACHE_MAX_SIZE}={env!r}: {exc}") from None


_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(text: str) -> int:
    """Bytes in ``"10GB"``, ``"1.5 GiB"``, ``"500mb"``, ``"0"``; ValueError otherwise.
    K/M/G/T are powers of 1000, KiB/MiB/GiB/TiB of 1024."""
    match = _SIZE_RE.fullmatch(text.strip())
    if not match:
        raise ValueError("not a size: write it like 10GB, 500MB or 2GiB")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    base = _UNITS[unit[:1]]
    if "i" in unit:
        base = 1024 ** "bkmgt".index(unit[0]) if unit[0] != "b" else 1
    return int(number * base)


def cache_dir() -> Path:
    """Where derived, rebuildable data goes: ``$REGISTRY_CACHE_DIR``, else the XDG cache."""
    env = os.environ.get(ENV_CACHE_DIR)
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
    source = "storage_url=" if storage_url is not None else ENV_STORAGE_URL
    if store and os.fspath(store).startswith("s3://"):
        return Settings(
            home=home_path,
            database_url=db,
            storage_path=None,
            object_store=object_store_location(os.fspath(store), source),
        )
    storage_path = _storage_path(os.fspath(store)) if store else home_path / STORE_DIRNAME
    if store:
        _must_be_folder(storage_path, source)
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
