"""Provenance and history: who pushed each version from where, and every later change.

Pushes go through the Python API (tiny models, fast); the history is read back through
the API and the installed `registry` command, which must not import torch for it.
"""

from __future__ import annotations

import getpass
import io
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import tarfile
from datetime import datetime
from importlib.metadata import version as dist_version
from pathlib import Path

import pytest
import torch
from archs_helper.models import TinyNet
from conftest import IN_PROCESS, run_cli

from registry import NotACheckpointError, Registry, config, provenance
from registry.errors import InvalidArgumentError, ModelNotFoundError, VersionNotFoundError

TINY = "archs_helper.models:TinyNet"


def tiny_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return TinyNet().state_dict()


@pytest.fixture
def outside_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder in no git repository, and REGISTRY_USER=alice."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert provenance.git_state() == (None, None)  # pytest's tmp folders are in no repository
    monkeypatch.setenv("REGISTRY_USER", "alice")
    return work


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=a@b", "-c", "user.name=a", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def kinds(events) -> list[tuple[str, str]]:
    return [(e.kind, e.ref) for e in events]


# -- what a push records ---------------------------------------------------------------


def test_push_records_user_host_file_and_registry_version(reg: Registry, outside_git: Path):
    path = outside_git / "tiny.pth"
    torch.save(tiny_state(0), path)
    mv = reg.push(path, arch=TINY)
    assert mv.pushed_by == "alice"
    assert mv.pushed_host == socket.gethostname()
    assert mv.source_path == str(path.absolute())
    assert mv.registry_version == dist_version("registry")
    assert (mv.git_commit, mv.git_dirty) == (None, None)  # no repository here
    assert mv.origin_created_at is None and mv.arch_module is None
    stored = reg.get("tiny:1").to_dict(tensors=False)
    assert stored["pushed_by"] == "alice" and stored["source_path"] == str(path.absolute())

    # A relative path is recorded absolute; a state dict has no file.
    torch.save(tiny_state(1), outside_git / "rel.pth")
    assert reg.push("rel.pth", "tiny", arch=TINY).source_path == str(outside_git / "rel.pth")
    assert reg.push(tiny_state(2), "tiny", arch=TINY).source_path is None


def test_the_login_name_without_registry_user(reg: Registry, outside_git: Path,
                                              monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("REGISTRY_USER")
    for variable in ("USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("LOGNAME", "carol")  # the first place getpass.getuser() looks
    assert reg.push(tiny_state(0), "tiny", arch=TINY).pushed_by == "carol"
    monkeypatch.setenv("REGISTRY_USER", "  ")  # blank: not a user name
    assert config.acting_user() == "carol" == getpass.getuser()

    def no_login():
        raise OSError("no login name")

    monkeypatch.setattr(getpass, "getuser", no_login)
    assert config.acting_user() == "unknown"
    assert reg.push(tiny_state(1), "tiny", arch=TINY).pushed_by == "unknown"


def test_git_commit_and_dirty_flag_of_the_working_folder(reg: Registry, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "train.py").write_text("lr = 0.1\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    head = git(repo, "rev-parse", "HEAD")
    (repo / "notes.txt").write_text("untracked files do not make the tree dirty\n")
    monkeypatch.chdir(repo / "src")  # a subfolder of the repository counts

    clean = reg.push(tiny_state(0), "tiny", arch=TINY)
    assert (clean.git_commit, clean.git_dirty) == (head, False)

    (repo / "train.py").write_text("lr = 0.01\n")  # a tracked file changed, not committed
    dirty = reg.push(tiny_state(1), "tiny", arch=TINY)
    assert (dirty.git_commit, dirty.git_dirty) == (head, True)
    assert reg.get("tiny:2").git_dirty is True and reg.get("tiny:1").git_dirty is False

    git(repo, "commit", "-q", "-am", "second")
    later = reg.push(tiny_state(2), "tiny", arch=TINY)
    assert later.git_commit == git(repo, "rev-parse", "HEAD") != head
    assert later.git_dirty is False

    # No git on the PATH: the push goes on without it.
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    nogit = reg.push(tiny_state(3), "tiny", arch=TINY)
    assert nogit.version == 4 and (nogit.git_commit, nogit.git_dirty) == (None, None)


def test_git_is_asked_without_touching_the_users_repository(reg: Registry, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    """A push reads the repository's state and never writes its index or leaves its
    index.lock: plain `git status` refreshes (rewrites) a stale index, under that lock,
    and a push that ends git early would leave the lock behind for the user's next
    commit to fail on."""
    import os
    import time

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("lr = 0.1\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    index = repo / ".git" / "index"
    later = time.time() + 5
    os.utime(repo / "train.py", (later, later))  # same content, new stat: index is stale
    before = index.stat().st_mtime_ns, index.read_bytes()
    monkeypatch.chdir(repo)

    pushed = reg.push(tiny_state(0), "tiny", arch=TINY)
    assert pushed.git_dirty is False
    assert (index.stat().st_mtime_ns, index.read_bytes()) == before
    assert not (repo / ".git" / "index.lock").exists()
    with pytest.raises(NotACheckpointError):
        reg.push({"w": "not a tensor"}, "bad", arch=TINY)  # fails while git may still run
    assert not (repo / ".git" / "index.lock").exists()
    git(repo, "commit", "-q", "--allow-empty", "-m", "the user's next commit works")


# -- events ----------------------------------------------------------------------------


def test_every_change_is_an_event_with_before_after_and_actor(reg: Registry, outside_git: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    one = reg.push(tiny_state(0), "m", arch=TINY, tags={"stage": "dev"})
    reg.push(tiny_state(1), "m", arch=TINY)
    monkeypatch.setenv("REGISTRY_USER", "bob")
    start = datetime.now(one.created_at.tzinfo)

    reg.tag("m:1", {"stage": "prod", "owner": "ana"})
    reg.tag("m:1", {"stage": "prod"})  # no change: no event
    reg.untag("m:1", ["owner"])
    reg.alias("m:1", "production")
    reg.alias("m:1", "production")  # already there: no event
    reg.alias("m:2", "production")
    reg.describe("m:2", "tuned")
    reg.describe("m:2", None)
    reg.unalias("m:production")

    events = [e for e in reg.log("m") if e.kind != "push"]
    assert all(e.actor == "bob" and e.host == socket.gethostname() for e in events)
    assert all(e.at >= start for e in events)
    assert [(e.kind, e.ref, e.before, e.after) for e in reversed(events)] == [
        ("tag", "m:1", {"stage": "dev"}, {"stage": "prod", "owner": "ana"}),
        ("untag", "m:1", {"owner": "ana"}, {}),
        ("alias", "m:1", None, {"alias": "production", "version": 1}),
        ("alias", "m:2", {"alias": "production", "version": 1},
         {"alias": "production", "version": 2}),
        ("describe", "m:2", {"description": None}, {"description": "tuned"}),
        ("describe", "m:2", {"description": "tuned"}, {"description": None}),
        ("unalias", "m:2", {"alias": "production", "version": 2}, None),
    ]  # fmt: skip
    summaries = [e.summary() for e in reversed(events)]
    assert summaries[0] == "tag stage: dev -> prod, owner: (none) -> ana"
    assert summaries[3] == "alias production: m:1 -> m:2"

    # The pushes come first in time, by whoever pushed (alice), newest first.
    pushes = [e for e in reg.log("m") if e.kind == "push"]
    assert [(e.ref, e.actor) for e in pushes] == [("m:2", "alice"), ("m:1", "alice")]
    assert pushes[1].after["digest"] == f"sha256:{one.digest}" and pushes[1].at == one.created_at

    # A refused change records nothing (and changes nothing).
    with pytest.raises(InvalidArgumentError, match="no tag 'nope'"):
        reg.untag("m:1", ["stage", "nope"])
    assert len(reg.log("m")) == len(events) + 2 and reg.get("m:1").tags == {"stage": "prod"}


def test_events_outlive_a_removed_version(reg: Registry, outside_git: Path,
                                          monkeypatch: pytest.MonkeyPatch):
    first = reg.push(tiny_state(0), "m", arch=TINY, tags={"stage": "dev"})
    reg.push(tiny_state(1), "m", arch=TINY)
    reg.alias("m:1", "production")
    reg.alias("m:1", "stable")
    monkeypatch.setenv("REGISTRY_USER", "root-cause")
    reg.remove("m:1", force=True)

    history = reg.log("m:1")  # the version is gone; its history is not
    assert kinds(history) == [("remove", "m:1"), ("unalias", "m:1"), ("unalias", "m:1"),
                              ("alias", "m:1"), ("alias", "m:1"), ("push", "m:1")]
    removal = history[0]
    assert removal.actor == "root-cause" and removal.after is None
    assert removal.before["digest"] == f"sha256:{first.digest}"
    assert removal.before["tags"] == {"stage": "dev"}
    assert sorted(removal.before["aliases"]) == ["production", "stable"]
    assert {e.before["alias"] for e in history[1:3]} == {"production", "stable"}
    # Its push is still told, from what the removal kept: by alice, when it was made.
    assert (history[-1].actor, history[-1].at) == ("alice", first.created_at)
    assert kinds(reg.log("m")) == [("remove", "m:1"), ("unalias", "m:1"), ("unalias", "m:1"),
                                   ("alias", "m:1"), ("alias", "m:1"), ("push", "m:2"),
                                   ("push", "m:1")]
    with sqlite3.connect(reg.settings.home / "registry.db") as db:
        gone = {r[0] for r in db.execute("SELECT version_id FROM events WHERE version = 1")}
        assert gone == {None}  # the removed version's events outlive its row
    with pytest.raises(VersionNotFoundError):
        reg.log("m:7")
    with pytest.raises(ModelNotFoundError):
        reg.log("nope")


def test_log_scopes_and_limit(reg: Registry, outside_git: Path):
    reg.push(tiny_state(0), "a", arch=TINY)
    reg.push(tiny_state(1), "b", arch=TINY)
    reg.push(tiny_state(2), "a", arch=TINY)
    reg.tag("a:1", {"k": "v"})
    reg.alias("a:2", "best")
    everything = reg.log()
    assert kinds(everything) == [("alias", "a:2"), ("tag", "a:1"), ("push", "a:2"),
                                 ("push", "b:1"), ("push", "a:1")]
    assert [e.at for e in everything] == sorted((e.at for e in everything), reverse=True)
    assert kinds(reg.log(limit=2)) == kinds(everything)[:2]
    assert kinds(reg.log("a")) == [("alias", "a:2"), ("tag", "a:1"), ("push", "a:2"),
                                   ("push", "a:1")]
    assert kinds(reg.log("a", limit=3)) == kinds(reg.log("a"))[:3]
    assert kinds(reg.log("a:best")) == kinds(reg.log("a:2")) == [("alias", "a:2"), ("push", "a:2")]
    assert kinds(reg.log("a:latest")) == kinds(reg.log("a:2"))
    digest = reg.get("a:1").digest
    assert kinds(reg.log(f"a@sha256:{digest[:8]}")) == [("tag", "a:1"), ("push", "a:1")]
    assert reg.log(limit=0) == []


# -- bundles ---------------------------------------------------------------------------


def test_import_keeps_provenance_and_enters_as_newest(tmp_path: Path, outside_git: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    with Registry(home=tmp_path / "src") as source, Registry(home=tmp_path / "dst") as target:
        path = outside_git / "orig.pth"
        torch.save(tiny_state(0), path)
        original = source.push(path, "m", arch=TINY)
        source.alias("m:1", "production")
        source.export(["m:1"], tmp_path / "b.tar")

        monkeypatch.setenv("REGISTRY_USER", "bob")
        local = target.push(tiny_state(1), "m", arch=TINY)  # after the original was made
        target.alias("m:1", "production")
        report = target.import_bundle(tmp_path / "b.tar")
        assert report.versions == [("m:1", "m:2", True)]

        imported = target.get("m:2")
        assert imported.pushed_by == "alice" and imported.source_path == str(path)
        assert imported.pushed_host == original.pushed_host
        assert imported.registry_version == original.registry_version
        assert imported.origin_created_at == original.created_at
        assert imported.created_at > local.created_at > original.created_at
        # Newest first means the order of entry into this registry, everywhere.
        assert [v.ref for v in target.list("m")] == ["m:2", "m:1"]
        assert target.get("m").ref == target.get("m:latest").ref == "m:2"

        history = target.log("m")
        assert kinds(history) == [("alias", "m:2"), ("import", "m:2"), ("alias", "m:1"),
                                  ("push", "m:1"), ("push", "m:2")]
        moved, entry = history[0], history[1]
        assert (moved.actor, moved.before, moved.after) == (
            "bob", {"alias": "production", "version": 1}, {"alias": "production", "version": 2})
        assert entry.actor == "bob" and entry.before is None
        assert entry.after == {"bundle": str(tmp_path / "b.tar"), "from": "m:1",
                               "origin_created_at": original.created_at.isoformat(),
                               "aliases": ["production"]}
        # The push of the imported version is alice's, when she made it.
        assert (history[-1].actor, history[-1].at) == ("alice", original.created_at)

        # Exported again, it keeps its first creation time, not this registry's import.
        target.export(["m:2"], tmp_path / "again.tar")
    with Registry(home=tmp_path / "third") as third:
        third.import_bundle(tmp_path / "again.tar")
        assert third.get("m:2").origin_created_at == original.created_at
        assert third.get("m:2").pushed_by == "alice"


def test_bundles_without_provenance_still_import(reg: Registry, tmp_path: Path,
                                                 outside_git: Path):
    pushed = reg.push(tiny_state(0), "m", arch=TINY)
    reg.export(["m:1"], tmp_path / "b.tar")
    with tarfile.open(tmp_path / "b.tar") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    manifest = json.loads(members[0][1])
    entry = manifest["versions"][0]
    assert entry["pushed_by"] == "alice" and entry["origin_created_at"] is None
    for key in ("pushed_by", "pushed_host", "source_path", "git_commit", "git_dirty",
                "registry_version", "origin_created_at", "arch_module"):
        del entry[key]  # as a bundle from before these were recorded

    def write(path: Path, data: dict) -> None:
        text = json.dumps(data).encode()
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for info, content in [(members[0][0], text), *members[1:]]:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))

    write(tmp_path / "old.tar", manifest)
    with Registry(home=tmp_path / "other") as other:
        other.import_bundle(tmp_path / "old.tar")
        got = other.get("m:1")
        assert got.pushed_by is None and got.git_dirty is None
        assert got.origin_created_at == pushed.created_at
        assert [e.actor for e in other.log("m") if e.kind == "push"] == ["unknown"]
    entry["git_dirty"] = "yes"
    write(tmp_path / "bad.tar", manifest)
    with Registry(home=tmp_path / "another") as another:
        with pytest.raises(Exception, match="git_dirty"):
            another.import_bundle(tmp_path / "bad.tar")


# -- the command line ------------------------------------------------------------------


def test_log_and_show_commands(home: Path, reg: Registry, tmp_path: Path, outside_git: Path,
                               monkeypatch: pytest.MonkeyPatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("x = 1\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    (repo / "train.py").write_text("x = 2\n")
    path = repo / "model.pth"
    torch.save(tiny_state(0), path)
    monkeypatch.chdir(repo)
    reg.push(path, "m", arch=TINY)
    monkeypatch.chdir(outside_git)
    reg.push(tiny_state(1), "m", arch=TINY)
    reg.push(tiny_state(2), "other", arch=TINY)
    carol = {"REGISTRY_USER": "carol"}
    run_cli("tag", "m:1", "stage=dev", env=carol, check=True)
    run_cli("tag", "m:1", "stage=prod", env=carol, check=True)
    run_cli("alias", "m:1", "production", env=carol, check=True)
    run_cli("alias", "m:2", "production", env=carol, check=True)

    table = run_cli("log", "m", check=True).stdout.splitlines()
    assert table[0].split() == ["WHEN", "WHO", "WHAT", "REF", "CHANGE"]
    host = socket.gethostname()
    rows = [line.split(None, 6) for line in table[1:]]
    assert [(r[3], r[4], r[5]) for r in rows] == [
        (f"carol@{host}", "alias", "m:2"), (f"carol@{host}", "alias", "m:1"),
        (f"carol@{host}", "tag", "m:1"), (f"carol@{host}", "tag", "m:1"),
        (f"alice@{host}", "push", "m:2"), (f"alice@{host}", "push", "m:1"),
    ]  # fmt: skip
    assert rows[0][6] == "alias production: m:1 -> m:2"
    assert rows[2][6] == "tag stage: dev -> prod"
    head = git(repo, "rev-parse", "HEAD")
    assert f"file {path}" in rows[-1][6] and f"(git {head[:12]}, dirty)" in rows[-1][6]

    as_json = json.loads(run_cli("log", "--json", check=True).stdout)
    assert [(e["kind"], e["ref"]) for e in as_json] == [
        ("alias", "m:2"), ("alias", "m:1"), ("tag", "m:1"), ("tag", "m:1"),
        ("push", "other:1"), ("push", "m:2"), ("push", "m:1"),
    ]  # fmt: skip
    assert as_json[2]["before"] == {"stage": "dev"} and as_json[2]["after"] == {"stage": "prod"}
    assert as_json[2]["actor"] == "carol" and as_json[-1]["after"]["git_commit"] == head
    assert [e["at"] for e in as_json] == sorted((e["at"] for e in as_json), reverse=True)
    by_ref = json.loads(run_cli("log", "m:1", "--json", check=True).stdout)
    assert [(e["kind"], e["ref"]) for e in by_ref] == [
        ("alias", "m:2"), ("alias", "m:1"), ("tag", "m:1"), ("tag", "m:1"), ("push", "m:1")]
    limited = run_cli("log", "--limit", "2", check=True)
    assert len(limited.stdout.splitlines()) == 3 and "newest 2 events" in limited.stderr
    missing = run_cli("log", "nope")
    assert missing.returncode == 1 and missing.stderr.startswith("Error: no model named 'nope'")

    shown = run_cli("show", "m:1", check=True).stdout
    (pushed,) = [line.strip() for line in shown.splitlines() if line.strip().startswith("pushed")]
    assert pushed.endswith(f"by alice@{host} from {path} (git {head[:12]}, dirty)")
    assert "imported" not in shown
    info = json.loads(run_cli("show", "m:2", "--json", check=True).stdout)
    assert info["pushed_by"] == "alice" and info["source_path"] is None
    assert info["git_commit"] is None and info["registry_version"] == dist_version("registry")

    reg.export(["m:1"], tmp_path / "b.tar")
    with Registry(home=tmp_path / "other") as other:
        other.import_bundle(tmp_path / "b.tar")
    imported = run_cli("show", "m:1", env={"REGISTRY_HOME": str(tmp_path / "other")},
                       check=True).stdout
    assert "originally created" in imported and f"by alice@{host} from {path}" in imported




def test_log_and_recorded_edits_never_import_torch_or_sqlalchemy(home: Path, reg: Registry,
                                                                 outside_git: Path):
    reg.push(tiny_state(0), "m", arch=TINY)
    reg.push(tiny_state(1), "m", arch=TINY)
    commands = [
        ["tag", "m:1", "stage=prod"],
        ["untag", "m:1", "stage"],
        ["alias", "m:1", "production"],
        ["alias", "--delete", "m:production"],
        ["describe", "m:1", "text"],
        ["rm", "m:2", "--yes"],
        ["log"],
        ["log", "m", "--json"],
        ["log", "m:2", "--limit", "1"],
    ]
    result = subprocess.run(
        [sys.executable, "-c", IN_PROCESS.format(commands=repr(commands))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "imported:"
    assert [e.kind for e in reg.log("m")] == [
        "remove", "describe", "unalias", "alias", "untag", "tag", "push", "push"]


# -- schema ----------------------------------------------------------------------------


def test_upgrade_from_0003_keeps_old_versions(home: Path, outside_git: Path):
    from alembic import command
    from sqlalchemy import create_engine, inspect

    from registry.catalog import schema
    from registry.catalog.revision import SCHEMA_REVISION

    with Registry(home=home) as reg:
        reg.push(tiny_state(0), "m", arch=TINY, tags={"stage": "dev"})
        reg.tag("m:1", {"stage": "prod"})
    engine = create_engine(f"sqlite:///{home / 'registry.db'}")
    with engine.begin() as connection:
        command.downgrade(schema.alembic_config(connection), "0003")
        assert "events" not in inspect(connection).get_table_names()
        assert "pushed_by" not in {c["name"] for c in inspect(connection).get_columns("versions")}
    engine.dispose()
    refused = run_cli("log")
    assert refused.returncode == 1 and "registry db upgrade" in refused.stderr

    upgraded = run_cli("db", "upgrade", check=True)
    head = SCHEMA_REVISION
    assert upgraded.stdout.strip() == head and f"from 0003 to {head}" in upgraded.stderr
    with Registry(home=home) as reg:
        old = reg.get("m:1")
        assert old.tags == {"stage": "prod"}
        assert (old.pushed_by, old.pushed_host, old.source_path, old.git_commit,
                old.git_dirty, old.registry_version) == (None,) * 6
        (push,) = reg.log()
        assert (push.kind, push.actor, push.host) == ("push", "unknown", None)
    history = json.loads(run_cli("log", "m", "--json", check=True).stdout)
    assert [(e["kind"], e["actor"]) for e in history] == [("push", "unknown")]
    run_cli("tag", "m:1", "stage=done", check=True)
    assert [e["kind"] for e in json.loads(run_cli("log", "--json", check=True).stdout)] == [
        "tag", "push"]
    shown = run_cli("show", "m:1", check=True).stdout.splitlines()
    assert shown[0] == "m:1" and not [line for line in shown if "pushed" in line]


# -- PostgreSQL ------------------------------------------------------------------------

from test_postgres import postgres  # noqa: E402,F401  (the throwaway server fixture)


@pytest.mark.skipif(
    shutil.which("initdb") is None or shutil.which("pg_ctl") is None,
    reason="PostgreSQL server binaries (initdb, pg_ctl) are not installed",
)
def test_provenance_and_events_on_postgres(postgres, tmp_path: Path,  # noqa: F811
                                           outside_git: Path):
    url = postgres()
    with Registry(home=tmp_path / "h", database_url=url) as reg:
        first = reg.push(tiny_state(0), "m", arch=TINY)
        assert (first.pushed_by, first.git_dirty) == ("alice", None)
        reg.push(tiny_state(1), "m", arch=TINY)
        reg.tag("m:1", {"stage": "dev"})
        reg.alias("m:1", "production")
        reg.alias("m:2", "production")
        reg.describe("m:2", "it's 100% \"quoted\"?")
        reg.remove("m:1", force=True)
        reg.export(["m:2"], tmp_path / "b.tar")
        reg.remove("m:2", force=True)
        reg.import_bundle(tmp_path / "b.tar")
        history = reg.log("m")
        assert kinds(history) == [
            ("import", "m:3"), ("remove", "m:2"), ("unalias", "m:2"), ("remove", "m:1"),
            ("describe", "m:2"), ("alias", "m:2"), ("alias", "m:1"), ("tag", "m:1"),
            ("push", "m:3"), ("push", "m:2"), ("push", "m:1"),
        ]  # m:3 is m:2 exported and imported again: its push is dated as m:2's
        described = next(e for e in history if e.kind == "describe")
        assert described.after == {"description": "it's 100% \"quoted\"?"}
        assert next(e for e in history if e.kind == "tag").after == {"stage": "dev"}
        assert reg.get("m:3").origin_created_at is not None
        assert reg.get("m:3").pushed_by == "alice" and reg.get("m:3").git_dirty is None
        assert kinds(reg.log("m:1")) == [("remove", "m:1"), ("alias", "m:2"), ("alias", "m:1"),
                                         ("tag", "m:1"), ("push", "m:1")]
    shown = run_cli("log", "m:3", "--json",
                    env={"REGISTRY_DATABASE_URL": url, "REGISTRY_HOME": str(tmp_path / "h")},
                    check=True)  # fmt: skip
    assert [e["kind"] for e in json.loads(shown.stdout)] == ["import", "push"]
