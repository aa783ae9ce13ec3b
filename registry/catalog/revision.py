"""The schema revision this release needs, importable without SQLAlchemy."""

#: The head revision of ``registry/migrations``; a test checks it matches Alembic's head.
SCHEMA_REVISION = "0005"
