"""What a version is called and how it is described: tags, aliases, descriptions.

Part of the one gateway (``gateway.Catalog``); these never touch weights. Must never
import torch, SQLAlchemy or anything above ``catalog``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .rows import Statements, marks


class LabelQueries(Statements):
    """Tags, aliases and descriptions (writes go inside a write transaction)."""

    def tags_of(self, version_id: int) -> dict[str, str]:
        return dict(self.execute("SELECT key, value FROM tags WHERE version_id = ?", (version_id,)))

    def set_tags(self, version_id: int, tags: Mapping[str, str]) -> None:
        """Add or overwrite tags of a version."""
        self.execute_many(
            "INSERT INTO tags (version_id, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (version_id, key) DO UPDATE SET value = excluded.value",
            [(version_id, key, value) for key, value in tags.items()],
        )

    def add_tags(self, version_id: int, tags: Mapping[str, str]) -> None:
        """Add tags the version does not have (the caller checked it has none of these keys)."""
        self.execute_many(
            "INSERT INTO tags (version_id, key, value) VALUES (?, ?, ?)",
            [(version_id, key, value) for key, value in tags.items()],
        )

    def remove_tags(self, version_id: int, keys: Iterable[str]) -> list[str]:
        """Remove tags by key; returns the keys that were there."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return []
        present = {
            k
            for (k,) in self.execute(
                f"SELECT key FROM tags WHERE version_id = ? AND key IN ({marks(len(keys))})",
                (version_id, *keys),
            )
        }
        self.execute_many(
            "DELETE FROM tags WHERE version_id = ? AND key = ?",
            [(version_id, key) for key in keys if key in present],
        )
        return [k for k in keys if k in present]

    def alias_target(self, model_id: int, alias: str) -> tuple[int, int] | None:
        """(version id, version number) the alias points at, or None if there is no alias."""
        rows = self.execute(
            "SELECT v.id, v.version FROM aliases a JOIN versions v ON v.id = a.version_id "
            "WHERE a.model_id = ? AND a.alias = ?",
            (model_id, alias),
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    def set_alias(self, model_id: int, alias: str, version_id: int) -> None:
        """Point ``alias`` of a model at a version, moving it from any other version."""
        self.execute(
            "INSERT INTO aliases (model_id, alias, version_id) VALUES (?, ?, ?) "
            "ON CONFLICT (model_id, alias) DO UPDATE SET version_id = excluded.version_id",
            (model_id, alias, version_id),
        )

    def delete_alias(self, model_id: int, alias: str) -> None:
        self.execute("DELETE FROM aliases WHERE model_id = ? AND alias = ?", (model_id, alias))

    def set_description(self, version_id: int, description: str | None) -> None:
        self.execute("UPDATE versions SET description = ? WHERE id = ?", (description, version_id))
