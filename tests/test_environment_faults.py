"""Full disks, read-only places, servers that go away (issue 13, "Hardening").

What the machine does to a registry, not what the user types:

- **A disk that fills up** in the middle of a push: a real small tmpfs, mounted in a
  private mount namespace (``unshare --mount``, no change to the host's mounts), filled
  with a filler file so that the push runs out of space while it writes its pack (the
  store's disk) or while it commits (the catalogue's disk). Places a tmpfs cannot
  reach (the fsync, the rename, a gc rewrite) get ``ENOSPC`` from the fault hook
  (``registry._faults``), in this process.
- **A read-only REGISTRY_HOME**: a read-only bind mount of a real registry, in a
  private mount namespace (as root, file modes stop nothing).
- **A server that goes away**: a PostgreSQL and a SeaweedFS server of this module
  (tests/servers.py), halted in the middle of a push (the push pauses at a fault point
  while the test halts the server) or between two operations, and resumed on the same
  data and ports.
- **A read cache that fills up** (a bucket's packs are read through a local cache): a
  real small tmpfs again.

Each case asks the same things: one line on stderr saying which side failed (the
tensor store or the catalogue database), exit code 1, nothing half done (the versions
listed are the ones before, each loads; ``verify`` is clean; no temporary pack left),
and the same operation works once the space, the write access or the server is back.

The namespace runs the installed ``registry`` command through ``nsenter``; the test
reads the namespace's files from outside through ``/proc/PID/root``. Where a private
mount namespace cannot be made, those tests skip saying why.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import REGISTRY_EXE, assert_same_state, make_model
from servers import PostgresServer, SeaweedServer

from registry import CatalogError, Registry, StorageError, _faults

ARCH = "mobilenet_v3_small"  # 10.2 MB, 244 tensors: a pack of ~10 MB, many catalogue rows


# -- a private mount namespace ------------------------------------------------------------


class MountNamespace:
    """A private mount namespace held open by a ``sleep`` of this test.

    Mounts made in it (a small tmpfs, a read-only bind) are seen only by the commands
    :meth:`run` starts in it (through ``nsenter``); the test reaches its files from
    outside through :meth:`outside` (``/proc/PID/root/...``). As root the namespace is
    made with ``unshare --mount``; otherwise with a user namespace that maps us to root
    (``--user --map-root-user``). Raises RuntimeError, saying why, if it cannot be made.
    """

    def __init__(self) -> None:
        missing = [tool for tool in ("unshare", "nsenter", "mount") if not shutil.which(tool)]
        if missing:
            raise RuntimeError(f"{', '.join(missing)} not found on PATH")
        root = os.geteuid() == 0
        unshare = ["unshare", "--mount", *([] if root else ["--user", "--map-root-user"])]
        # Into the user namespace too, as we are (its map makes us root there).
        self._user = [] if root else ["--user", "--preserve-credentials"]
        prefix = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        self.process = subprocess.Popen(
            [*prefix, *unshare, "--", "sleep", "3600"],  # dies with pytest (pdeathsig)
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ours = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 30
        while True:  # until `sleep` runs in a mount namespace of its own
            if self.process.poll() is not None:
                raise RuntimeError(f"`{' '.join(unshare)}` failed: {self.process.stderr.read()}")
            try:
                if os.readlink(f"/proc/{self.process.pid}/ns/mnt") != ours:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"`{' '.join(unshare)}` made no namespace in 30 s")
            time.sleep(0.01)

    def close(self) -> None:
        """End the namespace (its mounts go with it)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)

    def run(
        self, *command: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in the namespace (environment: this process's, plus ``env``)."""
        enter = ["nsenter", f"--target={self.process.pid}", *self._user, "--mount"]
        return subprocess.run(
            [*enter, f"--wd={cwd or Path.cwd()}", "--", *command],
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )

    def registry(self, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """The installed ``registry`` command, run in the namespace."""
        return self.run(REGISTRY_EXE, *args, env=env)

    def mount(self, *args: str) -> None:
        result = self.run("mount", *args)
        if result.returncode != 0:
            raise RuntimeError(f"`mount {' '.join(args)}` failed: {result.stderr.strip()}")

    def tmpfs(self, folder: Path, size: str) -> Path:
        """Mount a new tmpfs of ``size`` (mount's syntax: ``32m``) on ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        self.mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
        return folder

    def read_only(self, folder: Path) -> None:
        """Make ``folder`` (and all below it) read-only, in the namespace only."""
        self.mount("--bind", str(folder), str(folder))
        self.mount("-o", "remount,ro,bind", str(folder), str(folder))

    def outside(self, path: Path) -> Path:
        """``path`` as the namespace sees it, reachable from this process."""
        return Path(f"/proc/{self.process.pid}/root") / path.relative_to("/")

    def free_bytes(self, folder: Path) -> int:
        stat = os.statvfs(self.outside(folder))
        return stat.f_bavail * stat.f_frsize

    def fill(self, folder: Path, leave: int) -> Path:
        """Write a filler file in ``folder`` until only ``leave`` bytes are free; its path
        (outside view: unlink it to free the space)."""
        filler = self.outside(folder) / "filler"
        todo = self.free_bytes(folder) - leave
        chunk = bytes(1 << 20)
        with open(filler, "wb") as f:
            while todo > 0:
                todo -= f.write(chunk[: min(len(chunk), todo)])
        return filler


@pytest.fixture
def namespace() -> Iterator[MountNamespace]:
    try:
        ns = MountNamespace()
    except RuntimeError as exc:
        pytest.skip(f"cannot make a private mount namespace here: {exc}")
    try:
        yield ns
    finally:
        ns.close()


def _mounted(ns: MountNamespace, how, *args) -> None:
    """Make a mount in ``ns``, or skip saying why mount refused."""
    try:
        how(*args)
    except RuntimeError as exc:
        pytest.skip(f"cannot mount in a private mount namespace here: {exc}")


# -- weights, and what a registry holds ---------------------------------------------------


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two .pth files of ARCH with different random weights (they share the unchanging
    buffers, so the second push writes ~10 MB of new tensors)."""
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for seed in (1, 2):
        paths[f"w{seed}"] = folder / f"w{seed}.pth"
        torch.save(make_model(ARCH, seed=seed).state_dict(), paths[f"w{seed}"])
    return paths


def _local_env(home: Path, database_url: str = "", storage_url: str = "") -> dict[str, str]:
    """A registry under ``home`` (or with the catalogue or the store elsewhere)."""
    return {
        "REGISTRY_HOME": str(home),
        "REGISTRY_DATABASE_URL": database_url,
        "REGISTRY_STORAGE_URL": storage_url,
    }


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}{result.stderr}"
    return result.stdout


def _said(result: subprocess.CompletedProcess[str]) -> str:
    """What a command that succeeded printed, on stdout and stderr (the reports)."""
    return _ok(result) + result.stderr


def _one_line_error(result: subprocess.CompletedProcess[str], *says: str) -> str:
    """The command failed with exit code 1 and one line on stderr, ``Error: ...``
    holding each of ``says``; that line."""
    assert result.returncode == 1, f"exit {result.returncode}:\n{result.stdout}{result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for text in says:
        assert text in lines[0], lines[0]
    return lines[0]


def run_registry(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``registry`` command, in this process's environment."""
    return subprocess.run(
        [REGISTRY_EXE, *args], capture_output=True, text=True, timeout=300, env=os.environ.copy()
    )


def _refs(run, env: dict[str, str]) -> list[str]:
    return [v["ref"] for v in json.loads(_ok(run("list", "--json", env=env)))]


def _files(folder: Path) -> set[str]:
    """Every file under ``folder``, as relative paths."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


#: Loads every version the registry lists and compares it with the file it was pushed
#: from (argv: REF=PATH ...); prints the refs. Run where the registry is (a namespace).
_LOAD_ALL = r"""
import sys, torch
from registry import Registry
expected = dict(arg.split("=", 1) for arg in sys.argv[1:])
with Registry() as reg:
    refs = sorted(v.ref for v in reg.list())
    assert refs == sorted(expected), (refs, sorted(expected))
    for ref, path in expected.items():
        want = torch.load(path, weights_only=True)
        got = reg.load_state_dict(ref)
        assert list(got) == list(want), ref
        assert all(torch.equal(got[k], want[k]) for k in want), ref
        module = reg.load(ref)
        assert all(torch.equal(module.state_dict()[k], want[k]) for k in want), ref
print("loaded", *refs)
"""


def _all_load(ns: MountNamespace, env: dict[str, str], expected: dict[str, Path]) -> None:
    """In ``ns``: exactly the versions ``expected`` names are listed, and each loads
    (state dict and module) with the weights of its file."""
    args = [f"{ref}={path}" for ref, path in expected.items()]
    out = _ok(ns.run(sys.executable, "-c", _LOAD_ALL, *args, env=env))
    assert out.split() == ["loaded", *sorted(expected)]


# -- a disk that fills up mid-push (a real tmpfs) ----------------------------------------


def _same_weights(reg: Registry, expected: dict[str, Path]) -> None:
    """``reg`` lists exactly the versions ``expected`` names, and each loads (its state
    dict, and the module) with the weights of its file."""
    assert sorted(v.ref for v in reg.list()) == sorted(expected)
    for ref, path in expected.items():
        want = torch.load(path, weights_only=True)
        assert_same_state(reg.load_state_dict(ref), want)
        module = reg.load(ref)
        assert all(torch.equal(module.state_dict()[k], v) for k, v in want.items()), ref


def _history(reg: Registry) -> list[tuple[str, str | None]]:
    return [(e.kind, e.ref) for e in reg.log()]


def test_a_store_that_fills_up_mid_push_leaves_nothing_and_works_once_freed(
    namespace: MountNamespace, weights: dict[str, Path], tmp_path: Path
):
    disk = tmp_path / "disk"
    _mounted(namespace, namespace.tmpfs, disk, "32m")
    store, home = disk / "objects", tmp_path / "home"  # the store on the small disk
    env = _local_env(home, storage_url=str(store))
    run = namespace.registry
    # This process reaches the same registry, its store through /proc/PID/root.
    here = Registry(home=home, storage_url=namespace.outside(store))
    try:
        here.push(weights["w1"], "m", arch=ARCH)
        history, packs = _history(here), _files(namespace.outside(store))

        left = 4 << 20  # room for some of the second pack (~10 MB), not all of it
        filler = namespace.fill(disk, leave=left)
        failed = run("push", str(weights["w2"]), "--arch", ARCH, "--name", "m", env=env)
        line = _one_line_error(failed, "tensor store", "No space left on device")
        assert str(store) in line

        # Nothing half done: the same versions and history, the same pack files (no
        # temporary pack), and the space the failed pack took is free again.
        assert [v.ref for v in here.list()] == ["m:1"] and _history(here) == history
        assert _files(namespace.outside(store)) == packs
        assert namespace.free_bytes(disk) >= left - (64 << 10)
        # A file written to the full disk (an export): one line too, nothing left.
        out = disk / "out"
        failed = run("export", "m:1", "-o", str(out / "m.tar"), env=env)
        _one_line_error(failed, "No space left on device", str(out / "m.tar"))
        assert _files(namespace.outside(out)) == set()

        filler.unlink()
        pushed = json.loads(
            _ok(run("push", str(weights["w2"]), "--arch", ARCH, "--name", "m", "--json", env=env))
        )
        assert pushed["ref"] == "m:2"
        assert pushed["bytes_written"] > left  # so the failed push ran out inside its pack
        assert "all intact" in _said(run("verify", env=env))
        assert not list(namespace.outside(store / "tmp").glob("*.tmp"))
        _same_weights(here, {"m:1": weights["w1"], "m:2": weights["w2"]})
    finally:
        here.close()


#: The `registry` command with a fault hook: each point passed is appended to
#: $FAULT_LOG; at the Nth time $FAULT_PAUSE ("point#N") is passed (counting only once
#: $FAULT_AFTER has been passed, if set) the thread waits: it touches
#: $FAULT_DIR/paused and goes on once $FAULT_DIR/go exists.
_CLI_WITH_HOOK = r"""
import os, sys, threading, time
from pathlib import Path
from registry import _faults

log = os.environ.get("FAULT_LOG")
point, _, nth = os.environ.get("FAULT_PAUSE", "").partition("#")
after = os.environ.get("FAULT_AFTER")
state = {"armed": not after, "count": 0}
lock = threading.Lock()

def hook(name):
    with lock:
        if log:
            with open(log, "a") as f:
                f.write(name + "\n")
        if name == after:
            state["armed"] = True
        if name != point or not state["armed"]:
            return
        state["count"] += 1
        if state["count"] != int(nth or 1):
            return
    here = Path(os.environ["FAULT_DIR"])
    (here / "paused").touch()
    while not (here / "go").exists():
        time.sleep(0.01)

_faults.hook = hook
from registry.cli import main
sys.argv[0] = "registry"
main()
"""


def _sqlite_files(database: Path) -> list[Path]:
    """A SQLite catalogue's file and its WAL, if it has one (no process has it open)."""
    return [p for p in (database, database.with_name(database.name + "-wal")) if p.exists()]


def test_a_catalogue_that_fills_up_at_the_commit_leaves_no_pack_and_works_once_freed(
    namespace: MountNamespace, weights: dict[str, Path], tmp_path: Path
):
    disk = tmp_path / "disk"
    _mounted(namespace, namespace.tmpfs, disk, "4m")
    store = tmp_path / "store"  # the store has room
    catalogue = disk / "catalogue" / "registry.db"
    env = _local_env(tmp_path / "home", f"sqlite:///{catalogue}", str(store))
    run = namespace.registry
    # Made here, then moved onto the small disk (SQLite cannot open it through /proc).
    with Registry(home=tmp_path / "made", storage_url=store) as reg:
        reg.push(weights["w1"], "m", arch=ARCH)
    namespace.outside(catalogue.parent).mkdir()
    for file in _sqlite_files(tmp_path / "made" / "registry.db"):
        shutil.copy(file, namespace.outside(catalogue.parent))
    before = (_refs(run, env), _ok(run("log", "--json", env=env)))
    packs = _files(store)

    # Room to open the catalogue and read it, not for the ~250 kB a version of 244
    # tensors adds: the push writes its pack, then cannot commit.
    filler = namespace.fill(disk, leave=128 << 10)
    points = tmp_path / "points.log"
    failed = namespace.run(
        sys.executable, "-c", _CLI_WITH_HOOK,
        "push", str(weights["w2"]), "--arch", ARCH, "--name", "m",
        env={**env, "FAULT_LOG": str(points)},
    )  # fmt: skip
    line = _one_line_error(failed, "catalogue database", "database or disk is full")
    assert str(catalogue) in line
    passed = points.read_text().split()
    assert "pack.renamed" in passed  # the pack was whole when the commit failed
    assert passed.index("pack.delete") > passed.index("pack.renamed")  # and then removed
    assert _files(store) == packs  # the pack no version names is gone, no temporary file
    assert (_refs(run, env), _ok(run("log", "--json", env=env))) == before

    filler.unlink()
    assert _ok(run("push", str(weights["w2"]), "--arch", ARCH, "--name", "m", env=env)) == "m:2\n"
    assert "all intact" in _said(run("verify", env=env))
    assert _ok(run("gc", env=env)) == "0\n"  # nothing stray to collect
    assert not list((store / "tmp").glob("*.tmp"))
    out = tmp_path / "copied"  # the catalogue as it is now, where this process can open it
    out.mkdir()
    for file in _sqlite_files(namespace.outside(catalogue)):
        shutil.copy(file, out)
    with Registry(home=out, storage_url=store) as reg:
        _same_weights(reg, {"m:1": weights["w1"], "m:2": weights["w2"]})


# -- ENOSPC where a tmpfs cannot aim: the fault hook, in this process ---------------------


@contextmanager
def _fault(point: str, error: BaseException, nth: int = 1, after: str | None = None):
    """Raise ``error`` at the ``nth`` time ``point`` is passed (counting once ``after``
    has been passed, if given), once; the points passed are yielded as a list."""
    passed: list[str] = []
    state = {"armed": after is None, "count": 0}
    lock = threading.Lock()

    def hook(name: str) -> None:
        with lock:
            passed.append(name)
            if name == after:
                state["armed"] = True
            if name != point or not state["armed"]:
                return
            state["count"] += 1
            if state["count"] != nth:
                return
        raise error

    _faults.hook = hook
    try:
        yield passed
    finally:
        _faults.hook = None


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


_PACK_POINTS = [
    pytest.param("pack.create", 1, id="creating the temporary pack"),
    pytest.param("pack.write", 3, id="writing the pack"),
    pytest.param("pack.header", 1, id="writing the header"),
    pytest.param("pack.fsync", 1, id="fsync"),
    pytest.param("pack.rename", 1, id="rename into place"),
    pytest.param("pack.renamed", 1, id="fsync of the folder after the rename"),
]


@pytest.mark.parametrize(("point", "nth"), _PACK_POINTS)
def test_enospc_at_each_step_of_writing_a_pack(
    point: str, nth: int, reg: Registry, home: Path, weights: dict[str, Path]
):
    reg.push(weights["w1"], "m", arch=ARCH)
    store = home / "objects"
    packs = _files(store)
    with _fault(point, _enospc(), nth) as passed:
        with pytest.raises(StorageError) as failed:
            reg.push(weights["w2"], "m", arch=ARCH)
    assert point in passed
    message = str(failed.value)
    assert "\n" not in message and "tensor store" in message and "No space left" in message
    assert [v.ref for v in reg.list()] == ["m:1"]
    assert _files(store) == packs  # no temporary file, no pack that no version names

    assert reg.push(weights["w2"], "m", arch=ARCH).ref == "m:2"
    report = reg.verify()
    assert not report.corrupt and not report.missing
    assert_same_state(reg.load_state_dict("m:2"), torch.load(weights["w2"], weights_only=True))


def test_a_full_disk_at_the_commit_in_process(reg: Registry, home: Path, weights):
    """What SQLite raises when its disk is full at the COMMIT (SQLITE_FULL): a
    CatalogError naming the database file; the written pack is removed."""
    reg.push(weights["w1"], "m", arch=ARCH)
    packs = _files(home / "objects")
    full = sqlite3.OperationalError("database or disk is full")
    with _fault("sql.commit", full, after="pack.renamed") as passed:
        with pytest.raises(CatalogError) as failed:
            reg.push(weights["w2"], "m", arch=ARCH)
    assert "pack.renamed" in passed
    assert str(failed.value) == (
        f"catalogue database error ({home / 'registry.db'}): database or disk is full"
    )
    assert [v.ref for v in reg.list()] == ["m:1"]
    assert _files(home / "objects") == packs
    assert reg.push(weights["w2"], "m", arch=ARCH).ref == "m:2"


def test_gc_that_runs_out_of_space_while_rewriting_a_pack_changes_nothing(
    reg: Registry, home: Path, weights: dict[str, Path]
):
    reg.push(weights["w1"], "m", arch=ARCH)
    reg.push(weights["w2"], "m", arch=ARCH)  # shares the buffers of m:1's pack
    reg.remove("m:1", force=True)  # m:1's pack: tensors m:2 uses, and others: a rewrite
    files = _files(home / "objects")
    with _fault("pack.write", _enospc(), nth=2) as passed:
        with pytest.raises(StorageError, match="No space left on device"):
            reg.gc()
    assert "pack.write" in passed
    assert _files(home / "objects") == files
    report = reg.verify()
    assert not report.corrupt and not report.missing
    assert_same_state(reg.load_state_dict("m:2"), torch.load(weights["w2"], weights_only=True))

    done = reg.gc()
    assert done.packs_rewritten == 1 and done.bytes_freed > 0
    assert_same_state(reg.load_state_dict("m:2"), torch.load(weights["w2"], weights_only=True))


# -- a read-only REGISTRY_HOME -------------------------------------------------------------


@pytest.fixture
def read_only_home(namespace: MountNamespace, weights: dict[str, Path], tmp_path: Path):
    """A registry made while it could be written (m:1 tagged and aliased prod, m:2; a
    bundle of m:2 beside it), then mounted read-only in ``namespace``. Yields (its
    home, the environment naming it, the bundle, every file's bytes as made)."""
    home = tmp_path / "home"
    with Registry(home=home) as reg:
        reg.push(weights["w1"], "m", arch=ARCH, tags={"stage": "dev"})
        reg.push(weights["w2"], "m", arch=ARCH)
        reg.alias("m:1", "prod")
        bundle = Path(reg.export(["m:2"], tmp_path / "m2.tar").path)
    snapshot = {path: (home / path).read_bytes() for path in _files(home)}
    _mounted(namespace, namespace.read_only, home)
    return home, _local_env(home), bundle, snapshot


def test_a_read_only_home_reads_everything(
    namespace: MountNamespace, read_only_home, weights: dict[str, Path], tmp_path: Path
):
    home, env, _bundle, snapshot = read_only_home
    run = namespace.registry
    out = tmp_path / "out"  # writable: where a pull or an export may write
    assert sorted(_refs(run, env)) == ["m:1", "m:2"]
    shown = _said(run("show", "m:1", env=env))
    assert "stage=dev" in shown and "prod" in shown
    assert "alias prod" in _said(run("log", env=env))
    assert "changed" in _said(run("diff", "m:1", "m:2", env=env))
    assert "all intact" in _said(run("verify", env=env))
    assert _ok(run("gc", "--dry-run", env=env)) == "0\n"
    _ok(run("pull", "m:prod", "-o", str(out / "m.pth"), env=env))
    assert_same_state(
        torch.load(out / "m.pth", weights_only=True), torch.load(weights["w1"], weights_only=True)
    )
    _ok(run("export", "m:1", "-o", str(out / "m1.tar"), env=env))
    with Registry(home=tmp_path / "elsewhere") as elsewhere:  # the export is whole
        assert [here for _, here, _ in elsewhere.import_bundle(out / "m1.tar").versions] == ["m:1"]
    _all_load(namespace, env, {"m:1": weights["w1"], "m:2": weights["w2"]})
    assert {path: (home / path).read_bytes() for path in _files(home)} == snapshot


def test_a_read_only_home_says_its_schema_revision(namespace: MountNamespace, read_only_home):
    """``db current`` goes through SQLAlchemy's engine, which opens a SQLite file in a
    place it may not write read-only (a plain open of a WAL database there fails)."""
    _home, env, _bundle, _snapshot = read_only_home
    assert "up to date" in _said(namespace.registry("db", "current", env=env))


def test_a_read_only_home_refuses_every_write_in_one_line(
    namespace: MountNamespace, read_only_home, weights: dict[str, Path]
):
    home, env, bundle, snapshot = read_only_home
    writes = [
        ["push", str(weights["w2"]), "--arch", ARCH, "--name", "other"],  # a new pack
        ["push", str(weights["w1"]), "--arch", ARCH, "--name", "m", "--tag", "more=1"],  # rows
        ["tag", "m:1", "stage=prod"],
        ["untag", "m:1", "stage"],
        ["alias", "m:1", "best"],
        ["alias", "--delete", "m:prod"],
        ["describe", "m:1", "a description"],
        ["rm", "m:1", "--yes"],
        ["gc"],
        ["import", str(bundle)],
        ["db", "upgrade"],
    ]
    for args in writes:  # each names the catalogue it could not write
        _one_line_error(namespace.registry(*args, env=env), "catalogue", str(home / "registry.db"))
    assert {path: (home / path).read_bytes() for path in _files(home)} == snapshot


# -- servers that go away ------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_servers() -> Iterator[tuple[PostgresServer, SeaweedServer]]:
    """A PostgreSQL and a SeaweedFS server of this module's own, which its tests halt and
    resume (the session's servers, which other tests share, are never stopped)."""
    missing = PostgresServer.missing() or SeaweedServer.missing()
    if missing:
        pytest.skip(f"no server of our own can be started here: {missing}")
    with PostgresServer() as postgres, SeaweedServer(single_master=True) as seaweed:
        yield postgres, seaweed


@pytest.fixture
def team(
    own_servers: tuple[PostgresServer, SeaweedServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """A fresh team registry on ``own_servers`` (a new database, a new bucket), its
    environment applied to this process and so to the commands it starts."""
    postgres, seaweed = own_servers
    env = {
        "REGISTRY_HOME": str(tmp_path / "home"),
        "REGISTRY_CACHE_DIR": str(tmp_path / "cache"),
        "REGISTRY_DATABASE_URL": postgres.new_database(),
        "REGISTRY_STORAGE_URL": f"s3://{seaweed.new_bucket()}/team/",
        **seaweed.env(),
    }
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "REGISTRY_CACHE_MAX_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _bucket(seaweed: SeaweedServer, env: dict[str, str]) -> tuple[list[str], list[str]]:
    """(the objects, the unfinished uploads) under the team registry's prefix."""
    bucket, _, prefix = env["REGISTRY_STORAGE_URL"][len("s3://") :].partition("/")
    client = seaweed.client()
    objects = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads") or []
    return sorted(o["Key"] for o in objects), sorted(u["Key"] for u in uploads)


class PausedCommand:
    """The ``registry`` command (with args), paused at a fault point (_CLI_WITH_HOOK)
    until :meth:`go`: the test changes the world meanwhile (halts a server)."""

    def __init__(self, folder: Path, *args: str, pause: str, after: str | None = None):
        self.folder = folder
        folder.mkdir()
        env = {**os.environ, "FAULT_DIR": str(folder), "FAULT_PAUSE": pause}
        if after:
            env["FAULT_AFTER"] = after
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CLI_WITH_HOOK, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_paused(self) -> None:
        deadline = time.monotonic() + 120
        while not (self.folder / "paused").exists():
            if self.process.poll() is not None:
                out, err = self.process.communicate()
                raise AssertionError(
                    f"it ended before the pause ({self.process.returncode}):\n{err}"
                )
            assert time.monotonic() < deadline, "it never reached the pause"
            time.sleep(0.01)

    def go(self) -> subprocess.CompletedProcess[str]:
        """Let it go on; how it ended."""
        (self.folder / "go").touch()
        out, err = self.process.communicate(timeout=300)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, out, err)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@contextmanager
def _paused(folder: Path, *args: str, pause: str, after: str | None = None):
    command = PausedCommand(folder, *args, pause=pause, after=after)
    try:
        command.wait_paused()
        yield command
    finally:
        command.kill()


@contextmanager
def _away(server: PostgresServer | SeaweedServer):
    """The server halted for the block; resumed on the same data and ports after it."""
    server.halt()
    try:
        yield
    finally:
        server.resume()


def test_the_catalogue_database_goes_away_at_the_commit_of_a_push(
    team: dict[str, str], own_servers, weights: dict[str, Path], tmp_path: Path
):
    postgres, seaweed = own_servers
    with Registry() as reg:
        reg.push(weights["w1"], "m", arch=ARCH)
        history = _history(reg)
    stored = _bucket(seaweed, team)

    push = ["push", str(weights["w2"]), "--arch", ARCH, "--name", "m"]
    # Paused at the COMMIT of the rows naming the uploaded pack: the server goes.
    with _paused(tmp_path / "fault", *push, pause="sql.commit", after="object.put_object") as cmd:
        with _away(postgres):
            failed = cmd.go()
    where = team["REGISTRY_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    line = _one_line_error(failed, "catalogue database", where)
    assert "tensor store" not in line

    with Registry() as reg:  # back: nothing of the push, not even its pack object
        assert [v.ref for v in reg.list()] == ["m:1"] and _history(reg) == history
        assert _bucket(seaweed, team) == stored
    assert _ok(run_registry(*push)) == "m:2\n"
    assert "all intact" in _said(run_registry("verify"))
    assert _ok(run_registry("gc")) == "0\n"  # nothing stray, and gc works
    with Registry() as reg:
        _same_weights(reg, {"m:1": weights["w1"], "m:2": weights["w2"]})


@pytest.fixture(scope="module")
def big_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet18 (46.8 MB): a pack of three parts, uploaded as a multipart upload."""
    path = tmp_path_factory.mktemp("big") / "big.pth"
    torch.save(make_model("resnet18", seed=3).state_dict(), path)
    return path


@pytest.mark.slow  # a 47 MB multipart upload, and boto3's retries of a server that is gone
def test_the_object_store_goes_away_in_the_middle_of_an_upload(
    team: dict[str, str], own_servers, weights: dict[str, Path], big_weights: Path, tmp_path: Path
):
    _, seaweed = own_servers
    with Registry() as reg:
        reg.push(weights["w1"], "m", arch=ARCH)
        history = _history(reg)
    stored = _bucket(seaweed, team)

    push = ["push", str(big_weights), "--arch", "resnet18", "--name", "big"]
    # Paused before a part goes up, the others in flight: the server goes.
    with _paused(tmp_path / "fault", *push, pause="object.upload_part#2") as cmd:
        with _away(seaweed):
            failed = cmd.go()
    line = _one_line_error(failed, "tensor store", team["REGISTRY_STORAGE_URL"])
    assert "catalogue" not in line

    with Registry() as reg:  # back: no version, no pack object; at most an unfinished upload
        assert [v.ref for v in reg.list()] == ["m:1"] and _history(reg) == history
        assert _bucket(seaweed, team)[0] == stored[0]
    # The upload its abort could not reach is collected (no push runs elsewhere).
    _ok(run_registry("gc", "--grace", "0"))
    assert _bucket(seaweed, team) == stored
    assert _ok(run_registry(*push)) == "big:1\n"
    assert "all intact" in _said(run_registry("verify"))
    with Registry() as reg:
        _same_weights(reg, {"m:1": weights["w1"], "big:1": big_weights})


def test_a_server_that_is_down_is_named_and_the_same_registry_works_once_it_is_back(
    team: dict[str, str], own_servers, weights: dict[str, Path]
):
    postgres, seaweed = own_servers
    with Registry() as reg:  # one Registry across both restarts: its pooled connections die
        reg.push(weights["w1"], "m", arch=ARCH)
        with _away(postgres):
            _one_line_error(run_registry("list"), "cannot open the catalogue database")
            with pytest.raises(CatalogError, match="^cannot open the catalogue database"):
                reg.list()
        assert [v.ref for v in reg.list()] == ["m:1"]

        with _away(seaweed):
            _one_line_error(run_registry("verify"), "tensor store", team["REGISTRY_STORAGE_URL"])
            with pytest.raises(StorageError, match="tensor store"):
                reg.load_state_dict("m:1")  # nothing cached yet: it must fetch
        assert reg.push(weights["w2"], "m", arch=ARCH).ref == "m:2"
        report = reg.verify()
        assert report.checked and not report.corrupt and not report.missing
        _same_weights(reg, {"m:1": weights["w1"], "m:2": weights["w2"]})


def test_a_read_cache_that_fills_up_is_named_and_works_once_it_has_room(
    team: dict[str, str],
    namespace: MountNamespace,
    weights: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    disk = tmp_path / "cache-disk"
    _mounted(namespace, namespace.tmpfs, disk, "2m")  # less than the 10 MB pack
    with Registry() as reg:
        reg.push(weights["w1"], "m", arch=ARCH)
    monkeypatch.setenv("REGISTRY_CACHE_DIR", str(namespace.outside(disk)))
    with Registry() as reg:
        with pytest.raises(StorageError) as failed:
            reg.load_state_dict("m:1")
        message = str(failed.value)
        assert "read cache" in message and "No space left on device" in message, message
        assert team["REGISTRY_STORAGE_URL"] not in message  # the store did nothing wrong
        namespace.mount("-o", "remount,size=64m", str(disk))  # room again
        assert_same_state(reg.load_state_dict("m:1"), torch.load(weights["w1"], weights_only=True))
