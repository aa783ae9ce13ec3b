"""The crash harness (issue 13): kill a writing command of `registry` with SIGKILL at
each of its fault points, and check what it leaves behind.

How one operation (``Operation``: a command line and the state it starts from) is swept:

1. **A prepared state**, built once in the test process (``build_state``): a home
   folder (SQLite + local store), or a PostgreSQL database used as a template and a
   bucket prefix (PostgreSQL + S3). Each run gets a fresh copy: ``shutil.copytree``
   of the folder; ``CREATE DATABASE run TEMPLATE tmpl`` and ``copy_object`` of every
   object into a new prefix.
2. **Children forked from a zygote** (``Zygote``): one Python process that imported
   torch, SQLAlchemy, Alembic, psycopg, boto3 (and parsed botocore's S3 model) and the
   registry once, then forks a child per request, so a run costs a fork, not a
   2-second start. Every run is a fresh process with its own REGISTRY_HOME (or
   database and prefix) and cache folder, in a folder of its own (no git repository).
3. **The command** runs through ``registry.cli.main()``, the console script (exactly
   what the ``registry`` command runs), with ``registry._faults.hook`` installed: it
   counts the points passed, on any thread. The child adds points of its own:
   ``sqlite.step`` every ``Operation.sqlite_step`` SQLite VM instructions (a progress
   handler on every ``sqlite3`` connection: inside statements and commits),
   ``sqla.execute`` before each statement SQLAlchemy runs (Alembic's migrations), and
   ``s3.<Operation>`` before each call to the bucket that is not a write (listings,
   HeadObject, ranged GETs; writes have ``object.*`` points already). A first run
   only counts, recording the names in order; then each run is to die at one point,
   named by (point, occurrence) rather than by its index among all points, since
   points passed on other threads (a pack's sealing, an upload's parts) interleave
   differently from run to run. There the hook writes the point, its index and the
   SQL statement last started to a file, and SIGKILLs its process.
4. **The check** (``_check``, in a child too): the catalogue as the API shows it
   (``snapshot``: every version with its tensor table, tags, aliases, description,
   parent, provenance, and the whole history, less times and hosts) must be exactly
   the state before the command or exactly the state an uninterrupted run left: no
   version, tag or alias change is half visible. Every listed version loads
   (``Registry.load``) to exactly the weights pushed (``fingerprint``), and
   ``registry verify`` exits 0. A command killed before its effect is run again
   through the CLI and must then give the uninterrupted run's state. Then a new push
   and ``gc`` (grace 0) work, ``verify`` stays clean, and the store holds exactly the
   packs the catalogue names, listed without the store's code (``store_leftovers``):
   no other file, object or unfinished multipart upload, and no ``pending_packs`` row.
   ``db upgrade``: the catalogue is either at the old revision, row for row as it was
   (``sqlite_dump``), or at head; ``registry db upgrade`` then succeeds and every
   blob has its checksum.

Checks run in children so that two runs (commands or checks) proceed at once on two
cores, and nothing a check imports or patches stays in the test process.
``DAMAGES`` checks the check: damage a crash could do, made by hand, must be reported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

TESTS = Path(__file__).resolve().parent

# -- the weights ----------------------------------------------------------------------


class CrashNet(nn.Module):
    """``depth`` square linear layers and a LayerNorm: small, quick to build and load."""

    def __init__(self, width: int = 64, depth: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.norm(x)


#: The architecture as the registry records it: an import path (this module).
ARCH = "crashing:CrashNet"


@dataclass(frozen=True)
class Weights:
    """A state dict made from a seed; ``tuned_from`` another's with its last layer new."""

    seed: int
    width: int
    depth: int
    tuned_from: str | None = None


#: Every state dict the sweeps push, by key.
WEIGHTS = {
    "base": Weights(1, 256, 4),
    "tuned": Weights(2, 256, 4, tuned_from="base"),
    "other": Weights(3, 256, 4),
    "fresh": Weights(4, 512, 4),  # push-new: 4 MiB of new tensors, several write chunks
    "retuned": Weights(5, 256, 4, tuned_from="base"),
    "imp": Weights(6, 128, 3),
    "imp-tuned": Weights(7, 128, 3, tuned_from="imp"),
    "after": Weights(8, 64, 2),  # what each check pushes after the crash
    "big": Weights(9, 1024, 4),  # 16 MiB + 24 kB: a multipart upload (two parts) to a bucket
}


def weights(key: str) -> dict[str, torch.Tensor]:
    """The state dict ``key`` names, the same in every process."""
    spec = WEIGHTS[key]
    if spec.tuned_from is not None:
        state = weights(spec.tuned_from)
        generator = torch.Generator().manual_seed(spec.seed)
        last = f"layers.{spec.depth - 1}"
        for suffix in ("weight", "bias"):
            name = f"{last}.{suffix}"
            state[name] = torch.randn(state[name].shape, generator=generator)
        return state
    torch.manual_seed(spec.seed)
    return {k: v.clone() for k, v in CrashNet(spec.width, spec.depth).state_dict().items()}


def arch_args(key: str) -> list[str]:
    """The push options that name CrashNet with ``key``'s size."""
    spec = WEIGHTS[key]
    return [
        "--arch",
        ARCH,
        "--arch-arg",
        f"width={spec.width}",
        "--arch-arg",
        f"depth={spec.depth}",
    ]


def arch_kwargs(key: str) -> dict[str, int]:
    spec = WEIGHTS[key]
    return {"width": spec.width, "depth": spec.depth}


def fingerprint(state: dict[str, torch.Tensor]) -> list[tuple[str, str, list[int], str]]:
    """Each entry's name, dtype, shape and the sha256 of its bytes: what a state dict
    must be, made once in the test process (checks compare against it, cheaply)."""
    return [
        (
            name,
            str(t.dtype),
            list(t.shape),
            hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest(),
        )
        for name, t in state.items()
    ]


def same_weights(state: dict[str, torch.Tensor], wanted: list) -> str | None:
    """None if ``state`` has the ``wanted`` fingerprint; else what differs."""
    seen = fingerprint(state)
    if [s[0] for s in seen] != [w[0] for w in wanted]:
        return f"keys {[s[0] for s in seen]} != {[w[0] for w in wanted]}"
    for a, b in zip(seen, map(tuple, wanted)):
        if a != b:
            return f"tensor {a[0]} differs"
    return None


# -- operations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One writing command to kill: ``args`` after ``registry`` (``{files}`` is the folder
    of prepared files), the prepared state it starts from, the versions it may add (ref
    -> weights key), and ``sqlite_step``: VM instructions between two ``sqlite.step``
    points (0: none)."""

    name: str
    state: str
    args: tuple[str, ...]
    adds: tuple[tuple[str, str], ...] = ()
    sqlite_step: int = 0
    #: For ``db upgrade``: the revision the prepared catalogue is at.
    upgrade_from: str | None = None


def _push(file: str, *extra: str) -> tuple[str, ...]:
    return ("push", f"{{files}}/{file}.pth", *arch_args(file), *extra)


#: The SQLite + folder sweeps. sqlite_step is chosen so that each operation passes
#: some 40 to 500 points, at least one SQLite step inside most statements.
LOCAL_OPERATIONS = {
    op.name: op
    for op in (
        Operation("push-new", "base", _push("fresh", "--name", "fresh"), (("fresh:1", "fresh"),), 40),
        Operation(
            "push-dedup", "base", _push("base", "--name", "copy", "--tag", "stage=copy"),
            (("copy:1", "base"),), 40,
        ),
        Operation(
            "push-finetune", "base", _push("retuned", "--name", "base", "--parent", "base:1"),
            (("base:3", "retuned"),), 40,
        ),
        Operation("gc-delete", "gc-delete", ("gc",), (), 40),
        Operation("gc-rewrite", "gc-rewrite", ("gc",), (), 40),
        Operation(
            "import", "base", ("import", "{files}/bundle.tar"),
            (("imp:1", "imp"), ("imp:2", "imp-tuned")), 40,
        ),
        Operation("rm", "base", ("rm", "base:1", "--yes", "--force"), (), 5),
        Operation("alias", "base", ("alias", "base:2", "prod"), (), 5),
        Operation("tag", "base", ("tag", "base:1", "stage=prod", "owner=ops"), (), 5),
        Operation("db-upgrade", "upgrade", ("db", "upgrade"), (), 20, upgrade_from="0001"),
    )
}  # fmt: skip

#: The PostgreSQL + S3 sweeps (no SQLite steps: the points are statements and writes
#: to the bucket, a multipart upload's parts among them).
TEAM_OPERATIONS = {
    op.name: op
    for op in (
        Operation("push-new", "base", _push("big", "--name", "big"), (("big:1", "big"),)),
        Operation("gc-rewrite", "gc-rewrite", ("gc",), ()),
    )
}


# -- prepared states ------------------------------------------------------------------


def write_files(folder: Path) -> None:
    """The checkpoints the operations push (``KEY.pth``) and the bundle they import."""
    folder.mkdir(parents=True, exist_ok=True)
    for key in WEIGHTS:
        torch.save(weights(key), folder / f"{key}.pth")
    from registry import Registry

    source = folder / "bundle-source"
    with environment({"REGISTRY_HOME": str(source)}), Registry() as reg:
        reg.push(weights("imp"), "imp", arch=ARCH, arch_kwargs=arch_kwargs("imp"), tags={"k": "v"})
        reg.push(
            weights("imp-tuned"), "imp", arch=ARCH, arch_kwargs=arch_kwargs("imp-tuned"),
            parent="imp:1", description="imported fine-tune",
        )  # fmt: skip
        reg.alias("imp:2", "best")
        # Already stored in the target as other:1: merged, not added.
        reg.push(weights("other"), "other", arch=ARCH, arch_kwargs=arch_kwargs("other"))
        reg.export(["imp:1", "imp:2", "other:1"], folder / "bundle.tar")
    shutil.rmtree(source)


def build_base(reg: Any) -> dict[str, str]:
    """base:1 (tagged, alias prod), its fine-tune base:2, and other:1; ref -> weights key."""
    reg.push(
        weights("base"), "base", arch=ARCH, arch_kwargs=arch_kwargs("base"), tags={"stage": "dev"}
    )
    reg.push(
        weights("tuned"), "base", arch=ARCH, arch_kwargs=arch_kwargs("tuned"), parent="base:1",
        description="tuned",
    )  # fmt: skip
    reg.alias("base:1", "prod")
    reg.push(weights("other"), "other", arch=ARCH, arch_kwargs=arch_kwargs("other"))
    return {"base:1": "base", "base:2": "tuned", "other:1": "other"}


def build_state(reg: Any, state: str) -> dict[str, str]:
    """Build the prepared state ``state`` in the empty registry ``reg``."""
    refs = build_base(reg)
    if state == "gc-delete":  # other:1's pack holds only tensors no version uses
        reg.remove("other:1")
        del refs["other:1"]
    elif state == "gc-rewrite":  # base:1's pack: its last layer unused, the rest used
        reg.remove("base:1", force=True)
        del refs["base:1"]
    elif state not in ("base", "upgrade"):
        raise ValueError(state)
    return refs


def downgrade_sqlite(home: Path, revision: str) -> None:
    """Take a SQLite registry's catalogue back to ``revision`` (its rows stay)."""
    from alembic import command

    from registry.catalog import schema
    from registry.catalog.engine import make_engine

    engine = make_engine(f"sqlite:///{home / 'registry.db'}")
    with engine.begin() as connection:
        command.downgrade(schema.alembic_config(connection), revision)
    engine.dispose()


def sqlite_dump(path: Path) -> list[str]:
    """Every schema statement and row of a SQLite file, as SQL text."""
    import sqlite3

    connection = sqlite3.connect(path)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


# -- the child processes ----------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One run of an operation in a child: where, with what environment, killed where."""

    op: Operation
    env: dict[str, str]
    folder: str
    files: str
    #: Where to die: the Nth time the point NAME is passed, (NAME, N); None: count the
    #: points and kill nowhere. By name and occurrence, not by the index among all
    #: points, because points passed on other threads (a pack's sealing, the parts of
    #: an upload) interleave with the main thread's differently from run to run.
    kill_at: tuple[str, int] | None = None
    pause_at: tuple[str, int] | None = None  # stop (sleep) there instead of dying
    mark_begin: bool = False  # write folder/begin when a write transaction starts


_last_sql: list[str] = [""]


def _enter(env: dict[str, str], folder: str) -> None:
    """A child's environment: only the registry's variables given, the run's folder as
    the current one (no git repository: provenance asks git of it), output to files."""
    for name in list(os.environ):
        if name.startswith(("REGISTRY_", "AWS_")):
            del os.environ[name]
    os.environ.update(env)
    os.chdir(folder)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        out = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(out, fd)
        os.close(out)


class _Points:
    """The fault hook: counts points (any thread), records their names when counting,
    and at ``kill_at`` writes where it is and SIGKILLs the process."""

    def __init__(self, run: Run):
        self.run = run
        self.lock = threading.Lock()
        self.count = 0
        self.seen: Counter[str] = Counter()
        self.names: list[str] = []

    def __call__(self, name: str) -> None:
        with self.lock:
            self.count += 1
            self.seen[name] += 1
            here = (name, self.seen[name])
            if self.run.kill_at is None and self.run.pause_at is None:
                self.names.append(name)
                return
            if here == self.run.pause_at:
                Path(self.run.folder, "paused").write_text(f"{os.getpid()} {name}")
                for _ in range(CHILD_TIMEOUT_S):  # holding whatever it holds, till killed
                    time.sleep(1)
                os._exit(4)
            if here == self.run.kill_at:
                where = {"at": self.count, "point": name, "sql": _last_sql[0][:120]}
                Path(self.run.folder, "killed").write_text(json.dumps(where))
                os.kill(os.getpid(), signal.SIGKILL)


def _instrument_sqlite(points: _Points, step: int, mark_begin: str | None) -> None:
    """Every sqlite3 connection opened from now on (the gateway's, and SQLAlchemy's for
    Alembic) records the statement it runs and passes ``sqlite.step`` every ``step``
    VM instructions."""
    import sqlite3
    import sqlite3.dbapi2

    class Cursor(sqlite3.Cursor):
        def execute(self, sql, *args):  # type: ignore[no-untyped-def]
            _last_sql[0] = sql
            if mark_begin and sql.startswith("BEGIN IMMEDIATE"):
                Path(mark_begin).write_text(sql)
            return super().execute(sql, *args)

        def executemany(self, sql, *args):  # type: ignore[no-untyped-def]
            _last_sql[0] = sql
            return super().executemany(sql, *args)

    class Connection(sqlite3.Connection):
        def cursor(self, factory=Cursor):  # type: ignore[no-untyped-def]
            return super().cursor(factory)

    real = sqlite3.connect

    def handler() -> int:
        points("sqlite.step")
        return 0  # go on

    def connect(*args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("factory", Connection)
        connection = real(*args, **kwargs)
        if step:
            connection.set_progress_handler(handler, step)
        return connection

    sqlite3.connect = connect
    sqlite3.dbapi2.connect = connect  # SQLAlchemy's pysqlite dialect calls this one


#: Bucket writes: the registry passes ``object.<operation>`` before each itself.
_S3_WRITES = {
    "PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload",
    "AbortMultipartUpload", "DeleteObject", "DeleteObjects", "CopyObject",
}  # fmt: skip


def _instrument_s3_reads(points: _Points) -> None:
    """A point ``s3.<Operation>`` before every other call to a bucket (HeadObject, ranged
    GETs, listings): gc lists and reads the store inside its catalogue transaction."""
    try:
        import botocore.client
    except ImportError:
        return
    real = botocore.client.BaseClient._make_api_call

    def call(self, operation, params):  # type: ignore[no-untyped-def]
        if operation not in _S3_WRITES:
            points(f"s3.{operation}")
        return real(self, operation, params)

    botocore.client.BaseClient._make_api_call = call


def _instrument_postgres() -> None:
    """psycopg cursors record the statement they run (what a kill report names)."""
    try:
        import psycopg
    except ImportError:
        return
    real = psycopg.Cursor.execute

    def execute(self, query, *args, **kwargs):  # type: ignore[no-untyped-def]
        _last_sql[0] = str(query)
        return real(self, query, *args, **kwargs)

    psycopg.Cursor.execute = execute


def _operation_child(run: Run) -> None:
    """Run ``run.op`` through the console script's entry point, with the hook installed."""
    _enter(run.env, run.folder)
    points = _Points(run)
    mark = os.path.join(run.folder, "begin") if run.mark_begin else None
    _instrument_sqlite(points, run.op.sqlite_step, mark)
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "before_cursor_execute", lambda *a: points("sqla.execute"))
    _instrument_s3_reads(points)
    _instrument_postgres()
    import registry._faults
    import registry.cli

    registry._faults.hook = points
    sys.argv = ["registry", *(a.replace("{files}", run.files) for a in run.op.args)]
    code: Any = 0
    try:
        registry.cli.main()
    except SystemExit as exit:
        code = exit.code or 0
    registry._faults.hook = None
    Path(run.folder, "result").write_text(json.dumps({"exit": code, "names": points.names}))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if code == 0 else 3)  # no atexit work: what a run leaves is what it left


@dataclass(frozen=True)
class Check:
    """What a check child looks at and what it accepts."""

    op: Operation
    env: dict[str, str]
    folder: str
    files: str
    expected: dict[str, str]  # ref -> weights key, of every version that may be listed
    fingerprints: dict[str, list]  # weights key -> fingerprint()
    before: Any = None  # the state before the operation (snapshot), or None: anything
    after: Any = None  # the state an uninterrupted run leaves
    before_dump: list[str] | None = None  # db upgrade: the old catalogue, as SQL
    describe_only: bool = False  # only describe (the prepared state): change nothing


#: Fields of a version that differ between two otherwise identical runs.
_VOLATILE = {"created_at", "git_commit", "git_dirty", "pushed_host"}


def snapshot(reg: Any) -> dict[str, Any]:
    """The catalogue as the API shows it, minus times and hosts: every version with its
    tensor table, tags, aliases, description and parent; every event of the history."""
    versions = {}
    for listed in reg.list(sort="name"):
        version = reg.get(listed.ref)
        record = version.to_dict(tensors=True)
        for key in _VOLATILE:
            record.pop(key, None)
        versions[version.ref] = record
    events = []
    for event in reg.log():
        record = {
            k: v for k, v in event.to_dict().items() if k not in ("at", "id", "host", "summary")
        }
        for part in ("before", "after"):
            if isinstance(record.get(part), dict):
                record[part] = {k: v for k, v in record[part].items() if k not in _VOLATILE}
        events.append(record)
    return json.loads(json.dumps({"versions": versions, "events": events}, default=str))


def state_difference(seen: dict[str, Any], wanted: dict[str, Any]) -> str:
    """A short account of how ``seen`` differs from ``wanted``."""
    lines = []
    a, b = seen["versions"], wanted["versions"]
    for ref in sorted(set(a) | set(b)):
        if ref not in a:
            lines.append(f"{ref} missing")
        elif ref not in b:
            lines.append(f"{ref} unexpected")
        elif a[ref] != b[ref]:
            fields = [k for k in set(a[ref]) | set(b[ref]) if a[ref].get(k) != b[ref].get(k)]
            lines.append(f"{ref} differs in {sorted(fields)}")
    if seen["events"] != wanted["events"]:
        lines.append(f"history: {len(seen['events'])} events vs {len(wanted['events'])}")
    return "; ".join(lines) or "(no difference)"


def _run_cli(args: list[str]) -> int:
    """The console script in this process (a check's retry); its exit code."""
    import registry.cli

    sys.argv = ["registry", *args]
    try:
        registry.cli.main()
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else (1 if exit.code else 0)
    return 0


def store_leftovers(reg: Any) -> list[str]:
    """Files or objects (and unfinished uploads) in the store that no catalogue pack is,
    and catalogue packs the store lacks, listed without the store's own code."""
    with reg._gateway.read() as catalog:
        packs = set(catalog.packs())
        pending = set(catalog.pending_packs())
    problems = [f"pending_packs row {p} left" for p in sorted(pending)]
    store = reg._store
    if getattr(store, "remote", False):
        import boto3

        bucket, prefix = store.location.bucket, store.location.prefix
        client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        found = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.update(item["Key"] for item in page.get("Contents", ()))
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads") or []
        problems += [f"unfinished upload {u['Key']}" for u in uploads]
        wanted = {store.key(p) for p in packs}
    else:
        root = Path(store.root)
        found = {str(p) for p in root.rglob("*") if not p.is_dir()}
        wanted = {str(store.pack_path(p)) for p in packs}
    problems += [f"orphan {f}" for f in sorted(found - wanted)]
    problems += [f"pack {f} missing" for f in sorted(wanted - found)]
    return problems


def _check_child(check: Check) -> None:
    """Check a registry after a run; writes folder/check: problems found, and the state."""
    result: dict[str, Any] = {"problems": [], "state": None, "snapshot": None}
    try:
        _enter(check.env, check.folder)
        _check(check, result)
    except BaseException:
        result["problems"].append("the check raised:\n" + traceback.format_exc())
    Path(check.folder, "check").write_text(json.dumps(result))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _loads(reg: Any, check: Check, problems: list[str], when: str) -> None:
    """Every version listed loads as a module whose state dict is the weights pushed."""
    for version in reg.list():
        key = check.expected.get(version.ref)
        if key is None:
            problems.append(f"{when}: {version.ref} is listed but no operation made it")
            continue
        try:
            module = reg.load(version.ref)
        except Exception as exc:
            problems.append(f"{when}: {version.ref} does not load: {exc!r}")
            continue
        wrong = same_weights(module.state_dict(), check.fingerprints[key])
        if wrong:
            problems.append(f"{when}: {version.ref} loads wrong weights: {wrong}")


def _verify(reg: Any, problems: list[str], when: str) -> None:
    """`registry verify` says all is intact (exit 0); if not, what the API's report says."""
    code = _run_cli(["verify"])
    if code != 0:
        report = reg.verify()
        found = [str(p) for p in report.corrupt + report.missing]
        problems.append(f"{when}: `registry verify` exited {code}: {found}")


def _check(check: Check, result: dict[str, Any]) -> None:
    from registry import Registry
    from registry.catalog.revision import SCHEMA_REVISION

    problems: list[str] = result["problems"]
    args = [a.replace("{files}", check.files) for a in check.op.args]
    reg = Registry()
    try:
        old = False
        if check.op.upgrade_from is not None:
            revision = reg.database_revision()
            if revision == check.op.upgrade_from:
                old = True
                if check.before_dump is not None:
                    dump = sqlite_dump(Path(os.environ["REGISTRY_HOME"]) / "registry.db")
                    if dump != check.before_dump:
                        problems.append(f"at revision {revision} but not as it was before")
                result["state"] = "before"
            elif revision != SCHEMA_REVISION:
                problems.append(f"at revision {revision}: neither before nor after")
                return
        if not old:
            seen = snapshot(reg)
            result["snapshot"] = seen
            if check.after is not None:
                if seen == check.after:  # gc's, and a repeated tag's, are both
                    result["state"] = "unchanged" if seen == check.before else "after"
                elif seen == check.before:
                    result["state"] = "before"
                else:
                    problems.append(
                        "half done: the catalogue is neither as before nor as after "
                        f"(vs after: {state_difference(seen, check.after)}; "
                        f"vs before: {state_difference(seen, check.before)})"
                    )
            _loads(reg, check, problems, "after the crash")
            _verify(reg, problems, "after the crash")
        if check.describe_only or problems:
            return
        # Run it again: the uninterrupted run's state, whatever the crash left.
        if result["state"] == "before" or check.op.upgrade_from is not None:
            code = _run_cli(args)
            if code != 0:
                problems.append(f"`registry {' '.join(args)}` run again failed ({code})")
                return
            reg.close()
            reg = Registry()
            if check.after is not None and (seen := snapshot(reg)) != check.after:
                problems.append(f"run again, not as after: {state_difference(seen, check.after)}")
            _loads(reg, check, problems, "run again")
        if check.op.upgrade_from is not None:
            with reg._gateway.read() as catalog:
                left = catalog.execute("SELECT count(*) FROM blobs WHERE checksum IS NULL")[0][0]
            if left:
                problems.append(f"{left} blobs without a checksum after db upgrade")
        # The next push and gc work, and gc leaves exactly what the catalogue names.
        pushed = reg.push(
            Path(check.files) / "after.pth",
            "aftercrash",
            arch=ARCH,
            arch_kwargs=arch_kwargs("after"),
        )
        reg.gc(grace=0)  # every file no version names goes, whatever its age
        _verify(reg, problems, "after push and gc")
        problems += store_leftovers(reg)
        wrong = same_weights(reg.load_state_dict(pushed.ref), check.fingerprints["after"])
        if wrong:
            problems.append(f"the push after the crash loads wrong weights: {wrong}")
    finally:
        reg.close()


# -- choosing where to kill --------------------------------------------------------------


#: Points passed once per something small and many (a few SQLite VM instructions, a
#: 1 MiB chunk of a pack): the sweeps kill at a sample of them; at every other point
#: (each statement, commit, pack step and bucket call) they kill at every occurrence.
FINE = {"sqlite.step", "pack.write"}
#: Kills at FINE points per sweep, spread over the run, besides the first and last.
FINE_KILLS = 12


def kill_indices(names: list[str], budget: int, seed: int) -> list[int]:
    """Kill indices in 1..len(names): every point not in FINE; the first, the last and
    FINE_KILLS more of the FINE ones, spread evenly with a seeded jitter; then, if that
    makes fewer than ``budget``, more spread over the whole run (all if fewer)."""
    total = len(names)
    rng = random.Random(seed)
    chosen = {i for i, name in enumerate(names, start=1) if name not in FINE}
    for point in FINE & set(names):
        where = [i for i, name in enumerate(names, start=1) if name == point]
        chosen.update((where[0], where[-1]))
    fine = [i for i, name in enumerate(names, start=1) if name in FINE and i not in chosen]
    stretches = min(FINE_KILLS, len(fine))
    for k in range(stretches):  # one in each stretch
        chosen.add(rng.choice(fine[k * len(fine) // stretches : (k + 1) * len(fine) // stretches]))
    rest = [i for i in range(1, total + 1) if i not in chosen]
    chosen.update(rng.sample(rest, max(0, min(len(rest), budget - len(chosen)))))
    return sorted(chosen)


def quick_indices(names: list[str], seed: int, count: int = 4) -> list[int]:
    """A handful of kills for the everyday run: just before and just after the last
    commit, the last statement Alembic runs (db upgrade's migration: before its commit),
    the last pack or bucket step if any, and one at random."""
    chosen = []
    for point in ("sql.commit", "sql.committed", "sqla.execute"):
        last = [i for i, n in enumerate(names, start=1) if n == point]
        if last:
            chosen.append(last[-1])
    pack = [
        i
        for i, n in enumerate(names, start=1)
        if n.startswith(("pack.", "object.")) and n != "pack.write"
    ]
    if pack:
        chosen.append(pack[-1])
    rng = random.Random(seed)
    while len(set(chosen)) < min(count, len(names)):
        chosen.append(rng.randint(1, len(names)))
    return sorted(set(chosen))


# -- the parent side ------------------------------------------------------------------------


def targets(names: list[str], indices: list[int]) -> list[tuple[str, int]]:
    """Indices among all the points passed, as (name, occurrence of that name)."""
    return [(names[i - 1], names[:i].count(names[i - 1])) for i in indices]


@dataclass
class Outcome:
    """One killed run and what its check found."""

    target: tuple[str, int]  # where it was to die: (point, occurrence)
    point: str | None  # where it died, None if it ran to the end
    index: int | None = None  # among all the points this run passed
    sql: str = ""
    state: str | None = None  # "before" / "after" as the check saw it
    problems: list[str] = field(default_factory=list)


@dataclass
class Sweep:
    """What sweeping one operation gave."""

    op: Operation
    backend: str
    names: list[str]
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def killed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.point is not None]

    @property
    def distinct(self) -> int:
        """Distinct points (name, occurrence) it was killed at."""
        return len({o.target for o in self.killed})

    @property
    def problems(self) -> list[str]:
        return [
            f"{self.backend} {self.op.name} killed at {o.point} #{o.target[1]} (point "
            f"{o.index} of the run; last SQL {o.sql!r}): {p}"
            for o in self.outcomes
            for p in o.problems
        ]

    def summary(self) -> str:
        states = Counter(o.state for o in self.outcomes)
        names = Counter(self.names)
        return (
            f"{self.backend} {self.op.name}: {len(self.names)} points passed "
            f"({', '.join(f'{n} x{c}' for n, c in sorted(names.items()))}); "
            f"{len(self.killed)} kills at {self.distinct} distinct points "
            f"({len({o.point for o in self.killed})} names); left as before {states['before']}, "
            f"as after {states['after']}, unchanged (before = after) {states['unchanged']}; "
            f"{self.seconds:.1f} s"
        )


@contextlib.contextmanager
def environment(env: dict[str, str]):  # type: ignore[no-untyped-def]
    """``env`` in os.environ (the registry's and AWS variables only) for a block."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(("REGISTRY_", "AWS_"))}
    for name in saved:
        del os.environ[name]
    os.environ.update(env)
    try:
        yield
    finally:
        for name in env:
            os.environ.pop(name, None)
        os.environ.update(saved)


class Backend:
    """Where prepared states live and how a run gets a fresh copy of one."""

    name = "?"

    def prepare(
        self, key: str, build: Callable[[Any], dict[str, str]]
    ) -> tuple[Any, dict[str, str]]:
        raise NotImplementedError

    def fresh(self, template: Any, folder: Path) -> dict[str, str]:
        raise NotImplementedError

    def discard(self, env: dict[str, str]) -> None:
        pass


class LocalBackend(Backend):
    """SQLite + a local folder store: a prepared state is a home folder."""

    name = "local"

    def __init__(self, root: Path):
        self.root = root

    def prepare(self, key, build):
        from registry import Registry

        home = self.root / f"prepared-{key}"
        with environment({"REGISTRY_HOME": str(home)}), Registry() as reg:
            refs = build(reg)
        return home, refs

    def fresh(self, template, folder):
        home = folder / "home"
        shutil.copytree(template, home)
        return {"REGISTRY_HOME": str(home), "REGISTRY_CACHE_DIR": str(folder / "cache")}


class TeamBackend(Backend):
    """PostgreSQL + S3: a prepared state is a template database and a bucket prefix."""

    name = "team"

    def __init__(self, root: Path, postgres: Any, seaweed: Any, bucket: str):
        self.root, self.postgres, self.seaweed, self.bucket = root, postgres, seaweed, bucket
        self.client = seaweed.client()
        self.tag = uuid.uuid4().hex[:6]
        self.lock = threading.Lock()

    def _url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.postgres.SUPERUSER}@127.0.0.1:{self.postgres.port}/{database}"

    def _env(self, database: str, prefix: str, folder: Path) -> dict[str, str]:
        return {
            "REGISTRY_HOME": str(folder / "home"),
            "REGISTRY_DATABASE_URL": self._url(database),
            "REGISTRY_STORAGE_URL": f"s3://{self.bucket}/{prefix}",
            "REGISTRY_CACHE_DIR": str(folder / "cache"),
            **self.seaweed.env(),
        }

    def prepare(self, key, build):
        from registry import Registry

        database, prefix = f"crash_{self.tag}_{key}".replace("-", "_"), f"crash-{self.tag}/{key}/"
        self.postgres.execute(f'CREATE DATABASE "{database}"')
        folder = self.root / f"prepared-team-{key}"
        folder.mkdir(parents=True)
        env = self._env(database, prefix, folder)
        with environment(env), Registry() as reg:
            refs = build(reg)
        return (database, prefix), refs

    def fresh(self, template, folder):
        database, prefix = template
        run = f"r{uuid.uuid4().hex[:12]}"
        with self.lock:  # CREATE DATABASE from one template: one at a time
            self.postgres.execute(f'CREATE DATABASE "{run}" TEMPLATE "{database}"')
        new_prefix = f"crash-{self.tag}/{run}/"
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in pages:
            for item in page.get("Contents", ()):
                self.client.copy_object(
                    Bucket=self.bucket,
                    Key=new_prefix + item["Key"][len(prefix) :],
                    CopySource={"Bucket": self.bucket, "Key": item["Key"]},
                )
        return self._env(run, new_prefix, folder)

    def discard(self, env):
        database = env["REGISTRY_DATABASE_URL"].rsplit("/", 1)[1]
        self.postgres.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        prefix = env["REGISTRY_STORAGE_URL"].split("/", 3)[3]
        for upload in (
            self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix).get("Uploads")
            or []
        ):
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in pages:
            for item in page.get("Contents", ()):
                self.client.delete_object(Bucket=self.bucket, Key=item["Key"])


#: What the zygote imports once, so that each run starts warm.
PRELOAD = [
    "torch",
    "numpy",
    "safetensors.torch",
    "xxhash",
    "sqlalchemy",
    "sqlalchemy.orm",
    "sqlalchemy.dialects.sqlite",
    "alembic.command",
    "alembic.config",
    "psycopg",
    "boto3",
    "botocore.client",
    "registry",
    "registry.api",
    "registry.cli",
    "registry.catalog.schema",
    "registry.catalog.models",
    "registry.architectures.building",
    "registry.architectures.checking",
    "registry.architectures.describing",
    "registry.architectures.identifying",
    "registry.architectures.loading",
    "registry.checkpoints",
    "registry.fitting",
    "registry.provenance",
    "registry.tensors",
    "torch.utils.serialization",
    "registry.pipelines.push",
    "registry.pipelines.read",
    "registry.pipelines.bundles",
    "registry.pipelines.maintenance",
    "registry.storage.s3",
    "crashing",
]

#: A child that takes longer than this is stuck (and killed): a run takes ~1 s.
CHILD_TIMEOUT_S = 120

#: The zygote: imports PRELOAD once, then forks one child per request line on stdin
#: ({"id", "target": "module:function", "argument": base64 pickle}) and reports on its
#: original stdout "started ID PID" and "ended ID CODE" (CODE < 0: killed by signal
#: -CODE). It stays single-threaded (it polls with select and waitpid), so forking it
#: is safe, and it exits when its stdin closes.
_ZYGOTE = r"""
import base64, importlib, json, os, pickle, select, sys
sys.path[:0] = json.loads(sys.argv[1])
for name in json.loads(sys.argv[2]):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
importlib.import_module("crashing").share_botocore_models()
report = os.dup(1)
os.dup2(2, 1)
children, buffer, source = {}, b"", sys.stdin.fileno()
os.write(report, b"ready\n")
while True:
    readable, _, _ = select.select([source], [], [], 0.005)
    if readable:
        data = os.read(source, 1 << 16)
        if not data:  # the test process is done (or gone): no clean-up worth waiting for
            os._exit(0)
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                code = 70
                try:
                    os.close(report)
                    os.close(source)
                    module, _, function = request["target"].partition(":")
                    argument = pickle.loads(base64.b64decode(request["argument"]))
                    getattr(importlib.import_module(module), function)(argument)
                    code = 0
                finally:
                    os._exit(code)
            children[pid] = request["id"]
            os.write(report, f"started {request['id']} {pid}\n".encode())
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        os.write(report, f"ended {children.pop(pid)} {code}\n".encode())
"""


def share_botocore_models() -> None:
    """In the zygote: botocore parses its S3 model (JSON, ~0.2 s of CPU) again for the
    client of every new session, which each Registry opens; keyed on the arguments, the
    parsed models are kept for the process and made once here, so that every child
    shares them. (botocore already shares them between the clients of one session.)"""
    try:
        import boto3
        import botocore.loaders
    except ImportError:
        return
    cache: dict[tuple[Any, ...], Any] = {}

    def shared(method: Callable[..., Any]) -> Callable[..., Any]:
        def load(self: Any, *args: Any, **kwargs: Any) -> Any:
            key = (method.__name__, tuple(self.search_paths), args, tuple(sorted(kwargs.items())))
            if key not in cache:
                cache[key] = method(self, *args, **kwargs)
            return cache[key]

        return load

    loader = botocore.loaders.Loader
    loader.load_service_model = shared(loader.load_service_model)
    loader.load_data_with_path = shared(loader.load_data_with_path)
    boto3.session.Session().client(
        "s3",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",  # never called: the client is only built
        aws_access_key_id="warm",
        aws_secret_access_key="warm",
    )


class Zygote:
    """A warm Python process that forks the harness's children (see _ZYGOTE).

    Cheaper than ``multiprocessing``'s fork server, which runs the test session's
    ``__main__`` again in every child, and simpler to read: one request, one fork."""

    def __init__(self, preload: list[str]):
        import subprocess

        self.process = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE, json.dumps([str(TESTS)]), json.dumps(preload)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._ready: Future[None] = Future()  # once it has imported PRELOAD
        self._lock = threading.Lock()
        self._ids = iter(range(1, 10**9))
        self._pids: dict[int, Future[int]] = {}
        self._codes: dict[int, Future[int]] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        if self.process.stdout.readline() == b"ready\n":
            self._ready.set_result(None)
        else:
            self._ready.set_exception(RuntimeError("the crash harness's zygote did not start"))
        for line in self.process.stdout:
            what, ident, number = line.decode().split()
            table = self._pids if what == "started" else self._codes
            with self._lock:
                future = table[int(ident)]
            future.set_result(int(number))
        with self._lock:  # the zygote is gone: nobody waits for ever
            for future in [*self._pids.values(), *self._codes.values()]:
                if not future.done():
                    future.set_exception(RuntimeError("the zygote died"))

    def run(self, target: Callable[[Any], None], argument: Any, timeout: float) -> int | None:
        """Fork a child that runs ``target(argument)``; its exit code (negative: the
        signal that ended it), or None if it ran past ``timeout`` (then it is killed)."""
        import base64
        import pickle

        self._ready.result(timeout)
        with self._lock:
            ident = next(self._ids)
            self._pids[ident], self._codes[ident] = Future(), Future()
            request = {
                "id": ident,
                "target": f"{target.__module__}:{target.__qualname__}",
                "argument": base64.b64encode(pickle.dumps(argument)).decode(),
            }
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
        try:
            pid = self._pids[ident].result(timeout)
            try:
                return self._codes[ident].result(timeout)
            except FutureTimeout:
                os.kill(pid, signal.SIGKILL)  # our own child's child, by its pid
                self._codes[ident].result()
                return None
        finally:
            with self._lock:
                del self._pids[ident], self._codes[ident]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(60)
        self._reader.join(10)


class Harness:
    """Runs operations and checks in processes forked from one warm zygote."""

    def __init__(self, root: Path, workers: int = 2):
        self.root = root
        self.files = root / "files"
        self.zygote = Zygote([m for m in PRELOAD if _importable(m)])  # warms up meanwhile
        write_files(self.files)
        self.fingerprints = {key: fingerprint(weights(key)) for key in WEIGHTS}
        self.workers = workers
        self._prepared: dict[tuple[str, str], tuple[Any, dict[str, str]]] = {}
        self._counts: dict[tuple[str, str], tuple[list[str], Any]] = {}
        self._befores: dict[tuple[str, str], Any] = {}
        self._runs = iter(range(1, 10**9))
        self._lock = threading.Lock()

    def close(self) -> None:
        self.zygote.close()

    # -- processes

    def child(self, target: Callable[[Any], None], argument: Any) -> int | None:
        """Run ``target(argument)`` in a fresh process forked from the zygote."""
        return self.zygote.run(target, argument, CHILD_TIMEOUT_S)

    def folder(self, label: str) -> Path:
        with self._lock:
            number = next(self._runs)
        path = self.root / "runs" / f"{number:05d}-{label}"
        path.mkdir(parents=True)
        return path

    # -- states

    def prepared(self, backend: Backend, op: Operation) -> tuple[Any, dict[str, str]]:
        key = (backend.name, op.state)
        if key not in self._prepared:
            template, refs = backend.prepare(op.state, lambda reg: build_state(reg, op.state))
            if op.upgrade_from is not None:
                downgrade_sqlite(template, op.upgrade_from)
            self._prepared[key] = template, refs
        return self._prepared[key]

    def expected(self, backend: Backend, op: Operation) -> dict[str, str]:
        return {**self.prepared(backend, op)[1], **dict(op.adds)}

    def before(self, backend: Backend, op: Operation) -> Any:
        """The prepared state as the API shows it (None for an old catalogue)."""
        key = (backend.name, op.state)
        if op.upgrade_from is not None:
            return None
        if key not in self._befores:
            template, refs = self.prepared(backend, op)
            folder = self.folder(f"{backend.name}-{op.state}-before")
            env = backend.fresh(template, folder)
            result = self._check(op, env, folder, refs, describe_only=True)
            backend.discard(env)
            assert not result["problems"], result["problems"]
            self._befores[key] = result["snapshot"]
        return self._befores[key]

    def count(self, backend: Backend, op: Operation) -> tuple[list[str], Any]:
        """The points an uninterrupted run passes, and the state it leaves (checked)."""
        key = (backend.name, op.name)
        if key not in self._counts:
            template, _refs = self.prepared(backend, op)
            folder = self.folder(f"{backend.name}-{op.name}-count")
            env = backend.fresh(template, folder)
            code = self.child(_operation_child, Run(op, env, str(folder), str(self.files)))
            result = _read_json(folder / "result")
            assert code == 0 and result and result["exit"] == 0, (
                f"{op.name} failed without a kill ({code}): {_tail(folder / 'stderr')}"
            )
            check = self._check(op, env, folder, self.expected(backend, op))
            backend.discard(env)
            assert not check["problems"], check["problems"]
            self._counts[key] = result["names"], check["snapshot"]
        return self._counts[key]

    def _check(
        self,
        op: Operation,
        env: dict[str, str],
        folder: Path,
        expected: dict[str, str],
        *,
        before: Any = None,
        after: Any = None,
        before_dump: list[str] | None = None,
        describe_only: bool = False,
    ) -> dict[str, Any]:
        check = Check(
            op, env, str(folder), str(self.files), expected, self.fingerprints,
            before, after, before_dump, describe_only,
        )  # fmt: skip
        code = self.child(_check_child, check)
        result = _read_json(folder / "check")
        if code != 0 or result is None:
            return {
                "problems": [f"the check died ({code}): {_tail(folder / 'stderr')}"],
                "state": None,
            }
        return result

    # -- sweeps

    def sweep(
        self,
        backend: Backend,
        op: Operation,
        where: list[tuple[str, int]],
    ) -> Sweep:
        """Kill ``op`` at each of ``where`` ((point, occurrence): see ``targets``), each
        time in a fresh copy of its prepared state, and check what every kill left."""
        started = time.monotonic()
        template, _refs = self.prepared(backend, op)
        with ThreadPoolExecutor(2) as pool:  # both cached after the first sweep
            counted = pool.submit(self.count, backend, op)
            before = pool.submit(self.before, backend, op).result()
            names, after = counted.result()
        dump = None
        if op.upgrade_from is not None and backend.name == "local":
            dump = sqlite_dump(template / "registry.db")
        expected = self.expected(backend, op)

        def one(target: tuple[str, int]) -> Outcome:
            folder = self.folder(f"{backend.name}-{op.name}-{target[0]}-{target[1]}")
            env = backend.fresh(template, folder)
            outcome = Outcome(target, None)
            try:
                run = Run(op, env, str(folder), str(self.files), kill_at=target)
                code = self.child(_operation_child, run)
                killed = _read_json(folder / "killed") or {}
                outcome.point, outcome.index = killed.get("point"), killed.get("at")
                outcome.sql = killed.get("sql", "")
                if code == -signal.SIGKILL and killed:
                    pass
                elif code == 0 and not killed:
                    pass  # it passed fewer points this time and ran to its end
                else:
                    outcome.problems.append(
                        f"the operation ended with {code} instead of dying at its point: "
                        f"{_tail(folder / 'stderr')}"
                    )
                    return outcome
                result = self._check(
                    op, env, folder, expected, before=before, after=after, before_dump=dump,
                )  # fmt: skip
                outcome.state = result.get("state")
                outcome.problems += result["problems"]
                return outcome
            finally:
                backend.discard(env)
                if not outcome.problems:  # else kept, to look at
                    shutil.rmtree(folder, ignore_errors=True)

        sweep = Sweep(op, backend.name, names)
        with ThreadPoolExecutor(self.workers) as pool:
            sweep.outcomes = list(pool.map(one, where))
        sweep.seconds = time.monotonic() - started
        return sweep


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def _importable(module: str) -> bool:
    import importlib.util

    with contextlib.suppress(ImportError, ValueError):
        return importlib.util.find_spec(module) is not None
    return False


# -- a writer killed while it holds SQLite's write lock ------------------------------------


def _wait_for(path: Path) -> str:
    """The text of ``path`` once a child has written it."""
    for _ in range(CHILD_TIMEOUT_S * 20):
        with contextlib.suppress(OSError):
            text = path.read_text()
            if text:
                return text
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared: {_tail(path.parent / 'stderr')}")


def write_locked(database: Path) -> bool:
    """Whether another connection holds the SQLite file's write lock right now."""
    import sqlite3

    connection = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        return True
    finally:
        connection.close()


def kill_the_lock_holder(harness: Harness, backend: LocalBackend) -> dict[str, Any]:
    """`registry tag base:1 stage=held` stops just before its COMMIT (its write
    transaction open: the write lock held); `registry tag base:1 stage=next` starts
    and waits for the lock; the first is SIGKILLed. What happened, as facts."""
    held = Operation("tag-held", "base", ("tag", "base:1", "stage=held"))
    following = Operation("tag-next", "base", ("tag", "base:1", "stage=next"))
    names, _after = harness.count(backend, held)
    commit = ("sql.commit", names.count("sql.commit"))  # the write transaction's
    template, _refs = harness.prepared(backend, held)
    folder = harness.folder("local-lock")
    env = backend.fresh(template, folder)
    first, second = folder / "first", folder / "second"
    first.mkdir()
    second.mkdir()
    facts: dict[str, Any] = {}
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(
            harness.child,
            _operation_child,
            Run(held, env, str(first), str(harness.files), pause_at=commit),
        )
        pid, point = _wait_for(first / "paused").split()
        facts["paused at"] = point
        facts["lock held"] = write_locked(Path(env["REGISTRY_HOME"]) / "registry.db")
        b = pool.submit(
            harness.child,
            _operation_child,
            Run(following, env, str(second), str(harness.files), mark_begin=True),
        )
        facts["second began"] = _wait_for(second / "begin")
        facts["second waiting"] = not b.done() and not (second / "result").exists()
        os.kill(int(pid), signal.SIGKILL)  # the first child, by its pid
        facts["first"] = a.result()
        facts["second"] = b.result()
    facts["second result"] = (_read_json(second / "result") or {}).get("exit")
    facts["second stderr"] = _tail(second / "stderr")
    from registry import Registry

    with environment(env), Registry() as reg:
        facts["tags"] = reg.get("base:1").tags
        facts["tag events"] = [e.after for e in reg.log("base:1") if e.kind == "tag"]
        facts["verify"] = reg.verify().ok
    return facts


# -- the check, checked ---------------------------------------------------------------------

#: Damage a crash could do, made by hand in a copy of the "base" state, and what the
#: check must say about it (checked against `registry tag base:1 stage=prod owner=ops`).
DAMAGES = {
    # a version whose tensor rows are partly there
    "tensor rows missing": (
        "DELETE FROM tensors WHERE name LIKE 'layers.3.%' AND version_id = (SELECT v.id "
        "FROM versions v JOIN models m ON m.id = v.model_id WHERE m.name = 'base' AND v.version = 2)",
        "half done",
    ),
    # the tag command's two changes, one of them made
    "half the tags": (
        "UPDATE tags SET value = 'prod' WHERE key = 'stage'",
        "half done",
    ),
    # a pack gone that a version uses
    "pack file lost": ("lose other:1's pack", "`registry verify` exited 1"),
    # a file in the store that gc does not know about
    "stray file": ("leave objects/tmp/stray", "orphan"),
}


def damage(home: Path, how: str) -> None:
    """Do the damage DAMAGES[how] names to the SQLite + folder registry at ``home``."""
    import sqlite3

    what = DAMAGES[how][0]
    connection = sqlite3.connect(home / "registry.db", isolation_level=None)
    try:
        if what == "lose other:1's pack":
            (pack,) = connection.execute(
                "SELECT b.pack_id FROM tensors t JOIN blobs b ON b.digest = t.digest "
                "JOIN versions v ON v.id = t.version_id JOIN models m ON m.id = v.model_id "
                "WHERE m.name = 'other' AND t.name = 'layers.0.weight'"
            ).fetchone()
            (home / "objects" / "packs" / pack[:2] / f"{pack}.pack").unlink()
        elif what == "leave objects/tmp/stray":
            (home / "objects" / "tmp").mkdir(exist_ok=True)
            (home / "objects" / "tmp" / "stray").write_bytes(b"left by a crash")
        else:
            connection.execute(what)
    finally:
        connection.close()


def check_damaged(harness: Harness, backend: LocalBackend, how: str) -> list[str]:
    """What the check says of a copy of the "base" state damaged as DAMAGES[how] says."""
    op = LOCAL_OPERATIONS["tag"]
    _names, after = harness.count(backend, op)
    before = harness.before(backend, op)
    template, _refs = harness.prepared(backend, op)
    folder = harness.folder(f"local-damage-{how.replace(' ', '-')}")
    env = backend.fresh(template, folder)
    damage(Path(env["REGISTRY_HOME"]), how)
    result = harness._check(
        op, env, folder, harness.expected(backend, op), before=before, after=after
    )
    return result["problems"]
