"""What a push of stored weights, or an import, adds to the version that has them.

Nothing the user asked for is dropped silently: tags the version lacks are added,
and a description or parent where it has none; anything that would replace what it
has is a conflict. Must never import torch, ``api`` or ``cli``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..catalog.gateway import Catalog, VersionRow
from ..errors import ConflictError
from ..keyvalue import format_kwargs


def add_to_existing(
    catalog: Catalog,
    existing: VersionRow,
    *,
    tags: Mapping[str, str],
    description: str | None,
    parent: tuple[str, int] | None,
    arch: tuple[str, Mapping[str, Any]] | None = None,
    strict: bool = True,
) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, Any]]:
    """Give a version that already holds the given weights what the caller asked for.

    ``parent`` is (ref, version id); ``arch`` is (name, arguments) when the caller
    named them. With ``strict`` (a push) a conflict raises :class:`ConflictError` and
    changes nothing; otherwise (an import) the version keeps what it has. Returns one
    phrase per change, one per conflict kept, and the changes as a dict (``tags``,
    ``description``, ``parent``) for the event that records them.
    """
    stored_tags = catalog.tags_of(existing.id)
    conflicts, python_fix, cli_fix = [], [], []
    if arch is not None:
        conflicts += _arch_conflict(existing, arch)
    if description is not None and existing.description not in (None, description):
        conflicts.append(f"its description is {existing.description!r}, not {description!r}")
        python_fix.append("change it with describe()")
        cli_fix.append("change it with `registry describe`")
    parent_id = None
    if parent is not None and existing.parent_id != parent[1]:
        conflict = _parent_conflict(catalog, existing, parent)
        conflicts += conflict
        parent_id = None if conflict else parent[1]
    clashing = [k for k, v in tags.items() if k in stored_tags and stored_tags[k] != v]
    if clashing:
        conflicts.append(
            ", ".join(f"its tag {k} is {stored_tags[k]!r}, not {tags[k]!r}" for k in clashing)
        )
        python_fix.append("change it with tag()")
        cli_fix.append("change it with `registry tag`")
    if conflicts and strict:
        if len(python_fix) < len(conflicts):  # an architecture or a parent: fixed for good
            python_fix.append("to record those, push under another name=")
            cli_fix.append("to record those, push under another --name")
        base = (
            f"identical weights are already stored as {existing.name}:{existing.version}, but "
            + "; ".join(conflicts)
        )
        raise ConflictError(
            f"{base}; nothing was changed ({'; '.join(python_fix)})",
            cli=f"{base}; nothing was changed ({'; '.join(cli_fix)})",
        )
    new_description = description if existing.description is None else None
    new_tags = {k: v for k, v in tags.items() if k not in stored_tags}
    catalog.add_tags(existing.id, new_tags)
    if new_description is not None:
        catalog.set_description(existing.id, new_description)
    if parent_id is not None:
        catalog.set_parent(existing.id, parent_id)
    added: dict[str, Any] = {}
    changed = [f"tag {k}={v}" for k, v in new_tags.items()]
    if new_tags:
        added["tags"] = new_tags
    if new_description is not None:
        added["description"] = new_description
        changed.append(f"description {new_description!r}")
    if parent_id is not None and parent is not None:
        added["parent"] = parent[0]
        changed.append(f"parent {parent[0]}")
    return tuple(changed), tuple(conflicts), added


def _arch_conflict(existing: VersionRow, arch: tuple[str, Mapping[str, Any]]) -> list[str]:
    stored = dict(existing.arch_kwargs)
    if (existing.arch, stored) == (arch[0], dict(arch[1])):
        return []
    return [
        f"its architecture is {existing.arch}({format_kwargs(stored)}), "
        f"not {arch[0]}({format_kwargs(arch[1])})"
    ]


def _parent_conflict(catalog: Catalog, existing: VersionRow, parent: tuple[str, int]) -> list[str]:
    """Why ``parent`` cannot become the version's parent (empty when it can)."""
    if existing.parent_id is not None:
        return [f"its parent is {catalog.version_ref(existing.parent_id)}, not {parent[0]}"]
    if parent[1] == existing.id or existing.id in catalog.ancestors(parent[1]):
        return [f"{parent[0]} descends from it, so it cannot be its parent"]
    return []
