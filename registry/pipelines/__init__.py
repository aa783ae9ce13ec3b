"""The pipelines: what ``Registry`` delegates to, one module per job.

- ``push``: read the user's checkpoint (``registry.checkpoints``), fit it to an
  architecture, match what is stored, write one pack, commit the rows (retrying when
  a concurrent writer got in the way);
- ``read``: locate a version's tensors, map them, verify them, rebuild the state dict
  or the module; ``pull`` writes them to a file;
- ``organise``: tags, aliases, descriptions and removal, each recorded as an event;
- ``maintenance``: ``gc``, ``verify`` and the checksum backfill after an upgrade;
- ``bundles``: export and import (the tar format itself is ``bundle_file``);
- ``merge``: what an identical push or an import adds to a version that already has
  the weights.

Pipelines reach the catalogue only through ``catalog.gateway`` and the tensor store
only through the ``storage.base.Store`` interface. They never import ``api`` or
``cli``.
"""
