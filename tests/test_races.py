"""Changes that meet a concurrent removal: the user reads that the version was
removed, never a foreign-key error, and nothing is half done. Found by the soak test
(tests/test_soak.py); here each race is made to happen every time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from archs_helper.models import TinyNet
from conftest import assert_same_state

from registry import Registry, _faults
from registry.catalog.gateway import Catalog
from registry.errors import VersionNotFoundError

BACKENDS = ("local", "team")
ARCH = "archs_helper.models:TinyNet"


def tiny(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return TinyNet(16).state_dict()


def push(reg: Registry, seed: int, name: str = "m", **kw):
    return reg.push(tiny(seed), name, arch=ARCH, arch_kwargs={"hidden": 16}, **kw)


def test_a_parent_removed_during_the_push(
    reg: Registry, home: Path, monkeypatch: pytest.MonkeyPatch
):
    """The parent goes after the push found it and before its commit: the push fails
    saying so and stores nothing; it never names another version as the parent (SQLite
    gives the id of a removed newest version to the next one)."""
    push(reg, 1)
    removed = []

    def hook(name: str) -> None:
        if name in ("pack.renamed", "object.complete_multipart_upload", "object.put_object"):
            if not removed:
                other = Registry(home=home)
                removed.append(other.remove("m:1"))
                other.close()

    monkeypatch.setattr(_faults, "hook", hook)
    with pytest.raises(VersionNotFoundError, match="parent m:1 was removed"):
        push(reg, 2, parent="m:1")
    monkeypatch.setattr(_faults, "hook", None)
    assert removed and reg.list() == []
    assert reg.gc(grace=0).orphan_files_removed == 0  # the push took its pack away
    mv = push(reg, 2)
    assert mv.ref == "m:2" and mv.parent is None
    assert [v.ref for v in reg.lineage("m:2")] == ["m:2"]
    assert_same_state(reg.load_state_dict("m:2"), tiny(2))


CHANGES = {
    "tag": lambda reg, ref: reg.tag(ref, {"k": "v"}),
    "untag": lambda reg, ref: reg.untag(ref, ["old"]),
    "alias": lambda reg, ref: reg.alias(ref, "prod"),
    "describe": lambda reg, ref: reg.describe(ref, "text"),
    "remove": lambda reg, ref: reg.remove(ref),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_to_a_version_removed_meanwhile(
    change: str, reg: Registry, home: Path, backend: str, monkeypatch: pytest.MonkeyPatch
):
    """Another process removes the version between the change's look-up and its first
    write: on PostgreSQL a foreign-key clash, which the change retries and then reads
    that the version was removed; never a database error, and nothing half done. (On
    SQLite the write lock keeps the removal out until the change commits: no race.)"""
    push(reg, 1)
    reg.tag("m:1", {"old": "1"})
    real = Catalog.resolve
    other = Registry(home=home)

    def resolve(self, parsed):
        row = real(self, parsed)
        monkeypatch.setattr(Catalog, "resolve", real)
        if backend == "team":
            other.remove("m:1")  # committed by another connection meanwhile
        return row

    monkeypatch.setattr(Catalog, "resolve", resolve)
    try:
        if backend == "team":
            with pytest.raises(VersionNotFoundError, match="m:1 was removed"):
                CHANGES[change](reg, "m:1")
            assert reg.list() == []
            assert [e.kind for e in reg.log("m")].count("remove") == 1
        else:
            CHANGES[change](reg, "m:1")
    finally:
        other.close()


@pytest.mark.parametrize("tags", [{}, {"run": "again"}], ids=["same", "more-tags"])
def test_a_push_of_stored_weights_meets_their_removal(
    tags: dict[str, str], reg: Registry, home: Path, monkeypatch: pytest.MonkeyPatch
):
    """A push finds its weights stored as m:1 and another process removes m:1 before
    the push reads it back (found by the soak on PostgreSQL, where a write transaction
    reads each statement afresh): the push's look-up holds the version, so the removal
    waits for the push's commit; the push returns m:1 with its tags, then m:1 goes.
    (Before, the push failed "removed meanwhile", or made m:2 after a clash.)"""
    import threading

    push(reg, 1)
    real = Catalog.version_by_digest
    other = Registry(home=home)
    removal: list[object] = []

    def removes() -> None:
        try:
            removal.append(other.remove("m:1"))
        except Exception as exc:  # pragma: no cover - shown by the assertion below
            removal.append(exc)

    thread = threading.Thread(target=removes)

    def version_by_digest(self, name, digest, hold=False):
        row = real(self, name, digest, hold)
        monkeypatch.setattr(Catalog, "version_by_digest", real)
        thread.start()  # the removal runs now, while this push is between statements
        thread.join(1.0)  # held: it waits for this push's commit (without: it commits)
        return row

    monkeypatch.setattr(Catalog, "version_by_digest", version_by_digest)
    try:
        mv = push(reg, 1, tags=tags)
        thread.join(30)
    finally:
        other.close()
    assert mv.ref == "m:1" and mv.tags == tags
    assert len(removal) == 1 and not isinstance(removal[0], Exception), removal
    assert reg.list() == []
    updated = ["push-update"] if tags else []
    assert [e.kind for e in reg.log("m")] == ["remove", *updated, "push"]  # newest first


def test_a_wal_file_gone_for_a_moment_is_no_refusal(
    reg: Registry, home: Path, backend: str, monkeypatch: pytest.MonkeyPatch
):
    """SQLite removes -shm when its last connection closes and makes it again on the
    next open; a writability check that met the gap refused a push as read-only (found
    by the soak test). Here the access check misses the file once, as in that gap:
    the push goes on; a file that really refuses writes is still refused."""
    if backend == "team":
        pytest.skip("the WAL files belong to the SQLite catalogue")
    import os

    from registry import _files
    from registry.errors import CatalogReadOnlyError

    push(reg, 1)
    shm = home / "registry.db-shm"
    assert shm.exists()
    real = os.access
    missed: list[str] = []

    def access(path, mode, **kw):
        if str(path) == str(shm) and not missed:
            missed.append(str(path))
            return False  # as if it had been removed and made again meanwhile
        return real(path, mode, **kw)

    monkeypatch.setattr(_files.os, "access", access)
    assert push(reg, 2).ref == "m:2" and missed
    monkeypatch.setattr(
        _files.os, "access", lambda path, mode, **kw: str(path) != str(shm) and real(path, mode)
    )
    with pytest.raises(CatalogReadOnlyError, match="registry.db-shm is not writable"):
        push(reg, 3)
