"""The registry's exception tree.

Every error the registry raises on purpose derives from :class:`RegistryError`, so
callers can catch one class; each also subclasses the matching built-in
(``LookupError``, ``ValueError``, ``OSError``) so generic handlers keep working. The
CLI prints the error as a one-line message and exits with code 1.

A message that advises what to do next names what the reader can type: a Python
argument (``overwrite=True``) in ``str(error)``, a command-line flag (``--force``) in
``error.cli_message`` (the same text where the two agree).

    RegistryError
    ├── ConfigurationError (ValueError)        bad REGISTRY_* setting
    ├── InvalidArgumentError (ValueError)      bad name, tag, --arch-arg, option
    │   └── InvalidReferenceError              malformed REF string
    ├── NotFoundError (LookupError)
    │   ├── MissingFileError (FileNotFoundError)  an input file or bundle does not exist
    │   ├── ModelNotFoundError                 no model of that name
    │   ├── VersionNotFoundError               no such version / alias / digest
    │   └── ArchitectureNotFoundError          unknown architecture name
    ├── AmbiguousReferenceError (LookupError)  digest prefix matches several versions
    ├── ConflictError (ValueError)             asked for what contradicts the stored version
    ├── CheckpointError (ValueError)           input file cannot be used
    │   ├── NotACheckpointError                not a .pth / .safetensors state dict
    │   └── UnsafeCheckpointError              weights_only refused the pickle
    ├── ArchitectureError (ValueError)         architecture cannot be built as asked
    │   └── ArchitectureMismatchError          weights do not fit the architecture
    ├── IntegrityError (ValueError)            stored bytes do not match their digest
    ├── StorageError (OSError)                 the tensor store cannot be read/written
    │   ├── OutputExistsError (FileExistsError)  pull would overwrite a file
    │   └── StoreReadOnlyError (PermissionError) the store refused a write (read-only credentials)
    └── CatalogError
        ├── SchemaOutOfDateError               run `registry db upgrade`
        └── CatalogReadOnlyError (PermissionError) the catalogue refused a write (SELECT-only role)
"""

from __future__ import annotations

__all__ = [
    "RegistryError",
    "ConfigurationError",
    "InvalidArgumentError",
    "InvalidReferenceError",
    "NotFoundError",
    "MissingFileError",
    "ModelNotFoundError",
    "VersionNotFoundError",
    "ArchitectureNotFoundError",
    "AmbiguousReferenceError",
    "ConflictError",
    "CheckpointError",
    "NotACheckpointError",
    "UnsafeCheckpointError",
    "ArchitectureError",
    "ArchitectureMismatchError",
    "IntegrityError",
    "StorageError",
    "OutputExistsError",
    "StoreReadOnlyError",
    "CatalogError",
    "SchemaOutOfDateError",
    "CatalogReadOnlyError",
]


class RegistryError(Exception):
    """Base class of every error the registry raises on purpose.

    ``cli=`` gives the message as a command-line user should read it, where its
    advice names a flag rather than a Python argument; :attr:`cli_message` is that
    text, else ``str(self)``.
    """

    def __init__(self, *args: object, cli: str | None = None):
        super().__init__(*args)
        self._cli = cli

    @property
    def cli_message(self) -> str:
        return self._cli if self._cli is not None else str(self)

    def add(self, text: str) -> None:
        """Append ``text`` to the message, in both spellings."""
        self.args = (f"{self.args[0] if self.args else ''}{text}", *self.args[1:])
        if self._cli is not None:
            self._cli += text


class ConfigurationError(RegistryError, ValueError):
    """A setting (argument or REGISTRY_* variable) is invalid."""


class InvalidArgumentError(RegistryError, ValueError):
    """A name, tag, architecture argument or option value is malformed."""


class InvalidReferenceError(InvalidArgumentError):
    """A REF string is not one of the accepted forms."""


class NotFoundError(RegistryError, LookupError):
    """Something that was asked for does not exist."""


class MissingFileError(NotFoundError, FileNotFoundError):
    """A file given as input (a checkpoint to push, a bundle to import) does not exist.

    ``errno``, ``strerror`` and ``filename`` are set as ``open()`` would set them.
    """

    def __init__(self, path: object):
        super().__init__(f"no such file: {path}")
        self.errno, self.strerror, self.filename = 2, "No such file or directory", str(path)

    def __str__(self) -> str:
        return str(self.args[0])


class ModelNotFoundError(NotFoundError):
    """No model of that name is in the catalogue."""


class VersionNotFoundError(NotFoundError):
    """The model exists but the version, alias or digest does not."""


class ArchitectureNotFoundError(NotFoundError):
    """The architecture name is not known to the resolver."""


class AmbiguousReferenceError(RegistryError, LookupError):
    """A digest prefix matches more than one version."""


class ConflictError(RegistryError, ValueError):
    """What was asked for contradicts what is stored (a push of weights that are already
    a version, with another description, parent, architecture or tag value)."""


class CheckpointError(RegistryError, ValueError):
    """An input file cannot be read as a state dict."""


class NotACheckpointError(CheckpointError):
    """The file is not a PyTorch checkpoint or safetensors file holding tensors."""


class UnsafeCheckpointError(CheckpointError):
    """``torch.load(weights_only=True)`` refused the file; it is never loaded unsafely."""


class ArchitectureError(RegistryError, ValueError):
    """The architecture cannot be built with the given arguments."""


class ArchitectureMismatchError(ArchitectureError):
    """The weights' keys or shapes do not match the architecture."""

    def __init__(self, message: str, *, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


class IntegrityError(RegistryError, ValueError):
    """Stored bytes do not hash to the digest the catalogue recorded."""


class StorageError(RegistryError, OSError):
    """The tensor store or an output file could not be read or written."""


class OutputExistsError(StorageError, FileExistsError):
    """The output file exists and overwriting was not asked for."""


class StoreReadOnlyError(StorageError, PermissionError):
    """The tensor store refused to write: the credentials may only read (GET and LIST).

    Raised by the first write an operation attempts, before anything was changed."""


class CatalogError(RegistryError):
    """The catalogue database cannot be used."""


class SchemaOutOfDateError(CatalogError):
    """The database schema is older (or newer) than this version of registry."""


class CatalogReadOnlyError(CatalogError, PermissionError):
    """The catalogue refused to write: the database role may only read (SELECT).

    Raised before anything was changed: writing operations ask first, and a refused
    statement rolls its whole transaction back."""
