"""The catalogue: what is stored, under which names, and what happened to it.

``gateway.Gateway`` opens it and ``gateway.Catalog`` holds every statement it runs,
grouped by concern in ``versions``, ``blobs``, ``labels`` and ``history`` (row types
in ``rows``). The schema is defined by the ORM models in ``models`` and changed only
by the Alembic migrations (``schema`` runs them; ``engine`` makes SQLAlchemy engines;
``revision`` names the revision this release needs without importing SQLAlchemy).

Nothing here imports torch, nor anything above the catalogue (pipelines, api, cli).
"""
