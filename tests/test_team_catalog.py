"""A team's catalogue: one PostgreSQL database shared by many processes and users.

gc running while others push, remove, verify and export; the first use of an empty
database by several processes at once; a read-only (SELECT-only) role, and the
`registry db grant-reader` command that makes one. Every test runs on a real
PostgreSQL server started here, on loopback, with a local folder store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import PostgresServer

from registry import Registry
from registry.catalog.revision import SCHEMA_REVISION

TESTS = str(Path(__file__).parent)


@pytest.fixture
def database(postgres_server: PostgresServer) -> str:
    """A new, empty database on the session's PostgreSQL server; its URL (owner role)."""
    return postgres_server.new_database()


def _env(home: Path, url: str) -> dict[str, str]:
    """A registry with this catalogue and a local folder store (HOME/objects)."""
    return {
        "REGISTRY_HOME": str(home),
        "REGISTRY_DATABASE_URL": url,
        "REGISTRY_STORAGE_URL": "",  # the folder under the home, whatever the session set
        "PYTHONPATH": os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")])),
    }


def _start_all(scripts: dict[str, list[str]], env: dict[str, str]) -> dict[str, subprocess.Popen]:
    """Run each ``python -c SCRIPT ARGS...`` in a process of its own, by label."""
    return {
        label: subprocess.Popen(
            [sys.executable, "-c", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        for label, args in scripts.items()
    }


def _finish_all(procs: dict[str, subprocess.Popen], timeout: float = 120) -> dict[str, str]:
    """Each process's stdout, by label; fails naming every process that failed."""
    outputs = {label: p.communicate(timeout=timeout) for label, p in procs.items()}
    failed = [
        f"{label} failed:\n{out}{err}"
        for label, (out, err) in outputs.items()
        if procs[label].returncode != 0
    ]
    assert not failed, "\n".join(failed)
    return {label: out for label, (out, _err) in outputs.items()}


# -- gc while others push, remove, verify and export -------------------------------------

#: Weights of a small MLP (archs_helper.models:TinyNet): every version shares the first
#: layer; versions 2k and 2k+1 of a pusher share their last weight, each has its own
#: last bias. Removing one version of a pair leaves a pack that gc must rewrite.
_WEIGHTS = r"""
from collections import OrderedDict
import torch

HIDDEN = 64
ARCH = "archs_helper.models:TinyNet"

def weights(pusher, i):
    base = torch.Generator().manual_seed(1)
    pair = torch.Generator().manual_seed(1000 * pusher + i // 2)
    own = torch.Generator().manual_seed(10**6 + 1000 * pusher + i)
    return OrderedDict([
        ("body.0.weight", torch.randn(HIDDEN, 8, generator=base)),
        ("body.0.bias", torch.randn(HIDDEN, generator=base)),
        ("body.2.weight", torch.randn(3, HIDDEN, generator=pair)),
        ("body.2.bias", torch.randn(3, generator=own)),
    ])

def wait_for(start):
    import time
    while time.time() < start:
        time.sleep(0.005)
"""

#: Each round: pushes again the weights of two rounds ago (whose version this pusher
#: removed last round: its tensors are stored but unused, what gc deletes while this
#: push matches them), then this round's new weights; then removes every version of
#: its name but the newest, so gc has tensors and packs to delete and packs to
#: rewrite. Every third round it also pushes to the one name all pushers share (which
#: nobody removes). Only this process removes versions of its name: no push reads a
#: version another process is removing.
_PUSHER = (
    _WEIGHTS
    + r"""
import sys
from registry import Registry
from registry.catalog.revision import SCHEMA_REVISION
pusher, rounds, start = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
reg = Registry()
name = f"team/p{pusher}"
wait_for(start)
removed = healed = 0
for i in range(rounds):
    if i >= 2:
        again = reg.push(weights(pusher, i - 2), name, arch=ARCH, arch_kwargs={"hidden": HIDDEN})
        healed += again.pushed.healed
    reg.push(weights(pusher, i), name, arch=ARCH, arch_kwargs={"hidden": HIDDEN})
    if i % 3 == 0:
        reg.push(weights(pusher, i), "team/shared", arch=ARCH, arch_kwargs={"hidden": HIDDEN})
    for version in reg.list(name)[1:]:
        reg.remove(version.ref)
        removed += 1
print(f"removed={removed} healed={healed}", flush=True)
"""
)

#: Until the stop file appears, and once more after: gc. Prints its totals.
_COLLECTOR = r"""
import sys, time
from pathlib import Path
from registry import Registry
from registry.catalog.revision import SCHEMA_REVISION
stop, start = Path(sys.argv[1]), float(sys.argv[2])
while time.time() < start:
    time.sleep(0.005)
reg = Registry()
totals = {"runs": 0, "blobs": 0, "packs": 0, "rewritten": 0}
last = False
while not last:
    last = stop.exists()
    report = reg.gc()
    totals["runs"] += 1
    totals["blobs"] += report.blobs_removed
    totals["packs"] += report.packs_removed
    totals["rewritten"] += report.packs_rewritten
print(" ".join(f"{k}={v}" for k, v in totals.items()), flush=True)
"""

#: Until the stop file appears: verify() must find nothing wrong, and the newest
#: version of one name exports (every tensor checked against its sha256).
_CHECKER = r"""
import sys, time
from pathlib import Path
from registry import Registry
from registry.catalog.revision import SCHEMA_REVISION
from registry.errors import NotFoundError
stop, out, start = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
while time.time() < start:
    time.sleep(0.005)
reg = Registry()
runs = exported = 0
while not stop.exists():
    report = reg.verify()
    assert report.ok, (report.corrupt, report.missing)
    runs += 1
    try:
        reg.export(["team/p0:latest", "team/shared:latest"], out, overwrite=True)
        exported += 1
    except NotFoundError:
        pass  # nothing pushed yet
print(f"verified={runs} exported={exported}", flush=True)
"""


def test_gc_in_a_loop_while_others_push_remove_verify_and_export(database: str, tmp_path: Path):
    """Three processes push (new weights, weights they removed meanwhile, one shared
    name) and remove their old versions, two run gc in a loop, one verifies and
    exports in a loop: none fails, and afterwards every version loads and verify() is
    clean."""
    from conftest import assert_same_state

    url, home = database, tmp_path / "home"
    env = _env(home, url)
    with Registry(home=home, database_url=url, storage_url=home / "objects") as reg:
        # The schema exists before the race (first use by several processes: below).
        assert reg.list() == []
    stop = tmp_path / "stop"
    start = time.time() + 6  # every process is past its imports by then
    rounds = 14
    pushers = _start_all(
        {f"pusher {k}": [_PUSHER, str(k), str(rounds), str(start)] for k in range(3)}, env
    )
    others = _start_all(
        {
            "collector": [_COLLECTOR, str(stop), str(start)],
            "second collector": [_COLLECTOR, str(stop), str(start)],
            "checker": [_CHECKER, str(stop), str(tmp_path / "bundle.tar"), str(start)],
        },
        env,
    )
    try:
        pushed = _finish_all(pushers)
    finally:
        stop.touch()
        done = _finish_all(others)
    collected, checked = done["collector"] + done["second collector"], done["checker"]
    totals: dict[str, int] = {}
    for item in collected.split():
        key, value = item.split("=")
        totals[key] = totals.get(key, 0) + int(value)
    # gc had work: tensors and packs deleted, packs rewritten; verify and export ran.
    pushers_said = [dict(item.split("=") for item in out.split()) for out in pushed.values()]
    assert all(int(said["removed"]) > 0 for said in pushers_said), pushed
    # a pack gc deleted between a push's look-up and its byte comparison makes the push
    # ask again, not report damage it "healed" (nothing was damaged)
    assert all(said["healed"] == "0" for said in pushers_said), pushed
    assert totals["blobs"] > 0 and totals["packs"] > 0 and totals["rewritten"] > 0, collected
    assert all(int(item.split("=")[1]) > 0 for item in checked.split()), checked

    namespace: dict = {}
    exec(_WEIGHTS, namespace)
    with Registry(home=home, database_url=url, storage_url=home / "objects") as reg:
        report = reg.verify()
        assert report.ok, (report.corrupt, report.missing)
        versions = reg.list()
        assert versions
        for version in versions:
            model = reg.load(version.ref, verify="sha256")
            assert type(model).__name__ == "TinyNet"
        # The newest version of each pusher holds its last round's weights.
        for k in range(3):
            assert_same_state(
                reg.load_state_dict(f"team/p{k}:latest"), namespace["weights"](k, rounds - 1)
            )


# -- the first use of an empty database ------------------------------------------------

_FIRST_USER = (
    _WEIGHTS
    + r"""
import sys
from registry import Registry
from registry.catalog.revision import SCHEMA_REVISION
pusher, start = int(sys.argv[1]), float(sys.argv[2])
wait_for(start)
reg = Registry()
print(reg.push(weights(pusher, 0), "team/first", arch=ARCH, arch_kwargs={"hidden": HIDDEN}).ref)
"""
)


def test_first_use_by_four_processes_at_once_migrates_once(
    postgres_server: PostgresServer, database: str, tmp_path: Path
):
    """Four processes meet an empty database at the same moment and each pushes: one
    of them creates the schema, the others wait for it and find it made."""
    home = tmp_path / "home"
    start = time.time() + 6
    procs = _start_all(
        {f"user {k}": [_FIRST_USER, str(k), str(start)] for k in range(4)}, _env(home, database)
    )
    refs = sorted(out.strip() for out in _finish_all(procs).values())
    assert refs == [f"team/first:{n}" for n in range(1, 5)]
    assert postgres_server.execute(
        "SELECT version_num FROM alembic_version", database_url=database
    ) == [(SCHEMA_REVISION,)]


def test_the_loser_of_the_first_use_race_finds_the_schema_made(
    database: str, monkeypatch: pytest.MonkeyPatch
):
    """Another process creates the schema between this one's first look (no version
    table) and its next: this one must find it made, not "tables but no version"."""
    from registry.catalog import schema
    from registry.catalog.engine import make_engine

    real = schema.current_revision
    looks = []

    def winner_commits_right_after_the_first_look(connection):
        found = real(connection)
        looks.append(found)
        if len(looks) == 1:
            other = make_engine(database)  # the winner, on a connection of its own
            monkeypatch.setattr(schema, "current_revision", real)
            schema.upgrade(other)
            monkeypatch.setattr(
                schema, "current_revision", winner_commits_right_after_the_first_look
            )
            other.dispose()
        return found

    monkeypatch.setattr(schema, "current_revision", winner_commits_right_after_the_first_look)
    with Registry(database_url=database, storage_url=Path("unused")) as reg:
        assert reg.list() == []
    assert looks[0] is None and SCHEMA_REVISION in looks[1:]


# -- a read-only role ----------------------------------------------------------------


def _weights(pusher: int, i: int):
    namespace: dict = {}
    exec(_WEIGHTS, namespace)
    return namespace["weights"](pusher, i), namespace["ARCH"], {"hidden": namespace["HIDDEN"]}


def _row_counts(server: PostgresServer, database: str) -> dict[str, int]:
    from registry.catalog.access import TABLES

    return {
        table: server.execute(f"SELECT count(*) FROM {table}", database_url=database)[0][0]
        for table in (*TABLES, "alembic_version")
    }


def _files(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


def test_every_table_is_in_what_a_writer_needs():
    from registry.catalog.access import TABLES
    from registry.catalog.models import Base

    assert set(TABLES) == set(Base.metadata.tables)


def test_a_read_only_role_reads_everything_and_writes_nothing(
    postgres_server: PostgresServer, database: str, tmp_path: Path
):
    """A role made a reader by `registry db grant-reader ROLE --run`: every read works;
    every write fails with one line naming the catalogue's refusal, changing nothing in
    the catalogue nor in the store."""
    import torch
    from conftest import run_cli

    home = tmp_path / "home"
    owner = _env(home, database)
    base, arch, kwargs = _weights(0, 0)
    tuned, _, _ = _weights(0, 1)
    with Registry(home=home, database_url=database, storage_url=home / "objects") as reg:
        reg.push(base, "team/m", arch=arch, arch_kwargs=kwargs, tags={"stage": "dev"})
        reg.push(tuned, "team/m", arch=arch, arch_kwargs=kwargs, parent="team/m:1")
        reg.push(_weights(1, 0)[0], "team/gone", arch=arch, arch_kwargs=kwargs)
        reg.alias("team/m:1", "prod")
        reg.remove("team/gone:1")  # gc would have work
    with Registry(home=tmp_path / "elsewhere") as other:  # a bundle with new weights
        other.push(_weights(2, 0)[0], "team/imported", arch=arch, arch_kwargs=kwargs)
        other.export(["team/imported:1"], tmp_path / "new.tar")
    new_file = tmp_path / "new.pth"
    torch.save(_weights(3, 0)[0], new_file)

    role = f"reader_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    postgres_server.execute(f'CREATE ROLE "{role}" LOGIN')
    granted = run_cli("db", "grant-reader", role, "--run", env=owner)
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout.splitlines() == [
        f'GRANT CONNECT ON DATABASE "{database.rsplit("/", 1)[1]}" TO "{role}";',
        f'GRANT USAGE ON SCHEMA "public" TO "{role}";',
        f'GRANT SELECT ON ALL TABLES IN SCHEMA "public" TO "{role}";',
        f'ALTER DEFAULT PRIVILEGES FOR ROLE "registry" IN SCHEMA "public" GRANT SELECT '
        f'ON TABLES TO "{role}";',
    ]
    assert f"granted {role} read-only access" in granted.stderr

    reader_url = postgres_server.url_for(database, role)
    reader = _env(home, reader_url)
    rows, files = _row_counts(postgres_server, database), _files(home / "objects")

    def ok(*args: str):
        result = run_cli(*args, env=reader, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        return result

    assert "team/m:2" in ok("list").stdout
    assert "prod" in ok("show", "team/m:prod").stdout
    assert "body.2.bias" in ok("diff", "team/m:1", "team/m:2").stdout
    assert ok("log", "team/m").stdout
    ok("pull", "team/m:2", "-o", str(tmp_path / "pulled.pth"))
    assert torch.equal(torch.load(tmp_path / "pulled.pth")["body.2.bias"], tuned["body.2.bias"])
    ok("export", "team/m:1", "team/m:2", "-o", str(tmp_path / "out.tar"))
    assert ok("verify").returncode == 0
    assert "would free" in ok("gc", "--dry-run").stderr  # a dry run only reads
    with Registry(home=home, database_url=reader_url, storage_url=home / "objects") as reg:
        model = reg.load("team/m:prod")
        assert torch.equal(model.state_dict()["body.0.weight"], base["body.0.weight"])

    writes = [
        ("tag", "team/m:1", "stage=prod"),
        ("tag", "team/m:1", "owner=ana"),
        ("untag", "team/m:1", "stage"),
        ("alias", "team/m:2", "prod"),
        ("alias", "--delete", "team/m:prod"),
        ("rm", "--yes", "team/m:2"),
        ("describe", "team/m:1", "read-only"),
        ("gc",),
        ("import", str(tmp_path / "new.tar")),
        ("push", str(new_file), "--name", "team/new", "--arch", arch, "--arch-arg", "hidden=64"),
    ]
    where = f"postgresql://{role}@127.0.0.1:{postgres_server.port}/{database.rsplit('/', 1)[1]}"
    for args in writes:
        result = run_cli(*args, env=reader, cwd=tmp_path)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, (args, result.stderr)
        assert lines[0].startswith(
            f"Error: the catalogue refused to write (read-only access to {where}): "
        ), (args, lines[0])
    assert _row_counts(postgres_server, database) == rows
    assert _files(home / "objects") == files


def test_grant_reader_quotes_a_hostile_role_name(
    postgres_server: PostgresServer, database: str, tmp_path: Path
):
    """A role name is an identifier, quoted: whatever it holds, it names one role."""
    import psycopg
    from conftest import run_cli
    from psycopg import sql

    from registry.catalog.access import quote_identifier

    env = _env(tmp_path / "home", database)
    with Registry(home=tmp_path / "home", database_url=database) as reg:
        assert reg.list() == []  # the schema
    hostile = 'r?%"; DROP TABLE versions; --'
    printed = run_cli("db", "grant-reader", hostile, env=env)
    assert printed.returncode == 0, printed.stderr
    assert 'TO "r?%""; DROP TABLE versions; --";' in printed.stdout.splitlines()[0]
    missing = run_cli("db", "grant-reader", hostile, "--run", env=env)
    assert missing.returncode == 1 and "there is no database role" in missing.stderr

    admin = postgres_server.url_for(database, "registry").replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(hostile)))
    ran = run_cli("db", "grant-reader", hostile, "--run", "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    with psycopg.connect(admin, autocommit=True) as conn:
        ((may_read, may_write),) = conn.execute(
            "SELECT has_table_privilege(%s, 'versions', 'SELECT'), "
            "has_table_privilege(%s, 'versions', 'INSERT')",
            (hostile, hostile),
        ).fetchall()
    assert (may_read, may_write) == (True, False)
    assert _row_counts(postgres_server, database)["versions"] == 0  # the table is there
    assert quote_identifier('a"b') == '"a""b"'


def test_grant_reader_on_sqlite_says_it_is_file_permissions(tmp_path: Path):
    from conftest import run_cli

    result = run_cli(
        "db", "grant-reader", "reader",
        env={"REGISTRY_HOME": str(tmp_path / "home"), "REGISTRY_DATABASE_URL": "",
             "REGISTRY_STORAGE_URL": ""},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "file's permissions" in result.stderr
    assert not (tmp_path / "home").exists()  # nothing created


def test_check_writable_says_what_a_role_lacks(
    postgres_server: PostgresServer, database: str, tmp_path: Path
):
    """The one query before a write names what is missing: table privileges, the
    sequences' USAGE, or a connection whose transactions are read-only (refused then
    by the database itself as SQLSTATE 25006, also one line)."""
    from registry.catalog.gateway import Gateway
    from registry.errors import CatalogReadOnlyError

    with Registry(home=tmp_path / "home", database_url=database) as reg:
        reg.push(_weights(0, 0)[0], "team/m", arch=_weights(0, 0)[1], arch_kwargs={"hidden": 64})
    suffix = f"{os.getpid()}_{time.monotonic_ns() % 10**6}"
    tags_only, no_sequences, read_only = (f"{k}_{suffix}" for k in ("tags", "noseq", "ro"))
    postgres_server.execute(
        *(f'CREATE ROLE "{r}" LOGIN' for r in (tags_only, no_sequences, read_only)),
        f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{tags_only}", "{read_only}"',
        f'GRANT INSERT, UPDATE, DELETE ON tags TO "{tags_only}"',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{no_sequences}"',
        f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{read_only}"',
        f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{read_only}"',
        f'ALTER ROLE "{read_only}" SET default_transaction_read_only = on',
        database_url=database,
    )
    Gateway(database).check_writable()  # the owner may
    expected = {
        tags_only: "lacks DELETE, INSERT, UPDATE on aliases; ",
        no_sequences: "lacks USAGE on the sequences events_id_seq, models_id_seq, versions_id_seq",
        read_only: "transactions of this connection are read-only",
    }
    said = {}
    for role, says in expected.items():
        gateway = Gateway(postgres_server.url_for(database, role))
        with pytest.raises(CatalogReadOnlyError, match="^the catalogue refused to write") as e:
            gateway.check_writable()
        said[role] = str(e.value)
        assert says in said[role], said[role]
        gateway.close()
    assert "on tags" not in said[tags_only]  # what it has is not listed
    reader = Registry(
        home=tmp_path / "home", database_url=postgres_server.url_for(database, read_only)
    )
    with pytest.raises(CatalogReadOnlyError, match="read-only transaction"):
        reader.tag("team/m:1", {"stage": "prod"})
    reader.close()


def test_a_read_only_sqlite_catalogue_refuses_in_one_line(tmp_path: Path):
    """SQLite's "attempt to write a readonly database" is the same refusal (here a
    connection opened read-only; as root, file permissions would not stop a write)."""
    from registry.errors import CatalogReadOnlyError

    home = tmp_path / "home"
    with Registry(home=home) as reg:
        reg.push(_weights(0, 0)[0], "m", arch=_weights(0, 0)[1], arch_kwargs={"hidden": 64})
    url = f"sqlite:///file:{home / 'registry.db'}?mode=ro&uri=true"
    with Registry(home=home, database_url=url) as reader:
        assert [v.ref for v in reader.list()] == ["m:1"]
        with pytest.raises(CatalogReadOnlyError, match="^the catalogue refused to write") as e:
            reader.tag("m:1", {"stage": "prod"})
        assert "readonly database" in str(e.value) and "\n" not in str(e.value)
        assert reader.get("m:1").tags == {}


def test_a_reader_first_on_an_empty_database_is_told_in_one_line(
    postgres_server: PostgresServer, database: str, tmp_path: Path
):
    """The schema is created by the first writer: a reader who comes first is refused,
    saying so, instead of a driver's traceback."""
    from registry.errors import CatalogReadOnlyError

    role = f"early_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    postgres_server.execute(f'CREATE ROLE "{role}" LOGIN')
    url = postgres_server.url_for(database, role)
    with Registry(database_url=url, storage_url=tmp_path / "objects") as reg:
        with pytest.raises(CatalogReadOnlyError, match="cannot create the registry's tables"):
            reg.list()
