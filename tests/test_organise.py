"""Organising versions: lineage, descriptions, aliases, search, diff, removal, gc, verify."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch
from conftest import REGISTRY_EXE, assert_same_state, make_model, run_cli

from registry import Registry, _format
from registry.errors import InvalidArgumentError, NotFoundError, RegistryError

SQ = "squeezenet1_1"
FC = ["fc.weight", "fc.bias"]


def sq_state(seed: int = 0, **kwargs) -> dict[str, torch.Tensor]:
    return make_model(SQ, seed, **kwargs).state_dict()


def fine_tune(state, keys) -> OrderedDict:
    """A copy of ``state`` where only ``keys`` changed (shares every other tensor)."""
    gen = torch.Generator().manual_seed(7)
    return OrderedDict(state, **{k: state[k] + 0.5 * torch.randn(state[k].shape, generator=gen)
                                 for k in keys})


def refs(versions) -> list[str]:
    return [v.ref for v in versions]


def pack_files(home: Path) -> list[Path]:
    return sorted((home / "objects").rglob("*.pack"))


def store_bytes(home: Path) -> int:
    return sum(f.stat().st_size for f in (home / "objects").rglob("*") if f.is_file())


def pack_header(pack: Path) -> tuple[int, dict]:
    data = pack.read_bytes()
    length = int.from_bytes(data[:8], "little")
    return 8 + length, {k: v for k, v in json.loads(data[8 : 8 + length]).items()
                        if not k.startswith("__")}


def corrupt_largest_blob(pack: Path) -> str:
    """Flip one byte in the middle of the pack's largest blob; return that blob's digest."""
    start, blobs = pack_header(pack)
    digest, (a, b) = max(((k, v["data_offsets"]) for k, v in blobs.items()),
                         key=lambda kv: kv[1][1] - kv[1][0])
    pack.chmod(0o644)
    with open(pack, "r+b") as f:
        f.seek(start + (a + b) // 2)
        byte = f.read(1)[0]
        f.seek(start + (a + b) // 2)
        f.write(bytes([byte ^ 0xFF]))
    return digest


def digest_of(problem) -> str:
    return str(getattr(problem, "digest", problem)).removeprefix("sha256:")


def one_line_error(result) -> str:
    assert result.returncode == 1, result
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1
    return result.stderr


# -- lineage, descriptions, aliases ----------------------------------------------------


def test_lineage_parent_and_show(home: Path, reg: Registry, tmp_path: Path):
    reg.push(sq_state(0), "base", arch=SQ)
    reg.alias("base:1", "prod")
    reg.push(sq_state(1), "m", arch=SQ)
    m2 = reg.push(sq_state(2), "m", arch=SQ, parent="base:prod")
    assert m2.ref == "m:2" and m2.parent == "base:1"  # an alias is recorded as NAME:N
    assert reg.get("m:2").parent == "base:1" and reg.get("m:1").parent is None
    torch.save(sq_state(3), tmp_path / "m3.pth")
    pushed = run_cli("push", str(tmp_path / "m3.pth"), "--arch", SQ, "--name", "m",
                     "--parent", "m:2", "--json", check=True)
    assert json.loads(pushed.stdout)["parent"] == "m:2"
    assert refs(reg.lineage("m:3")) == refs(reg.lineage("m")) == ["m:3", "m:2", "base:1"]
    assert refs(reg.lineage("m:1")) == ["m:1"]
    assert {v.ref: v.parent for v in reg.list("m")} == {"m:3": "m:2", "m:2": "base:1", "m:1": None}
    shown = run_cli("show", "m:3", check=True).stdout
    (line,) = [ln.strip() for ln in shown.splitlines() if ln.strip().startswith("lineage")]
    assert "m:3 <- m:2 <- base:1" in line

    before, packs = refs(reg.list()), pack_files(home)
    for parent in ("base:9", "ghost:1", "base:nope"):
        with pytest.raises(NotFoundError):
            reg.push(sq_state(4), "m", arch=SQ, parent=parent)
    assert refs(reg.list()) == before and pack_files(home) == packs


def test_describe(reg: Registry):
    reg.push(sq_state(0), "m", arch=SQ, description="first")
    described = reg.describe("m:1", "trained on cifar, 3 epochs")
    assert described.ref == "m:1" and described.description == "trained on cifar, 3 epochs"
    assert reg.get("m:latest").description == "trained on cifar, 3 epochs"
    assert reg.describe("m:1", None).description is None and reg.get("m:1").description is None
    with pytest.raises(NotFoundError):
        reg.describe("m:2", "x")
    done = run_cli("describe", "m:1", "from the CLI", "--json", check=True)
    assert json.loads(done.stdout)["description"] == "from the CLI"
    assert reg.get("m:1").description == "from the CLI"
    assert "from the CLI" in run_cli("show", "m:1", check=True).stdout


def test_aliases(reg: Registry, tmp_path: Path):
    s1, s2 = sq_state(1), sq_state(2)
    reg.push(s1, "m", arch=SQ)
    reg.push(s2, "m", arch=SQ)
    reg.push(s1, "other", arch=SQ)
    assert reg.alias("m:1", "prod").aliases == ("prod",)
    reg.alias("other:1", "prod")  # aliases are per model name
    moved = reg.alias("m:2", "prod")
    assert moved.ref == "m:2" and moved.aliases == ("prod",)
    assert reg.get("m:1").aliases == () and reg.get("m:prod").ref == "m:2"
    assert reg.get("other:prod").ref == "other:1"
    reg.alias("m:2", "staging")
    assert {v.ref: set(v.aliases) for v in reg.list("m")} == {"m:2": {"prod", "staging"},
                                                             "m:1": set()}
    assert_same_state(reg.load_state_dict("m:prod"), s2)
    assert_same_state(reg.load("m:prod").state_dict(), s2)
    reg.pull("m:prod", tmp_path / "prod.pth")
    assert_same_state(torch.load(tmp_path / "prod.pth", weights_only=True), s2)
    assert reg.diff("m:prod", "m:2").changed == [] and len(reg.diff("m:prod", "m:1").changed) > 0
    assert reg.unalias("m:staging").ref == "m:2" and reg.get("m:2").aliases == ("prod",)
    for call in (reg.get, reg.unalias):
        with pytest.raises(NotFoundError):
            call("m:staging")
    for bad in ("3", "latest", "", "1abc", "_x", "-x", "a/b", "a:b"):
        with pytest.raises(InvalidArgumentError):
            reg.alias("m:1", bad)
    assert reg.get("m:1").aliases == ()

    assert json.loads(run_cli("alias", "m:1", "prod", "--json", check=True).stdout)["aliases"] == [
        "prod"]
    assert reg.get("m:prod").ref == "m:1" and reg.get("m:2").aliases == ()
    listed = json.loads(run_cli("list", "m", "--json", check=True).stdout)
    assert {d["ref"]: d["aliases"] for d in listed} == {"m:2": [], "m:1": ["prod"]}
    assert "prod" in run_cli("show", "m:prod", check=True).stdout
    run_cli("alias", "--delete", "m:prod", check=True)
    assert reg.get("m:1").aliases == ()
    usage = run_cli("alias", "m:1", "latest")  # a value that cannot be an alias: bad usage
    assert usage.returncode == 2 and usage.stderr.startswith("Usage: registry alias")
    assert "Invalid value for 'ALIAS'" in usage.stderr and "reserved" in usage.stderr
    one_line_error(run_cli("alias", "--delete", "m:prod"))


# -- search --------------------------------------------------------------------------


@pytest.fixture
def catalogue(reg: Registry) -> list:
    """Four versions with distinct times, sizes and parameter counts."""
    return [
        reg.push(sq_state(1, num_classes=10), "sq-small", arch=SQ, arch_kwargs={"num_classes": 10},
                 tags={"team": "cv", "stage": "dev"}),
        reg.push(sq_state(2), "sq-big", arch=SQ, tags={"team": "cv", "stage": "prod"}),
        reg.push(make_model("mobilenet_v3_small").state_dict(), "mob", arch="mobilenet_v3_small",
                 tags={"team": "nlp", "stage": "prod"}),
        reg.push(sq_state(3, num_classes=20), "sq-small", arch=SQ, arch_kwargs={"num_classes": 20},
                 tags={"team": "cv", "stage": "prod"}),
    ]


def test_list_filters_sorts_and_pages(reg: Registry, catalogue):
    v1, v2, v3, v4 = catalogue
    newest = [v4.ref, v3.ref, v2.ref, v1.ref]
    assert refs(reg.list()) == newest and reg.count() == 4
    assert refs(reg.list("sq-small")) == ["sq-small:2", "sq-small:1"]
    assert refs(reg.list("sq-*")) == ["sq-small:2", "sq-big:1", "sq-small:1"]
    assert refs(reg.list("sq-?????")) == ["sq-small:2", "sq-small:1"]
    assert reg.list("sq_*") == [] and reg.list("sq") == []  # "_" is literal; names are exact
    assert refs(reg.list(tags={"team": "cv", "stage": "prod"})) == ["sq-small:2", "sq-big:1"]
    assert refs(reg.list("sq-*", {"stage": "prod"}, arch=SQ)) == ["sq-small:2", "sq-big:1"]
    assert refs(reg.list(arch="mobilenet_v3_small")) == ["mob:1"]
    assert reg.count("sq-*", {"stage": "prod"}) == 2 and reg.count(arch="resnet18") == 0

    assert refs(reg.list(since=v2.created_at)) == newest[:3]
    assert refs(reg.list(before=v3.created_at)) == newest[2:]
    assert refs(reg.list(since=v2.created_at, before=v4.created_at)) == [v3.ref, v2.ref]
    assert refs(reg.list(since=v2.created_at.isoformat())) == newest[:3]
    plus5 = v2.created_at.astimezone(timezone(timedelta(hours=5)))
    assert refs(reg.list(since=plus5)) == newest[:3]
    assert refs(reg.list(before=plus5.isoformat())) == newest[3:]
    assert reg.count(since=v2.created_at) == 3

    assert refs(reg.list(sort="name")) == ["mob:1", "sq-big:1", "sq-small:1", "sq-small:2"]
    assert refs(reg.list(sort="name", reverse=True)) == [
        "sq-small:2", "sq-small:1", "sq-big:1", "mob:1"]
    by_size = sorted(catalogue, key=lambda v: -v.total_bytes)
    assert refs(reg.list(sort="size")) == refs(by_size)
    assert refs(reg.list(sort="size", reverse=True)) == refs(by_size[::-1])
    assert refs(reg.list(sort="params")) == refs(sorted(catalogue, key=lambda v: -v.param_count))
    assert refs(reg.list(sort="created", reverse=True)) == newest[::-1]

    assert refs(reg.list(limit=2)) == newest[:2]
    assert refs(reg.list(limit=2, offset=2)) == newest[2:]
    assert refs(reg.list(offset=3)) == newest[3:] and reg.list(limit=2, offset=4) == []
    assert refs(reg.list(sort="name", limit=1, offset=1)) == ["sq-big:1"]
    with pytest.raises(RegistryError):
        reg.list(sort="colour")


def test_list_command(reg: Registry, catalogue, resnet18_state):
    reg.push(resnet18_state, "res", arch="resnet18", tags={"team": "cv"})
    table = run_cli("list", check=True)
    header, *rows = table.stdout.strip().splitlines()
    assert header.split() == ["REF", "ARCH", "PARAMS", "SIZE", "DIGEST", "CREATED", "TAGS"]
    assert len(rows) == 5 and rows[0].startswith("res:1")
    assert "46.8 MB" in rows[0] and "11.7M" in rows[0]
    page = run_cli("list", "--limit", "2", "--offset", "1")
    assert page.returncode == 0
    assert [r.split()[0] for r in page.stdout.strip().splitlines()[1:]] == ["sq-small:2", "mob:1"]
    assert " of " in page.stderr and "5" in page.stderr.split(" of ", 1)[1]
    as_json = json.loads(run_cli("list", "sq-*", "--tag", "team=cv", "--tag", "stage=prod",
                                 "--arch", SQ, "--sort", "name", "--reverse", "--json",
                                 check=True).stdout)
    assert [d["ref"] for d in as_json] == ["sq-small:2", "sq-big:1"]
    since = catalogue[2].created_at.isoformat()
    recent = json.loads(run_cli("list", "--since", since, "--sort", "size", "--json",
                                check=True).stdout)
    assert [d["ref"] for d in recent] == ["res:1", "mob:1", "sq-small:2"]


def test_ten_thousand_versions(home: Path, reg: Registry, monkeypatch: pytest.MonkeyPatch):
    reg.push(sq_state(0), "m", arch=SQ)
    db = sqlite3.connect(home / "registry.db")
    cursor = db.execute("SELECT * FROM versions")
    columns = [d[0] for d in cursor.description]
    row = dict(zip(columns, cursor.fetchone()))
    copies = [dict(row, id=row["id"] + i, version=i + 1, digest=f"{i:064x}",
                   created_at=f"{datetime(2020, 1, 1) + timedelta(seconds=i):%Y-%m-%d %H:%M:%S.%f}")
              for i in range(1, 10001)]
    with db:
        db.executemany(f"INSERT INTO versions ({', '.join(columns)}) VALUES "
                       f"({', '.join(':' + c for c in columns)})", copies)
        db.executemany("INSERT INTO tags (version_id, key, value) VALUES (?, 'batch', ?)",
                       [(c["id"], str(c["version"] % 10)) for c in copies])
        db.execute("UPDATE models SET last_version = 10001")
    plan = [r[3] for r in db.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM versions ORDER BY created_at DESC, id DESC LIMIT 10")]
    db.close()
    assert any("USING INDEX" in p or "USING COVERING INDEX" in p for p in plan), plan
    assert not any("TEMP B-TREE" in p for p in plan), plan

    assert reg.count() == 10001 and reg.count(tags={"batch": "3"}) == 1000
    assert refs(reg.list(limit=2)) == ["m:1", "m:10001"]  # the copies are older
    pages = [refs(reg.list(limit=50, offset=o)) for o in (0, 50, 100)]
    assert len(set().union(*pages)) == 150 and sum(pages, []) == refs(reg.list(limit=150))
    tagged = reg.list(tags={"batch": "3"}, limit=20)
    assert len(tagged) == 20 and all(v.tags == {"batch": "3"} for v in tagged)
    assert refs(reg.list("m", sort="name", limit=3)) == ["m:1", "m:2", "m:3"]
    assert refs(reg.list(sort="name", reverse=True, limit=1)) == ["m:10001"]
    assert refs(reg.list(limit=10, offset=10000)) == ["m:2"]  # the oldest copy

    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args, **kwargs):
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(statements.append)
        return connection

    monkeypatch.setattr(sqlite3, "connect", traced)
    counts = {}
    for limit in (10, 1000, None):
        statements.clear()
        assert len(reg.list(limit=limit)) == (limit or 10001)
        counts[limit] = len(statements)
    assert counts[10] == counts[1000], counts
    assert counts[None] == counts[10], counts  # "regardless of the limit", even no limit


# -- diff ------------------------------------------------------------------------------


def test_diff_of_a_fine_tune(reg: Registry, resnet18_state):
    tuned = fine_tune(resnet18_state, FC)
    reg.push(resnet18_state, "base", arch="resnet18")
    reg.push(tuned, "tuned", arch="resnet18", parent="base:1")
    diff = reg.diff("base:1", "tuned:1")
    assert diff.added == diff.removed == diff.reshaped == diff.dtype_changed == []
    assert sorted(c.name for c in diff.changed) == ["fc.bias", "fc.weight"]
    for change in diff.changed:
        a, b = resnet18_state[change.name].double(), tuned[change.name].double()
        assert change.max_abs_diff == pytest.approx((b - a).abs().max().item(), rel=1e-5)
        expected = (torch.linalg.vector_norm(b - a) / torch.linalg.vector_norm(a)).item()
        assert change.rel_l2 == pytest.approx(expected, rel=1e-4)
        assert change.nbytes == a.numel() * 4
    assert diff.identical == len(resnet18_state) - 2
    changed_bytes = (512 * 1000 + 1000) * 4
    assert diff.changed_bytes == changed_bytes and diff.total_bytes == 46796608
    assert diff.summary() == f"2 changed, {len(resnet18_state) - 2} identical, 2.1 MB of 46.8 MB differ"
    as_dict = json.loads(json.dumps(diff.to_dict()))
    assert sorted(c["name"] for c in as_dict["changed"]) == ["fc.bias", "fc.weight"]
    assert as_dict["identical"] == diff.identical
    same = reg.diff("tuned:1", "tuned:latest")
    assert same.changed == [] and same.identical == len(resnet18_state)

    shown = run_cli("diff", "base:1", "tuned:1", check=True).stdout
    assert "fc.weight" in shown and "fc.bias" in shown and "conv1.weight" not in shown
    assert diff.summary() in shown


def test_diff_added_removed_reshaped_dtype(reg: Registry):
    a = make_model("squeezenet1_0", 0).state_dict()
    b = OrderedDict(sq_state(1))
    b["classifier.1.bias"] = b["classifier.1.bias"].double()
    reg.push(a, "a", arch="squeezenet1_0")
    reg.push(b, "b", arch=SQ)
    diff = reg.diff("a:1", "b:1")
    both = [k for k in a if k in b]
    assert sorted(t.name for t in diff.added) == sorted(k for k in b if k not in a)
    assert sorted(t.name for t in diff.removed) == sorted(k for k in a if k not in b)
    assert sorted(diff.reshaped) == sorted(
        (k, tuple(a[k].shape), tuple(b[k].shape)) for k in both if a[k].shape != b[k].shape)
    assert diff.dtype_changed == [("classifier.1.bias", "float32", "float64")]
    same_kind = [k for k in both if a[k].shape == b[k].shape and a[k].dtype == b[k].dtype]
    identical = [k for k in same_kind
                 if a[k].numpy().tobytes() == b[k].numpy().tobytes()]
    assert identical and diff.identical == len(identical)
    assert sorted(c.name for c in diff.changed) == sorted(set(same_kind) - set(identical))
    assert diff.added and diff.removed and diff.reshaped and diff.changed
    assert diff.total_bytes == reg.get("b:1").total_bytes


# -- removal, gc, verify ---------------------------------------------------------------


def test_remove(home: Path, reg: Registry):
    reg.push(sq_state(1), "m", arch=SQ, tags={"stage": "dev"})
    reg.push(sq_state(2), "m", arch=SQ, parent="m:1")
    reg.push(sq_state(3), "child", arch=SQ, parent="m:2")
    reg.alias("m:2", "prod")
    with pytest.raises(InvalidArgumentError, match="force"):
        reg.remove("m:2")
    assert reg.get("m:prod").ref == "m:2"
    removed = reg.remove("m:prod", force=True)
    assert removed.ref == "m:2"
    for gone in ("m:2", "m:prod"):
        with pytest.raises(NotFoundError):
            reg.get(gone)
    assert reg.get("child:1").parent is None
    assert refs(reg.list("m")) == ["m:1"]
    assert reg.push(sq_state(4), "m", arch=SQ).ref == "m:3"  # numbers are never reused
    assert reg.remove("m:1").ref == "m:1"
    assert reg.list(tags={"stage": "dev"}) == []
    with pytest.raises(NotFoundError):
        reg.remove("m:1")
    assert refs(reg.list("m")) == ["m:3"]
    assert reg.push(sq_state(5), "m", arch=SQ).ref == "m:4"

    env = {**os.environ, "REGISTRY_HOME": str(home)}
    declined = subprocess.run([REGISTRY_EXE, "rm", "m:3"], input="n\n", capture_output=True,
                              text=True, env=env, timeout=120)
    assert declined.returncode in (0, 1)
    assert reg.get("m:3").ref == "m:3"
    confirmed = subprocess.run([REGISTRY_EXE, "rm", "m:3"], input="y\n", capture_output=True,
                               text=True, env=env, timeout=120)
    assert confirmed.returncode == 0, confirmed.stderr
    reg.alias("m:4", "prod")
    refused = one_line_error(run_cli("rm", "m:4", "--yes"))
    assert "--force" in refused and "force=True" not in refused
    assert refs(reg.list("m")) == ["m:4"]
    run_cli("rm", "m:4", "--yes", "--force", check=True)
    assert reg.list("m") == []


def test_gc_frees_only_unshared_tensors(home: Path, reg: Registry, resnet18_state):
    tuned = fine_tune(resnet18_state, FC)
    reg.push(resnet18_state, "base", arch="resnet18")
    reg.push(tuned, "tuned", arch="resnet18", parent="base:1")
    assert reg.gc().bytes_freed == 0
    reg.remove("tuned:1")
    size = store_bytes(home)
    dry = reg.gc(dry_run=True)
    assert store_bytes(home) == size
    changed = (512 * 1000 + 1000) * 4
    assert changed <= dry.bytes_freed <= changed + 4096
    assert dry.blobs_removed == 2 and dry.packs_removed == 1
    report = reg.gc()
    assert (report.bytes_freed, report.blobs_removed, report.packs_removed) == (
        dry.bytes_freed, dry.blobs_removed, dry.packs_removed)
    assert store_bytes(home) == size - report.bytes_freed
    assert reg.gc().bytes_freed == 0
    assert_same_state(reg.load_state_dict("base:1", verify="sha256"), resnet18_state)
    assert reg.verify().ok


def test_removing_the_base_keeps_what_a_fine_tune_shares(home: Path, reg: Registry):
    base = sq_state(0)
    tuned = fine_tune(base, ["classifier.1.weight", "classifier.1.bias"])
    reg.push(base, "base", arch=SQ)
    reg.push(tuned, "tuned", arch=SQ)
    reg.remove("base:1")
    size = store_bytes(home)
    dry = run_cli("gc", "--dry-run", "--json", check=True)
    freed = json.loads(dry.stdout)["bytes_freed"]
    assert freed > 0 and store_bytes(home) == size
    done = run_cli("gc", check=True)
    assert _format.size(freed) in done.stdout + done.stderr
    assert store_bytes(home) == size - freed
    assert_same_state(reg.load_state_dict("tuned:1", verify="sha256"), tuned)
    assert reg.verify().ok and reg.verify().checked == len({t.digest for t in reg.get("tuned:1").tensors})


def test_verify_finds_corrupt_and_missing_tensors(home: Path, reg: Registry):
    reg.push(sq_state(1), "a", arch=SQ)
    report = reg.verify()
    assert report.ok and report.corrupt == [] and report.missing == []
    assert report.checked == len({t.digest for t in reg.get("a:1").tensors})
    assert run_cli("verify").returncode == 0
    (pack_a,) = pack_files(home)
    reg.push(sq_state(2), "b", arch=SQ)
    (pack_b,) = set(pack_files(home)) - {pack_a}
    digest = corrupt_largest_blob(pack_a)

    report = reg.verify()
    assert not report.ok and [digest_of(p) for p in report.corrupt] == [digest]
    both = {t.digest for ref in ("a:1", "b:1") for t in reg.get(ref).tensors}
    assert report.missing == [] and report.checked == len(both)
    assert not reg.verify("a:1").ok and reg.verify("b:1").ok
    result = run_cli("verify")
    assert result.returncode == 1
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if digest[:12] in ln]
    assert len(lines) == 1

    in_b = set(pack_header(pack_b)[1])  # b's other tensors are shared with a (zero biases)
    pack_b.chmod(0o644)
    pack_b.unlink()
    report = reg.verify("b:1")
    assert not report.ok and report.corrupt == []
    assert {digest_of(p) for p in report.missing} == in_b
    assert run_cli("verify", "b:1").returncode == 1


def test_archs_command(home: Path):
    header, *rows = run_cli("archs", check=True).stdout.strip().splitlines()
    assert "SOURCE" in header.split()
    assert "torchvision" in next(r for r in rows if r.split()[0] == "resnet18").split()


def test_gc_during_a_push_never_leaves_a_version_without_its_tensors(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
):
    """A push finds tensors stored; gc deletes them before the push commits; the push copes."""
    state = sq_state(5)
    reg.push(state, "old", arch=SQ)
    reg.remove("old:1")  # its tensors are stored but unused: gc may take them any moment
    from registry.pipelines import push

    real_match = push.match_stored
    calls = []

    def match_then_gc(*args, **kwargs):
        found = real_match(*args, **kwargs)
        if not calls:
            calls.append(reg.gc())  # between the push's look-up and its commit
        return found

    monkeypatch.setattr(push, "match_stored", match_then_gc)
    pushed = reg.push(state, "new", arch=SQ)
    assert calls and calls[0].blobs_removed > 0
    assert pushed.pushed.tensors_written > 0  # it noticed, and wrote them after all
    assert reg.verify().ok
    assert_same_state(reg.load_state_dict("new:1", verify="sha256"), state)
