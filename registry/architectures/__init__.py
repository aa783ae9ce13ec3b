"""Architecture names -> ``nn.Module``: resolve, build on the meta device, check weights by
torch's own ``load_state_dict``, load into, and recognise from weights.

Every torchvision model in ``torchvision.models.list_models()`` is known by its
name, built with ``weights=None`` (and ``weights_backbone=None`` where the builder
has it) so nothing is ever downloaded. Modules are built on the meta device: no
memory, no random init, and the stored tensors are assigned in place.

This file only gathers the package's names for its callers (``from registry import
architectures``); each module owns one part, importing only those listed before it:

- ``resolving``: a name -> a builder (registered, timm, import path, plugin, torchvision)
- ``building``: meta-device builds and the cached template each load copies
- ``signatures``: key/shape signatures, parameter counts, ``num_classes`` from a head
- ``checking``: torch's own verdict on weights (:class:`Misfit`), module versions
- ``loading``: :func:`instantiate`, weights into a fresh module
- ``describing``: the name and arguments that rebuild a module object
- ``identifying``: ranking known architectures against weights; the signature cache

The names that exist before anything is built (registered in code, plugins,
torchvision's) are ``registry.plugins``, below this package, which it must never
import back. Importing this package imports torch: ``registry/__init__.py`` and the
catalogue-only commands must import it only inside functions.
"""

from __future__ import annotations

from ..plugins import is_builtin
from .building import build, parameter_count, skeleton
from .checking import SHOWN_KEYS, Misfit, load_by_torch, misfit, module_versions, with_metadata
from .checking import _value_blind as _value_blind  # for tests
from .describing import describe_module
from .identifying import Match, exact_fits, identify, signature_cache_path
from .identifying import _torchvision_signatures as _torchvision_signatures  # for tests
from .loading import instantiate
from .resolving import (
    Architecture,
    available,
    import_module,
    registering_module,
    resolve,
    resolve_stored,
)
from .signatures import Signature, head_size_fix, num_classes_hint, signature

__all__ = [
    "SHOWN_KEYS",
    "Architecture",
    "Match",
    "Misfit",
    "Signature",
    "available",
    "build",
    "describe_module",
    "exact_fits",
    "head_size_fix",
    "identify",
    "import_module",
    "instantiate",
    "is_builtin",
    "load_by_torch",
    "misfit",
    "module_versions",
    "num_classes_hint",
    "parameter_count",
    "registering_module",
    "resolve",
    "resolve_stored",
    "signature",
    "signature_cache_path",
    "skeleton",
    "with_metadata",
]
