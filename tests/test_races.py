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
