"""Export and import of tar bundles between registries, including hostile bundles."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
import tarfile
import uuid
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from conftest import assert_same_state, make_model, run_cli

from registry import Registry
from registry.errors import RegistryError

SQ = "squeezenet1_1"
HEAD = ["classifier.1.weight", "classifier.1.bias"]


def sq_state(seed: int, **kwargs) -> dict[str, torch.Tensor]:
    return make_model(SQ, seed, **kwargs).state_dict()


def tuned_from(state) -> OrderedDict:
    return OrderedDict(state, **{key: state[key] + 0.25 for key in HEAD})


@pytest.fixture
def source(reg: Registry) -> dict:
    """base:1, base:2 (num_classes=10, tags, alias, description), tuned:1 (child of base:2)."""
    reg.push(sq_state(1), "base", arch=SQ)
    base = sq_state(2, num_classes=10)
    reg.push(
        base,
        "base",
        arch=SQ,
        arch_kwargs={"num_classes": 10},
        tags={"stage": "prod"},
        description="the base",
    )
    reg.alias("base:2", "prod")
    tuned = tuned_from(base)
    reg.push(
        tuned,
        "tuned",
        arch=SQ,
        arch_kwargs={"num_classes": 10},
        parent="base:2",
        tags={"task": "x"},
    )
    reg.alias("tuned:1", "candidate")
    return {"base:2": base, "tuned:1": tuned}


@pytest.fixture
def bundle(reg: Registry, source, tmp_path: Path) -> Path:
    path = tmp_path / "bundle.tar"
    report = reg.export(["base:2", "tuned:1"], path)
    assert path.is_file() and sorted(report.versions) == ["base:2", "tuned:1"]
    return path


@pytest.fixture
def other(tmp_path: Path):
    with Registry(home=tmp_path / "other") as registry:
        yield registry


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def same_metadata(a, b) -> None:
    for field in (
        "name",
        "digest",
        "arch",
        "arch_kwargs",
        "description",
        "tags",
        "aliases",
        "param_count",
        "total_bytes",
        "tensor_count",
        "tensors",
        "pushed_by",
        "pushed_host",
        "source_path",
        "git_commit",
        "git_dirty",
        "registry_version",
    ):
        assert getattr(a, field) == getattr(b, field), field
    # The import is b's creation here; when a was created is kept as its origin.
    assert b.origin_created_at == (a.origin_created_at or a.created_at)
    assert b.created_at > a.created_at


def test_bundle_layout(reg: Registry, bundle: Path):
    with tarfile.open(bundle) as tar:
        members = tar.getmembers()
        assert members[0].name == "manifest.json"
        assert all(m.isreg() for m in members)
        blobs = {}
        for m in members[1:]:
            match = re.fullmatch(r"blobs/([0-9a-f]{64})", m.name)
            assert match, m.name
            blobs[match[1]] = tar.extractfile(m).read()
        json.loads(tar.extractfile(members[0]).read())
    for digest, data in blobs.items():
        assert hashlib.sha256(data).hexdigest() == digest
    used = {t.digest for ref in ("base:2", "tuned:1") for t in reg.get(ref).tensors}
    assert set(blobs) == used  # every tensor once, nothing from base:1


def test_import_into_an_empty_registry(reg: Registry, source, bundle: Path, other: Registry):
    report = other.import_bundle(bundle)
    assert sorted(report.versions) == [("base:2", "base:2", True), ("tuned:1", "tuned:1", True)]
    used = {t.digest for ref in source for t in reg.get(ref).tensors}
    assert report.tensors_written == len(used)
    raw = sum({t.digest: t.nbytes for ref in source for t in reg.get(ref).tensors}.values())
    assert raw <= report.bytes_written <= raw + 64 * len(used) + 4096
    for ref, state in source.items():
        same_metadata(reg.get(ref), other.get(ref))
        assert other.get(ref).parent == reg.get(ref).parent
        assert_same_state(other.load_state_dict(ref, verify="sha256"), state)
    assert other.get("base:prod").ref == "base:2" and other.get("tuned:candidate").ref == "tuned:1"
    assert [v.ref for v in other.lineage("tuned:1")] == ["tuned:1", "base:2"]
    assert other.verify().ok
    assert other.push(sq_state(9), "base", arch=SQ).ref == "base:3"

    listed = [v.ref for v in other.list()]
    packs = files_under(other.settings.home / "objects")
    again = other.import_bundle(bundle)
    assert sorted(again.versions) == [("base:2", "base:2", False), ("tuned:1", "tuned:1", False)]
    assert again.bytes_written == 0 and again.tensors_written == 0
    assert [v.ref for v in other.list()] == listed
    assert files_under(other.settings.home / "objects") == packs


def test_import_takes_the_next_free_numbers(source, bundle: Path, other: Registry):
    other.push(sq_state(5), "base", arch=SQ)
    other.push(sq_state(6), "base", arch=SQ)
    report = other.import_bundle(bundle)
    assert sorted(report.versions) == [("base:2", "base:3", True), ("tuned:1", "tuned:1", True)]
    assert other.get("tuned:1").parent == "base:3"
    assert other.get("base:prod").ref == "base:3" and other.get("base:3").tags == {"stage": "prod"}
    assert_same_state(other.load_state_dict("base:3"), source["base:2"])


def test_import_writes_only_missing_tensors(source, bundle: Path, other: Registry):
    other.push(source["base:2"], "base", arch=SQ, arch_kwargs={"num_classes": 10})
    report = other.import_bundle(bundle)
    assert sorted(report.versions) == [("base:2", "base:1", False), ("tuned:1", "tuned:1", True)]
    new = sum(source["tuned:1"][k].numel() * 4 for k in HEAD)
    assert report.tensors_written == 2
    assert new <= report.bytes_written <= new + 4096
    assert other.get("tuned:1").parent == "base:1"
    assert_same_state(other.load_state_dict("tuned:1", verify="sha256"), source["tuned:1"])


# -- hostile bundles ------------------------------------------------------------------


def read_members(path: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]


def write_members(path: Path, members) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info = copy.copy(info)
            if data is None:
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def largest_blob(members) -> int:
    return max(range(1, len(members)), key=lambda i: len(members[i][1]))


def flip_a_byte(members):
    i = largest_blob(members)
    data = bytearray(members[i][1])
    data[len(data) // 2] ^= 0xFF
    return [*members[:i], (members[i][0], bytes(data)), *members[i + 1 :]]


def edit_manifest(edit):
    def mutate(members):
        manifest = json.loads(members[0][1])
        edit(manifest)
        return [(members[0][0], json.dumps(manifest).encode()), *members[1:]]

    return mutate


def first_version(edit):
    return edit_manifest(lambda m: edit(m["versions"][0]))


def unlist_largest_blob(members):
    """Drop a blob from the tar and from the manifest's blob list; versions still use it."""
    i = largest_blob(members)
    digest = members[i][0].name.removeprefix("blobs/")
    kept = [m for j, m in enumerate(members) if j != i]
    return edit_manifest(lambda m: m["blobs"].pop(digest))(kept)


EVIL = f"/tmp/evil-{uuid.uuid4().hex}"

HOSTILE = {
    "dotdot": lambda ms: [*ms, regular("../evil", b"x")],
    "dotdot-inside": lambda ms: [*ms, regular("blobs/../../evil", b"x")],
    "absolute": lambda ms: [*ms, regular(EVIL, b"x")],
    "symlink": lambda ms: [*ms, link("evil-link", "/etc/passwd", tarfile.SYMTYPE)],
    "symlink-blob": lambda ms: [*ms[:-1], link(ms[-1][0].name, "/etc/passwd", tarfile.SYMTYPE)],
    "hardlink-blob": lambda ms: [*ms[:-1], link(ms[-1][0].name, "manifest.json", tarfile.LNKTYPE)],
    "tampered-blob": flip_a_byte,
    "missing-blob": lambda ms: [m for i, m in enumerate(ms) if i != largest_blob(ms)],
    "not-json": lambda ms: [(ms[0][0], b"{not json"), *ms[1:]],
    "manifest-list": lambda ms: [(ms[0][0], b"[]"), *ms[1:]],
    "no-versions": edit_manifest(lambda m: m.pop("versions")),
    "no-arch": first_version(lambda v: v.pop("arch")),
    "no-tensors": first_version(lambda v: v.pop("tensors")),
    "version-str": first_version(lambda v: v.update(version="2")),
    "tags-list": first_version(lambda v: v.update(tags=["stage"])),
    "tensors-str": first_version(lambda v: v.update(tensors="all")),
    "shape-str": first_version(lambda v: v["tensors"][0].__setitem__(2, "3x3")),
    "bad-alias": first_version(lambda v: v.update(aliases=["3"])),
    "bad-digest": first_version(lambda v: v.update(digest="0" * 64)),
    "unlisted-blob": lambda ms: unlist_largest_blob(ms),
    "unknown-tensor-digest": first_version(lambda v: v["tensors"][0].__setitem__(3, "a" * 64)),
}


def test_rewritten_bundle_still_imports(source, bundle: Path, other: Registry, tmp_path: Path):
    """The control for the cases below: re-writing an untouched bundle keeps it valid."""
    copy_ = tmp_path / "copy.tar"
    write_members(copy_, read_members(bundle))
    assert sorted(t for _, t, _ in other.import_bundle(copy_).versions) == ["base:2", "tuned:1"]


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_bundles_import_nothing(
    case: str, bundle: Path, other: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    bad = tmp_path / "bad" / "inner" / "bad.tar"
    bad.parent.mkdir(parents=True)
    write_members(bad, HOSTILE[case](read_members(bundle)))
    other.push(sq_state(3), "existing", arch=SQ)
    objects = other.settings.home / "objects"
    listed, stored = [v.ref for v in other.list()], files_under(objects)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(RegistryError):
        other.import_bundle(bad)
    assert [v.ref for v in other.list()] == listed
    assert files_under(objects) == stored
    assert list(work.iterdir()) == [] and not Path(EVIL).exists()
    assert not (tmp_path / "bad" / "evil").exists() and not (tmp_path / "evil").exists()


def test_export_and_import_commands(home: Path, source, tmp_path: Path):
    path = tmp_path / "cli.tar"
    exported = run_cli("export", "base:2", "tuned:candidate", "-o", str(path), "--json", check=True)
    assert path.is_file() and json.loads(exported.stdout)
    target = {"REGISTRY_HOME": str(tmp_path / "cli-other")}
    imported = run_cli("import", str(path), "--json", env=target, check=True)
    data = json.loads(imported.stdout)
    assert data["tensors_written"] > 0
    assert json.dumps(data).count("tuned:1") >= 1
    with Registry(home=tmp_path / "cli-other") as other:
        assert sorted(v.ref for v in other.list()) == ["base:2", "tuned:1"]
        assert_same_state(other.load_state_dict("tuned:1"), source["tuned:1"])

    bad = tmp_path / "bad.tar"
    write_members(bad, flip_a_byte(read_members(path)))
    refused = run_cli("import", str(bad), env={"REGISTRY_HOME": str(tmp_path / "cli-third")})
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: ") and len(refused.stderr.strip().splitlines()) == 1
    with Registry(home=tmp_path / "cli-third") as third:
        assert third.list() == []


def test_an_old_origin_date_keeps_list_log_and_filters_working(
    bundle: Path, other: Registry, tmp_path: Path
):
    """Dates before year 1000 are stored with a four-digit year (as SQLAlchemy writes
    them), so they read back, sort and filter like any other."""
    from datetime import datetime, timezone

    old = tmp_path / "old.tar"
    write_members(
        old,
        first_version(lambda v: v.update(origin_created_at="0999-01-02T03:04:05+00:00"))(
            read_members(bundle)
        ),
    )
    report = other.import_bundle(old)
    first = report.versions[0][1]
    assert other.get(first).origin_created_at == datetime(999, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert first in [v.ref for v in other.list()]
    pushes = [e for e in other.log(first) if e.kind == "import"]
    assert pushes and pushes[0].after["origin_created_at"].startswith("0999-01-02")
    assert other.list(before="1000-01-01") == []  # created_at is the import's own time


def test_only_what_a_concurrent_writer_causes_is_retried():
    """A foreign key or unique clash is Contention (the pipelines start over); any other
    violation is a plain CatalogError that no retry would cure."""
    import sqlite3

    from registry.catalog.rows import Contention, _as_catalog_error
    from registry.errors import CatalogError

    fk = _as_catalog_error(sqlite3.IntegrityError("FOREIGN KEY constraint failed"))
    unique = _as_catalog_error(
        sqlite3.IntegrityError("UNIQUE constraint failed: versions.model_id, versions.digest")
    )
    not_null = _as_catalog_error(
        sqlite3.IntegrityError("NOT NULL constraint failed: versions.arch")
    )
    assert isinstance(fk, Contention) and isinstance(unique, Contention)
    assert isinstance(not_null, CatalogError) and not isinstance(not_null, Contention)
    assert "try again" not in str(not_null)
