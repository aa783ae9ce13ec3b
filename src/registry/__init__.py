"""registry: a model registry for PyTorch state dicts.

from registry import Registry
reg = Registry()
reg.push("model.pth", arch="resnet18")
model = reg.load("model:1")
"""

from .api import Registry
from .errors import (
    AmbiguousReferenceError,
    ArchitectureError,
    ArchitectureMismatchError,
    ArchitectureNotFoundError,
    CatalogError,
    CheckpointError,
    ConfigurationError,
    IntegrityError,
    InvalidArgumentError,
    InvalidReferenceError,
    ModelNotFoundError,
    NotACheckpointError,
    NotFoundError,
    RegistryError,
    SchemaOutOfDateError,
    StorageError,
    UnsafeCheckpointError,
    VersionNotFoundError,
)
from .records import ModelVersion, PushReport, TensorInfo

__version__ = "0.1.0"

__all__ = [
    "Registry",
    "ModelVersion",
    "PushReport",
    "TensorInfo",
    "RegistryError",
    "AmbiguousReferenceError",
    "ArchitectureError",
    "ArchitectureMismatchError",
    "ArchitectureNotFoundError",
    "CatalogError",
    "CheckpointError",
    "ConfigurationError",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidReferenceError",
    "ModelNotFoundError",
    "NotACheckpointError",
    "NotFoundError",
    "SchemaOutOfDateError",
    "StorageError",
    "UnsafeCheckpointError",
    "VersionNotFoundError",
    "__version__",
]
