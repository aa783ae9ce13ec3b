"""The catalogue: migrations agree with the ORM, schema checks, concurrent writers, wheels."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import push_from_two_processes, run_cli
from sqlalchemy import create_engine, text

from registry import Registry
from registry.catalog import revision, schema
from registry.catalog.engine import make_engine
from registry.catalog.models import Base
from registry.errors import CatalogError, SchemaOutOfDateError

ROOT = Path(__file__).resolve().parents[1]


def test_migrations_match_the_orm(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    schema.upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_schema_revision_is_alembic_head():
    scripts = ScriptDirectory.from_config(schema.alembic_config())
    assert scripts.get_current_head() == schema.SCHEMA_REVISION


def test_new_database_is_migrated_and_uses_wal(reg: Registry, home: Path, resnet18_state):
    reg.push(resnet18_state, "m", arch="resnet18")
    engine = create_engine(f"sqlite:///{home / 'registry.db'}")
    with engine.connect() as conn:
        assert (
            conn.execute(text("select version_num from alembic_version")).scalar()
            == schema.SCHEMA_REVISION
        )
        assert conn.execute(text("pragma journal_mode")).scalar() == "wal"
    engine.dispose()


def _stamp(home: Path, revision: str) -> None:
    engine = create_engine(f"sqlite:///{home / 'registry.db'}")
    with engine.begin() as conn:
        conn.execute(text("update alembic_version set version_num = :r"), {"r": revision})
    engine.dispose()


def test_out_of_date_database_says_run_upgrade(home: Path, monkeypatch, resnet18_state):
    with Registry(home=home) as reg:
        reg.push(resnet18_state, "m", arch="resnet18")
    # Pretend this release needs a newer revision than the database has.
    monkeypatch.setattr(revision, "SCHEMA_REVISION", "9999")
    with Registry(home=home) as reg:
        with pytest.raises(SchemaOutOfDateError, match="registry db upgrade"):
            reg.list()


def test_newer_database_is_refused(home: Path, resnet18_state):
    with Registry(home=home) as reg:
        reg.push(resnet18_state, "m", arch="resnet18")
    _stamp(home, "ffff")
    with Registry(home=home) as reg:
        with pytest.raises(SchemaOutOfDateError, match="newer"):
            reg.get("m:1")
    result = run_cli("list", env={"REGISTRY_HOME": str(home)})
    assert result.returncode == 1 and "newer" in result.stderr and "Traceback" not in result.stderr


def test_db_upgrade_and_current(home: Path):
    with Registry(home=home) as reg:
        assert reg.database_revision() is None
        assert reg.upgrade_database() == (None, schema.SCHEMA_REVISION)
        assert reg.upgrade_database() == (schema.SCHEMA_REVISION, schema.SCHEMA_REVISION)
        assert reg.database_revision() == schema.SCHEMA_REVISION
        assert reg.list() == []


def test_foreign_database_is_not_touched(tmp_path: Path):
    db = tmp_path / "other.db"
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(text("create table users (id integer primary key)"))
    engine.dispose()
    with Registry(home=tmp_path / "h", database_url=f"sqlite:///{db}") as reg:
        with pytest.raises(CatalogError, match="no registry schema"):
            reg.list()


def test_two_processes_push_at_once(tmp_path: Path):
    home = tmp_path / "h"  # a brand-new registry: both processes also race to create it
    assert push_from_two_processes(home) == sorted(f"shared:{i}" for i in range(1, 7))
    with Registry(home=home) as reg:
        assert sorted(mv.version for mv in reg.list("shared")) == list(range(1, 7))
        assert len({mv.digest for mv in reg.list("shared")}) == 6


def test_alembic_upgrades_from_a_checkout(tmp_path: Path):
    """`alembic -c alembic.ini upgrade head` at the top of a checkout migrates REGISTRY_HOME."""
    if not (ROOT / "alembic.ini").exists():
        pytest.skip("not running from a source checkout")
    import os

    env = {**os.environ, "REGISTRY_HOME": str(tmp_path / "h")}
    env.pop("REGISTRY_DATABASE_URL", None)
    alembic = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini")]
    result = subprocess.run(
        [*alembic, "upgrade", "head"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    engine = create_engine(f"sqlite:///{tmp_path / 'h' / 'registry.db'}")
    with engine.connect() as connection:
        assert schema.current_revision(connection) == revision.SCHEMA_REVISION
    engine.dispose()
    with Registry(home=tmp_path / "h") as reg:  # the registry accepts what alembic made
        assert reg.list() == []


def test_migrations_ship_in_the_wheel(tmp_path: Path):
    """Build the wheel, install it into a bare folder, and migrate a database from there."""
    if not (ROOT / "pyproject.toml").exists():
        pytest.skip("not running from a source checkout")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next((tmp_path / "dist").glob("registry-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "registry/migrations/env.py" in names
    assert any(n.startswith("registry/migrations/versions/0001") for n in names)
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import registry, sys; from registry import Registry; "
        "assert registry.__file__.startswith(sys.argv[1]), registry.__file__; "
        "r = Registry(home=sys.argv[2]); r.upgrade_database(); "
        "print(r.list(), r.database_revision())"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(target), str(tmp_path / "h")],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,  # not the checkout, whose registry/ would shadow the installed one
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"[] {schema.SCHEMA_REVISION}"


def test_upgrade_from_0001_fills_in_checksums_from_the_store(home: Path, resnet18_state):
    """A catalogue from before blob checksums: `db upgrade` migrates it and reads the store."""
    import xxhash
    from alembic import command

    with Registry(home=home) as reg:
        reg.push(resnet18_state, "m", arch="resnet18")
        stored = reg.load_state_dict("m:1")
        expected = {name: xxhash.xxh3_128_hexdigest(t.numpy().tobytes()) for name, t in stored.items()}
        del stored
    engine = make_engine(f"sqlite:///{home / 'registry.db'}")
    with engine.begin() as connection:
        command.downgrade(schema.alembic_config(connection), "0001")
    engine.dispose()
    with Registry(home=home) as reg:
        with pytest.raises(SchemaOutOfDateError):
            reg.get("m:1")
        assert reg.upgrade_database() == ("0001", schema.SCHEMA_REVISION)
    engine = create_engine(f"sqlite:///{home / 'registry.db'}")
    with engine.connect() as connection:
        rows = connection.execute(
            text("select t.name, b.checksum from tensors t join blobs b on b.digest = t.digest")
        ).all()
    engine.dispose()
    assert dict(rows) == expected
    with Registry(home=home) as reg:
        assert_same = reg.load_state_dict("m:1")
        for name, tensor in resnet18_state.items():
            assert torch.equal(assert_same[name], tensor)
