"""The catalogue on a real PostgreSQL server (started here, on loopback, for these tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import assert_same_state, make_model, push_from_two_processes, run_cli

from registry import Registry
from registry.catalog.models import Base


@pytest.fixture(scope="module")
def postgres(postgres_server):
    """Makes fresh database URLs on the session's PostgreSQL server (conftest.py)."""
    return postgres_server.new_database


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
        with reg._gateway.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    result = run_cli(
        "list", "--json", env={"REGISTRY_DATABASE_URL": url, "REGISTRY_HOME": str(tmp_path / "h")}
    )
    assert result.returncode == 0 and '"pg/model:1"' in result.stdout


def test_two_processes_push_at_once_on_postgres(postgres, tmp_path: Path):
    refs = push_from_two_processes(tmp_path / "h", postgres())
    assert refs == sorted(f"shared:{i}" for i in range(1, 7))


def test_organising_on_postgres(postgres, tmp_path: Path, resnet18_state):
    """The catalogue's SQL (registry/catalog/) on PostgreSQL: edits, search, gc, bundles."""
    from collections import OrderedDict
    from datetime import datetime, timedelta, timezone

    url = postgres()
    tuned = OrderedDict(resnet18_state)
    tuned["fc.bias"] = resnet18_state["fc.bias"] + 1
    with Registry(home=tmp_path / "h", database_url=url) as reg:
        reg.push(resnet18_state, "pg/base", arch="resnet18")
        reg.push(tuned, "pg/tuned", arch="resnet18", parent="pg/base:1")
        reg.tag("pg/tuned:1", {"stage": "dev"})
        reg.tag("pg/tuned:1", {"stage": "prod", "owner": "ana"})  # ON CONFLICT update
        assert reg.untag("pg/tuned:1", ["owner"]).tags == {"stage": "prod"}
        reg.alias("pg/base:1", "production")
        reg.alias("pg/tuned:1", "production")  # moves within pg/tuned only
        assert reg.get("pg/base:production").ref == "pg/base:1"
        assert reg.get("pg/tuned:production").ref == "pg/tuned:1"
        reg.describe("pg/tuned:1", "100% done_")  # % and _ pass through as data
        assert reg.get("pg/tuned:1").description == "100% done_"
        assert [v.ref for v in reg.lineage("pg/tuned:1")] == ["pg/tuned:1", "pg/base:1"]

        assert [v.ref for v in reg.list("pg/t*")] == ["pg/tuned:1"]
        assert reg.list("PG/*") == []  # globs are case-sensitive, as on SQLite
        assert [v.ref for v in reg.list(sort="name")] == ["pg/base:1", "pg/tuned:1"]
        assert [v.ref for v in reg.list(limit=1, offset=1)] == ["pg/base:1"]
        assert len(reg.list(offset=1)) == 1  # no limit, an offset
        now = datetime.now(timezone.utc)
        assert reg.count(since=now - timedelta(hours=1), before=now + timedelta(hours=1)) == 2
        assert reg.count(tags={"stage": "prod"}, arch="resnet18") == 1

        assert [c.name for c in reg.diff("pg/base:1", "pg/tuned:1").changed] == ["fc.bias"]
        bundle = tmp_path / "b.tar"
        reg.export(["pg/tuned:1"], bundle)
        reg.remove("pg/tuned:1", force=True)
        report = reg.gc()
        assert report.blobs_removed == 1 and report.bytes_freed >= tuned["fc.bias"].nbytes
        assert reg.verify().ok
        imported = reg.import_bundle(bundle)
        assert imported.versions == [("pg/tuned:1", "pg/tuned:2", True)]
        assert_same_state(reg.load_state_dict("pg/tuned:production"), tuned)
