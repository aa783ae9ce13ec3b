"""The catalogue on a real PostgreSQL server (started here, on loopback, for these tests)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import torch
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import assert_same_state, make_model, push_from_two_processes, run_cli

from registry import Registry
from registry.catalog.models import Base

pytestmark = pytest.mark.skipif(
    shutil.which("initdb") is None or shutil.which("pg_ctl") is None,
    reason="PostgreSQL server binaries (initdb, pg_ctl) are not installed",
)


def _as_server_user(args: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI runs as root, so drop to nobody there.
    return ["runuser", "-u", "nobody", "--", *args] if os.geteuid() == 0 else args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server; yields a function making fresh database URLs."""
    # Outside pytest's private (0700) tmp folder, so the server's user can reach it.
    root = Path(tempfile.mkdtemp(prefix="registry-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
    data, port = root / "data", _free_port()
    subprocess.run(
        _as_server_user(["initdb", "-D", str(data), "-A", "trust", "-U", "registry", "--no-sync"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        _as_server_user(
            [
                "pg_ctl",
                "-D",
                str(data),
                "-l",
                str(root / "log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    admin = f"postgresql+psycopg://registry@127.0.0.1:{port}/postgres"
    counter = iter(range(1000))

    def new_database() -> str:
        from sqlalchemy import create_engine, text

        name = f"reg{next(counter)}_{int(time.time() * 1000) % 100000}"
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return f"postgresql+psycopg://registry@127.0.0.1:{port}/{name}"

    yield new_database
    subprocess.run(
        _as_server_user(["pg_ctl", "-D", str(data), "-m", "fast", "stop"]),
        capture_output=True,
        timeout=120,
    )
    shutil.rmtree(root, ignore_errors=True)


def test_round_trip_on_postgres(postgres, tmp_path: Path, resnet18_state):
    url = postgres()
    with Registry(home=tmp_path / "h", database_url=url) as reg:
        mv = reg.push(resnet18_state, "pg/model", arch="resnet18", tags={"db": "postgres"})
        assert mv.ref == "pg/model:1"
        assert reg.push(resnet18_state, "pg/model", arch="resnet18").pushed.created is False
        assert reg.get(f"pg/model@sha256:{mv.digest[:6]}").ref == "pg/model:1"
        assert [v.ref for v in reg.list(tags={"db": "postgres"})] == ["pg/model:1"]
        assert_same_state(reg.load_state_dict("pg/model:1"), resnet18_state)
        model = reg.load("pg/model")
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(model(x), make_model("resnet18")(x))
        with reg._engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    result = run_cli(
        "list", "--json", env={"REGISTRY_DATABASE_URL": url, "REGISTRY_HOME": str(tmp_path / "h")}
    )
    assert result.returncode == 0 and '"pg/model:1"' in result.stdout


def test_two_processes_push_at_once_on_postgres(postgres, tmp_path: Path):
    refs = push_from_two_processes(tmp_path / "h", postgres())
    assert refs == sorted(f"shared:{i}" for i in range(1, 7))
