"""registry: a model registry for PyTorch state dicts.

from registry import Registry
reg = Registry()
reg.push("model.pth", arch="resnet18")
model = reg.load("model:1")
"""

from typing import TYPE_CHECKING

from .errors import (
    AmbiguousReferenceError,
    ArchitectureError,
    ArchitectureMismatchError,
    ArchitectureNotFoundError,
    CatalogError,
    CatalogReadOnlyError,
    CheckpointError,
    ConfigurationError,
    ConflictError,
    IntegrityError,
    InvalidArgumentError,
    InvalidReferenceError,
    MissingFileError,
    ModelNotFoundError,
    NotACheckpointError,
    NotFoundError,
    OutputExistsError,
    RegistryError,
    SchemaOutOfDateError,
    StorageError,
    StoreReadOnlyError,
    UnsafeCheckpointError,
    VersionNotFoundError,
)
from .plugins import architecture, register_architecture, unregister_architecture
from .records import Diff, Event, ModelVersion, PushReport, TensorInfo

if TYPE_CHECKING:
    from .api import Registry

__version__ = "0.1.0"


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # Registry pulls in SQLAlchemy; importing it on first use keeps `registry --help` quick.
    if name == "Registry":
        from .api import Registry

        return Registry
    raise AttributeError(f"module 'registry' has no attribute {name!r}")


__all__ = [
    "Registry",
    "architecture",
    "register_architecture",
    "unregister_architecture",
    "Diff",
    "Event",
    "ModelVersion",
    "PushReport",
    "TensorInfo",
    "RegistryError",
    "AmbiguousReferenceError",
    "ArchitectureError",
    "ArchitectureMismatchError",
    "ArchitectureNotFoundError",
    "CatalogError",
    "CatalogReadOnlyError",
    "CheckpointError",
    "ConfigurationError",
    "ConflictError",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidReferenceError",
    "MissingFileError",
    "ModelNotFoundError",
    "NotACheckpointError",
    "NotFoundError",
    "OutputExistsError",
    "SchemaOutOfDateError",
    "StorageError",
    "StoreReadOnlyError",
    "UnsafeCheckpointError",
    "VersionNotFoundError",
    "__version__",
]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
