"""The registry's exception tree.

Every error the registry raises on purpose derives from :class:`RegistryError`, so
callers can catch one class; each also subclasses the matching built-in
(``LookupError``, ``ValueError``, ``OSError``) so generic handlers keep working. The
CLI prints ``str(error)`` as a one-line message and exits with code 1.

    RegistryError
    ├── ConfigurationError (ValueError)        bad REGISTRY_* setting
    ├── InvalidArgumentError (ValueError)      bad name, tag, --arch-arg, option
    │   └── InvalidReferenceError              malformed REF string
    ├── NotFoundError (LookupError)
    │   ├── ModelNotFoundError                 no model of that name
    │   ├── VersionNotFoundError               no such version / alias / digest
    │   └── ArchitectureNotFoundError          unknown architecture name
    ├── AmbiguousReferenceError (LookupError)  digest prefix matches several versions
    ├── CheckpointError (ValueError)           input file cannot be used
    │   ├── NotACheckpointError                not a .pth / .safetensors state dict
    │   └── UnsafeCheckpointError              weights_only refused the pickle
    ├── ArchitectureError (ValueError)         architecture cannot be built as asked
    │   └── ArchitectureMismatchError          weights do not fit the architecture
    ├── IntegrityError (ValueError)            stored bytes do not match their digest
    ├── StorageError (OSError)                 the tensor store cannot be read/written
    └── CatalogError
        └── SchemaOutOfDateError               run `registry db upgrade`
"""

from __future__ import annotations

__all__ = [
    "RegistryError",
    "ConfigurationError",
    "InvalidArgumentError",
    "InvalidReferenceError",
    "NotFoundError",
    "ModelNotFoundError",
    "VersionNotFoundError",
    "ArchitectureNotFoundError",
    "AmbiguousReferenceError",
    "CheckpointError",
    "NotACheckpointError",
    "UnsafeCheckpointError",
    "ArchitectureError",
    "ArchitectureMismatchError",
    "IntegrityError",
    "StorageError",
    "CatalogError",
    "SchemaOutOfDateError",
]


class RegistryError(Exception):
    """Base class of every error the registry raises on purpose."""


class ConfigurationError(RegistryError, ValueError):
    """A setting (argument or REGISTRY_* variable) is invalid."""


class InvalidArgumentError(RegistryError, ValueError):
    """A name, tag, architecture argument or option value is malformed."""


class InvalidReferenceError(InvalidArgumentError):
    """A REF string is not one of the accepted forms."""


class NotFoundError(RegistryError, LookupError):
    """Something that was asked for does not exist."""


class ModelNotFoundError(NotFoundError):
    """No model of that name is in the catalogue."""


class VersionNotFoundError(NotFoundError):
    """The model exists but the version, alias or digest does not."""


class ArchitectureNotFoundError(NotFoundError):
    """The architecture name is not known to the resolver."""


class AmbiguousReferenceError(RegistryError, LookupError):
    """A digest prefix matches more than one version."""


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


class CatalogError(RegistryError):
    """The catalogue database cannot be used."""


class SchemaOutOfDateError(CatalogError):
    """The database schema is older (or newer) than this version of registry."""
