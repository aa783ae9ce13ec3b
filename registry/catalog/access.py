"""Who may write the catalogue: the privileges a write needs, and a read-only role's grants.

Part of the one gateway (``gateway.Catalog``). A team shares one PostgreSQL catalogue
and gives most people a role that may only read (SELECT): :meth:`write_refusal` is the
cheap question a writing operation asks before it changes anything (the gateway's
``check_writable``), and :meth:`reader_grants` the statements that make a role such a
reader (``registry db grant-reader``). On SQLite, who may write is the database
file's permissions; neither applies there. Must never import torch, SQLAlchemy or
anything above ``catalog``.
"""

from __future__ import annotations

from ..errors import CatalogError, InvalidArgumentError, NotFoundError
from .rows import Statements

#: Every table of the schema but Alembic's (a test checks this against ``models``).
TABLES = (
    "models", "versions", "tensors", "blobs", "packs", "tags", "aliases", "events", "pending_packs",
)  # fmt: skip
#: What a writer needs on each of them (a push inserts, gc and rm delete, tag updates).
WRITE_PRIVILEGES = ("INSERT", "UPDATE", "DELETE")
#: PostgreSQL truncates longer identifiers (NAMEDATALEN - 1 bytes) without a word.
_MAX_IDENTIFIER_BYTES = 63


def quote_identifier(name: str) -> str:
    """``name`` as a PostgreSQL identifier: always quoted, an inner ``"`` doubled, so no
    name can end the identifier and start SQL of its own."""
    return '"' + name.replace('"', '""') + '"'


def check_role_name(role: str) -> None:
    """InvalidArgumentError for a role name PostgreSQL could not hold as given."""
    if not isinstance(role, str) or not role:
        raise InvalidArgumentError("give the name of a database role")
    if "\x00" in role:
        raise InvalidArgumentError("a role name cannot contain a NUL character")
    if len(role.encode()) > _MAX_IDENTIFIER_BYTES:
        raise InvalidArgumentError(
            f"role name {role[:20]!r}... is longer than PostgreSQL's {_MAX_IDENTIFIER_BYTES} bytes"
        )


def _lacking(pairs: list[str]) -> str:
    """What a role lacks, from "table PRIVILEGE" pairs, said briefly."""
    if len(pairs) == len(TABLES) * len(WRITE_PRIVILEGES):
        return "may only read: it has no INSERT, UPDATE or DELETE on any table"
    by_table: dict[str, list[str]] = {}
    for pair in pairs:
        table, privilege = pair.split(" ")
        by_table.setdefault(table, []).append(privilege)
    return "lacks " + "; ".join(f"{', '.join(p)} on {t}" for t, p in by_table.items())


class AccessQueries(Statements):
    """Privileges: whether this connection may write; what a read-only role needs."""

    def write_refusal(self) -> str | None:
        """Why this connection may not write the catalogue, or None if it may.

        One query on PostgreSQL: INSERT, UPDATE and DELETE on every table, USAGE on
        their sequences (new rows' ids), and a transaction that may write (not a
        read-only role, nor a standby server). Always None on SQLite (the gateway
        looks at the file's permissions instead).
        """
        if self.sqlite:
            return None
        tables = ", ".join(f"'{t}'" for t in TABLES)
        privileges = ", ".join(f"'{p}'" for p in WRITE_PRIVILEGES)
        ((user, read_only, missing, sequences),) = self.execute(
            "SELECT current_user, current_setting('transaction_read_only') = 'on', "
            "(SELECT string_agg(t || ' ' || p, ',' ORDER BY t, p) "
            f" FROM unnest(ARRAY[{tables}]) AS t, unnest(ARRAY[{privileges}]) AS p "
            " WHERE NOT has_table_privilege(t, p)), "
            "(SELECT string_agg(s.relname, ', ' ORDER BY s.relname) "
            " FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
            " WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass "
            f" AND d.refobjid IN (SELECT to_regclass(t) FROM unnest(ARRAY[{tables}]) AS t) "
            # (CASE: the planner may test rows before the join keeps only sequences)
            " AND CASE WHEN s.relkind = 'S' THEN NOT has_sequence_privilege(s.oid, 'USAGE') "
            " ELSE false END)"
        )
        if read_only:
            return "transactions of this connection are read-only"
        if missing:
            return f"the role {user} {_lacking(missing.split(','))}"
        if sequences:
            return f"the role {user} lacks USAGE on the sequences {sequences}"
        return None

    def reader_grants(self, role: str) -> list[str]:
        """The statements that let ``role`` read this catalogue and nothing more.

        CONNECT on the database, USAGE on the schema holding the tables, SELECT on
        every table in it, and SELECT by default on the tables its owner creates later
        (a migration's new table is readable too). Identifiers are quoted
        (:func:`quote_identifier`). CatalogError on SQLite, whose read-only access is
        the file's permissions.
        """
        if self.sqlite:
            raise CatalogError(
                "grant-reader is for a PostgreSQL catalogue: on SQLite, who may write is "
                "the database file's permissions (give readers read, not write, access "
                "to it)"
            )
        check_role_name(role)
        ((database, schema, owner),) = self.execute(
            "SELECT current_database(), n.nspname, pg_get_userbyid(c.relowner) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass('versions')"
        )
        who = quote_identifier(role)
        schema_q = quote_identifier(schema)
        return [
            f"GRANT CONNECT ON DATABASE {quote_identifier(database)} TO {who};",
            f"GRANT USAGE ON SCHEMA {schema_q} TO {who};",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema_q} TO {who};",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {quote_identifier(owner)} IN SCHEMA "
            f"{schema_q} GRANT SELECT ON TABLES TO {who};",
        ]

    def grant_reader(self, role: str) -> list[str]:
        """Run :meth:`reader_grants` (inside a write transaction); the statements run.

        NotFoundError if there is no such role (nothing granted).
        """
        statements = self.reader_grants(role)
        if not self.execute("SELECT 1 FROM pg_roles WHERE rolname = ?", (role,)):
            raise NotFoundError(
                f"there is no database role {role!r}: create it first "
                f"(CREATE ROLE {quote_identifier(role)} LOGIN), then grant it reading"
            )
        for statement in statements:
            self.execute(statement.rstrip(";"))
        return statements
