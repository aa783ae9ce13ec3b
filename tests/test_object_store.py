"""Packs in an S3-compatible object store: a real SeaweedFS server (tests/servers.py) with
the catalogue on a real PostgreSQL server, both on loopback, started by the fixtures.

What is checked here is what only an object store has: multipart uploads and their
clean-up, ranged reads into the local cache (a second load uses no network, a damaged
cache entry is fetched again, the cache stays within its bound), credentials that may
only read, many writers at once, and the progress bars. The API and CLI suites also
run whole on this backend (test_api.py and test_cli.py, the `team` parameter).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REGISTRY_EXE, assert_same_state, make_model, run_cli

from registry import Registry, StorageError, StoreReadOnlyError

TESTS = Path(__file__).parent


@pytest.fixture
def team(team_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The team registry's environment applied to this process; yields the env."""
    env = {
        **team_env,
        "REGISTRY_HOME": str(tmp_path / "home"),
        "REGISTRY_CACHE_DIR": str(tmp_path / "cache"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("REGISTRY_CACHE_MAX_SIZE", raising=False)
    return env


def _requests(reg: Registry) -> list[str]:
    """The names of the S3 calls ``reg`` makes from now on (boto3's event hooks)."""
    calls: list[str] = []
    reg._store.client.meta.events.register(
        "before-send.s3.*", lambda request, **kw: calls.append(request.method + " " + request.url)
    )
    return calls


def _objects(seaweed_server, env: dict[str, str]) -> list[str]:
    bucket, _, prefix = env["REGISTRY_STORAGE_URL"][len("s3://") :].partition("/")
    client = seaweed_server.client()
    found = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in found)


def _uploads(seaweed_server, env: dict[str, str]) -> list[str]:
    bucket, _, prefix = env["REGISTRY_STORAGE_URL"][len("s3://") :].partition("/")
    client = seaweed_server.client()
    return [
        u["Key"]
        for u in client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads") or []
    ]


def test_push_then_load_twice_the_second_from_the_cache(team, seaweed_server, tmp_path):
    state = make_model("resnet18").state_dict()  # 46 MB: a multipart upload
    with Registry() as reg:
        mv = reg.push(state, "net", arch="resnet18")
        assert mv.pushed.bytes_written > 40 << 20
        [key] = _objects(seaweed_server, team)
        assert key.endswith(".pack")
        assert _uploads(seaweed_server, team) == []  # the upload was completed, not left open
        first = reg.load("net:1")
        calls = _requests(reg)
        second = reg.load("net:1")
        assert calls == []  # nothing read from the network
        assert_same_state(second.state_dict(), state)
        assert_same_state(first.state_dict(), state)
        # a loaded model is a working model: one training step changes it, not the cache
        optimiser = torch.optim.SGD(second.parameters(), lr=0.1)
        second.train()
        second(torch.randn(2, 3, 64, 64)).sum().backward()
        optimiser.step()
        assert not torch.equal(second.fc.weight, state["fc.weight"])
        assert_same_state(reg.load("net:1").state_dict(), state)
        info = reg.cache_info()
        assert info.packs == 1 and info.nbytes >= 40 << 20
    # a fresh process sees the same weights, through the same cache
    out = subprocess.run(
        [sys.executable, "-c", "from registry import Registry; import torch; "
         "m = Registry().load('net:1'); print(float(m.fc.weight.double().sum()))"],
        capture_output=True, text=True, env=os.environ, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) == pytest.approx(float(state["fc.weight"].double().sum()), abs=0)
    pulled = tmp_path / "net.pth"
    run_cli("pull", "net:1", "-o", str(pulled), check=True)
    assert_same_state(torch.load(pulled, weights_only=True), state)


def test_load_fetches_only_the_ranges_its_tensors_use(team, seaweed_server):
    state = make_model("resnet18").state_dict()
    tuned = {k: (v + 1 if k.startswith("fc.") else v) for k, v in state.items()}
    with Registry() as reg:
        reg.push(state, "net", arch="resnet18")
        mv = reg.push(tuned, "net", arch="resnet18", parent="net:1")
        changed = sum(v.nbytes for k, v in tuned.items() if k.startswith("fc."))
        # a fine-tune uploads its changed bytes, not the model (pack header and padding aside)
        assert changed <= mv.pushed.bytes_written <= 1.05 * changed
        reg.clear_cache()
        calls = _requests(reg)
        assert_same_state(reg.load_state_dict("net:2"), tuned)
        gets = [c for c in calls if c.startswith("GET")]
        assert gets and len(gets) <= 12  # a few ranged GETs, not one per tensor
        held = reg.cache_info().nbytes
        total = sum(v.nbytes for v in state.values())
        # net:1's fc is in the first pack but net:2 does not use it: not fetched
        assert held < total + changed - 0.9 * changed


def test_a_damaged_cache_entry_is_fetched_again(team):
    state = make_model("resnet18").state_dict()
    with Registry() as reg:
        reg.push(state, "net", arch="resnet18")
        reg.load("net:1")
        [entry] = [p for p in Path(team["REGISTRY_CACHE_DIR"]).rglob("*.pack")]
        with open(entry, "r+b") as f:  # flip bytes in the middle of the cached weights
            f.seek(entry.stat().st_size // 2)
            f.write(b"\x5a" * 4096)
        assert_same_state(reg.load_state_dict("net:1"), state)
        # the cache holds the store's bytes again, so the next load needs no network
        calls = _requests(reg)
        assert_same_state(reg.load_state_dict("net:1", verify="sha256"), state)
        assert calls == []


def test_the_cache_keeps_within_its_bound_and_the_cli_shows_it(team, monkeypatch):
    monkeypatch.setenv("REGISTRY_CACHE_MAX_SIZE", "60MB")
    with Registry() as reg:
        for seed in range(2):  # two 46 MB versions: both do not fit in 60 MB
            reg.push(make_model("resnet18", seed=seed).state_dict(), "net", arch="resnet18")
        reg.load("net:1")
        reg.load("net:2")
        assert reg.cache_info().nbytes <= 60 * 10**6
    info = json.loads(run_cli("cache", "info", "--json", check=True).stdout)
    assert info["packs"] == 1 and info["max_bytes"] == 60 * 10**6
    assert info["stores"] == [f"{team['REGISTRY_STORAGE_URL']} at {team['AWS_ENDPOINT_URL']}"]
    human = run_cli("cache", "info", check=True).stdout
    assert "in 1 packs" in human and "REGISTRY_CACHE_MAX_SIZE" in human
    pruned = json.loads(run_cli("cache", "prune", "--max-size", "0", "--json", check=True).stdout)
    assert pruned["packs_removed"] == 1 and pruned["bytes_freed"] > 40 << 20
    assert json.loads(run_cli("cache", "info", "--json", check=True).stdout)["packs"] == 0
    bad = run_cli("cache", "prune", "--max-size", "lots")
    assert bad.returncode == 2 and "not a size" in bad.stderr
    with Registry() as reg:
        reg.load("net:2")  # its own pack, and net:1's for the BatchNorm buffers they share
        held = reg.cache_info().packs
    assert held == 2
    cleared = run_cli("cache", "clear", check=True)
    assert f"removed {held} cached packs" in cleared.stderr
    assert json.loads(run_cli("cache", "info", "--json", check=True).stdout)["bytes"] == 0


def test_an_upload_that_fails_is_aborted_and_nothing_is_named(team, seaweed_server, monkeypatch):
    from registry.storage import s3

    real = s3.S3Store._upload_part

    def failing(self, key, upload, number, *args):
        if number == 2:
            raise StorageError("the network went away (test)")
        return real(self, key, upload, number, *args)

    monkeypatch.setattr(s3.S3Store, "_upload_part", failing)
    with Registry() as reg:
        with pytest.raises(StorageError, match="network went away"):
            reg.push(make_model("resnet18").state_dict(), "net", arch="resnet18")
        assert reg.list() == []
    assert _uploads(seaweed_server, team) == []
    assert _objects(seaweed_server, team) == []


_BIG_PUSH = """
import torchvision
from registry import Registry
state = torchvision.models.vit_b_16(weights=None).state_dict()  # 330 MB: 21 parts
Registry().push(state, "big", arch="vit_b_16")
"""


@pytest.mark.slow  # builds and pushes vit_b_16 (330 MB) to kill it mid-upload
def test_a_push_killed_mid_upload_leaves_an_upload_gc_aborts(team, seaweed_server):
    proc = subprocess.Popen(
        [sys.executable, "-c", _BIG_PUSH],
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not _uploads(seaweed_server, team):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.time() < deadline, "the push never started its upload"
            time.sleep(0.05)
        time.sleep(0.3)  # some parts are up
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(_uploads(seaweed_server, team)) == 1
    with Registry() as reg:
        assert reg.list() == []
        # Killed on this machine, its upload would go at the next gc (test_gc_pending);
        # as if it had run elsewhere, gc cannot tell whether it still runs.
        with reg._gateway.write() as catalog:
            catalog.execute("UPDATE pending_packs SET host = ?", ("elsewhere",))
        report = reg.gc()  # younger than the grace period (a day): left alone
        assert report.orphan_files_removed == 0 and len(_uploads(seaweed_server, team)) == 1
        time.sleep(2)  # S3 times are whole seconds
        report = reg.gc(grace=1)
        assert report.orphan_files_removed >= 1
    assert _uploads(seaweed_server, team) == []
    assert _objects(seaweed_server, team) == []


def _pushed(env: dict[str, str]) -> None:
    with Registry() as reg:
        reg.push(make_model("resnet18").state_dict(), "net", arch="resnet18", tags={"stage": "a"})


def test_credentials_that_may_only_read(team, reader_env, seaweed_server, tmp_path, monkeypatch):
    _pushed(team)
    before = _objects(seaweed_server, team)
    reader = {
        **reader_env,
        "REGISTRY_HOME": team["REGISTRY_HOME"],
        "REGISTRY_CACHE_DIR": str(tmp_path / "reader-cache"),
    }
    # reading works with them
    assert "net:1" in run_cli("list", env=reader, check=True).stdout
    pulled = tmp_path / "pulled.safetensors"
    run_cli("pull", "net:1", "-o", str(pulled), env=reader, check=True)
    from safetensors.torch import load_file

    assert set(load_file(pulled)) == set(make_model("resnet18").state_dict())
    run_cli("export", "net:1", "-o", str(tmp_path / "net.tar"), env=reader, check=True)
    checkpoint = tmp_path / "other.pth"
    torch.save(make_model("resnet18", seed=5).state_dict(), checkpoint)
    # writing to the store fails in one line, before anything changes
    for args in (
        ("push", str(checkpoint), "--name", "net", "--arch", "resnet18"),
        ("gc",),
        ("import", str(tmp_path / "net.tar")),
    ):
        result = run_cli(*args, env=reader)
        assert result.returncode == 1, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert "refused to write" in lines[-1] and "Traceback" not in result.stderr, (
            args,
            result.stderr,
        )
    assert _objects(seaweed_server, team) == before
    assert _uploads(seaweed_server, team) == []
    with Registry() as reg:
        assert [v.ref for v in reg.list()] == ["net:1"]
        reg._store.check_writable()  # the admin may write: no error
    for name, value in reader.items():
        os.environ[name] = value
    try:
        with Registry() as reg, pytest.raises(StoreReadOnlyError, match="refused to write"):
            reg.push(make_model("resnet18", seed=6).state_dict(), "net", arch="resnet18")
    finally:
        for name, value in team.items():
            os.environ[name] = value
    assert _objects(seaweed_server, team) == before
    # (the catalogue's read-only role: tests/test_team_catalog.py)


def test_progress_bars_on_a_terminal(team, tmp_path):
    import pty

    checkpoint = tmp_path / "net.pth"
    torch.save(make_model("resnet18").state_dict(), checkpoint)
    for args in (
        ["push", str(checkpoint), "--arch", "resnet18"],
        ["pull", "net:1", "-o", str(tmp_path / "out.pth")],
    ):
        primary, secondary = pty.openpty()
        proc = subprocess.Popen(
            [REGISTRY_EXE, *args],
            stdin=secondary, stdout=subprocess.PIPE, stderr=secondary, env=os.environ,
        )  # fmt: skip
        os.close(secondary)
        chunks = []
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=120)
        os.close(primary)
        shown = b"".join(chunks).decode(errors="replace")
        assert proc.returncode == 0, shown
        label = "uploading" if args[0] == "push" else "downloading"
        assert label in shown and "100%" in shown and "B/s" in shown, shown
        assert re.search(r"100%\|.*\| \d+(\.\d+)?M/\d+(\.\d+)?M \[", shown), shown  # of a total
    # not a terminal: silent
    result = run_cli("pull", "net:1", "-o", str(tmp_path / "again.pth"), "--force", check=True)
    assert "uploading" not in result.stderr and "%" not in result.stderr


def test_versions_move_between_a_local_and_a_team_registry_both_ways(team, tmp_path):
    local = tmp_path / "local"
    base = make_model("resnet18").state_dict()
    tuned = {k: (v * 2 if k.startswith("fc.") else v) for k, v in base.items()}
    with Registry(
        home=local, database_url=f"sqlite:///{local / 'registry.db'}", storage_url=local / "objects"
    ) as mine:
        mine.push(base, "base", arch="resnet18", tags={"stage": "pre"})
        mine.push(tuned, "tuned", arch="resnet18", parent="base:1", description="fc doubled")
        mine.alias("tuned:1", "production")
    # local -> team, with the command a user types (the source is the environment's)
    local_env = {
        "REGISTRY_HOME": str(local),
        "REGISTRY_DATABASE_URL": "",
        "REGISTRY_STORAGE_URL": "",
    }
    moved = run_cli(
        "mirror", "--to-database-url", team["REGISTRY_DATABASE_URL"],
        "--to-storage-url", team["REGISTRY_STORAGE_URL"], "--json",
        env={k: v for k, v in local_env.items()}, check=True,
    )  # fmt: skip
    assert [v["ref"] for v in json.loads(moved.stdout)["versions"]] == ["base:1", "tuned:1"]
    with Registry() as shared:
        got = shared.get("tuned:production")
        assert got.ref == "tuned:1" and got.parent == "base:1" and got.description == "fc doubled"
        assert shared.get("base:1").tags == {"stage": "pre"}
        assert_same_state(shared.load_state_dict("tuned:1"), tuned)
        assert shared.verify().corrupt == []
        again = shared.push(tuned, "tuned", arch="resnet18")  # the same weights: no new version
        assert again.ref == "tuned:1" and again.pushed.bytes_written == 0
        shared.push(
            {k: v + 3 for k, v in tuned.items()}, "tuned", arch="resnet18", parent="tuned:1"
        )
    # team -> a second local registry, with export and import
    bundle = tmp_path / "team.tar"
    run_cli("export", "base:1", "tuned:1", "tuned:2", "-o", str(bundle), check=True)
    other = tmp_path / "other"
    other_env = {
        "REGISTRY_HOME": str(other),
        "REGISTRY_DATABASE_URL": "",
        "REGISTRY_STORAGE_URL": "",
    }
    run_cli("import", str(bundle), env=other_env, check=True)
    with Registry(
        home=other, database_url=f"sqlite:///{other / 'registry.db'}", storage_url=other / "objects"
    ) as back:
        assert [v.ref for v in back.list(sort="name")] == [
            "base:1",
            "tuned:2",
            "tuned:1",
        ] or sorted(v.ref for v in back.list()) == ["base:1", "tuned:1", "tuned:2"]
        assert back.get("tuned:2").parent == "tuned:1"
        assert_same_state(back.load_state_dict("tuned:1"), tuned)
    # mirroring again copies nothing new
    again = json.loads(
        run_cli(
            "mirror", "--to-database-url", team["REGISTRY_DATABASE_URL"],
            "--to-storage-url", team["REGISTRY_STORAGE_URL"], "--json", env=local_env, check=True,
        ).stdout
    )  # fmt: skip
    assert again["bytes_written"] == 0 and not any(v["created"] for v in again["versions"])
    bad = run_cli("mirror", "--to-storage-url", team["REGISTRY_STORAGE_URL"], env=local_env)
    assert bad.returncode == 2 and "--to-database-url" in bad.stderr


_WRITER = """
import sys, time, torch
sys.path.insert(0, sys.argv[3])
from archs_helper.models import TinyNet
from registry import Registry
worker, start = int(sys.argv[1]), float(sys.argv[2])
states = []
for i in range(20):
    torch.manual_seed(worker * 1000 + i)
    states.append(TinyNet().state_dict())
torch.manual_seed(424242)
shared = TinyNet().state_dict()  # the same for every writer, and what the collector churns
while time.time() < start:
    time.sleep(0.005)
with Registry() as reg:
    for i, state in enumerate(states):
        mv = reg.push(state, "busy", arch="archs_helper.models:TinyNet")
        print(mv.ref, mv.digest, flush=True)
        if i % 5 == 4:
            reg.push(shared, "same", arch="archs_helper.models:TinyNet")
"""

_COLLECTOR = """
import sys, time, torch
sys.path.insert(0, sys.argv[2])
from archs_helper.models import TinyNet
from registry import Registry
torch.manual_seed(424242)
shared = TinyNet().state_dict()
stop = float(sys.argv[1])
runs = 0
with Registry() as reg:
    while time.time() < stop:
        # push and remove the writers' shared weights, so gc deletes the very blobs the
        # writers are finding stored, and packs they may be reading
        mv = reg.push(shared, "scratch", arch="archs_helper.models:TinyNet")
        reg.remove(mv.ref, force=True)
        reg.gc()
        runs += 1
print(runs)
"""


@pytest.mark.slow  # about 45 s: 9 processes importing torch on 2 cores
def test_eight_writers_and_a_collector_at_once(team, seaweed_server):
    """8 processes push 20 versions each to one name while gc runs in a loop: versions
    1..160 with no gaps or duplicates, each loadable and verifying; the tensors all
    writers pushed identically are stored once."""
    from archs_helper.models import TinyNet  # noqa: F401  (importable for the writers)

    start = time.time() + 10  # all are past their imports by then
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(w), str(start), str(TESTS)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for w in range(8)
    ]
    collector = subprocess.Popen(
        [sys.executable, "-c", _COLLECTOR, str(time.time() + 600), str(TESTS)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    pushed: dict[str, str] = {}
    try:
        for proc in writers:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
            for ref, digest in (line.split() for line in out.splitlines()):
                assert ref not in pushed, f"{ref} given twice"
                pushed[ref] = digest
    finally:
        collector.terminate()
        out, err = collector.communicate(timeout=60)
    assert "Traceback" not in err, err  # gc never failed while the pushes ran
    assert sorted(pushed, key=lambda r: int(r.split(":")[1])) == [
        f"busy:{n}" for n in range(1, 161)
    ]
    with Registry() as reg:
        assert reg.count("busy") == 160
        for ref, digest in pushed.items():
            assert reg.get(ref).digest == digest
            reg.load_state_dict(ref, verify="sha256")
        assert [v.ref for v in reg.list("same")] == ["same:1"]  # 32 identical pushes, one version
        report = reg.verify()
        assert report.corrupt == [] and report.missing == []
        # the duplicate packs of lost races are collected, and then the store holds
        # exactly the packs the catalogue names
        reg.gc()
        stored = sorted(f.pack_id for f in reg._store.list())
        with reg._gateway.read() as catalog:
            named = sorted(catalog.packs())
        assert stored == named


def test_a_team_reader_with_a_select_only_role_and_read_only_keys(
    team, reader_env, postgres_server, seaweed_server, tmp_path
):
    """The set-up the README gives a read-only team member, end to end: every read
    works, every write fails in one line, and neither the catalogue nor the bucket
    changes."""
    import uuid

    base = make_model("resnet18").state_dict()
    with Registry() as reg:
        reg.push(base, "net", arch="resnet18", tags={"stage": "a"})
        reg.push(
            {k: v + 1 if k.startswith("fc.") else v for k, v in base.items()},
            "net",
            arch="resnet18",
        )
    role = f"reader_{uuid.uuid4().hex[:8]}"
    postgres_server.execute(f'CREATE ROLE "{role}" LOGIN')
    run_cli("db", "grant-reader", role, "--run", check=True)
    reader = {
        **reader_env,
        "REGISTRY_DATABASE_URL": postgres_server.url_for(team["REGISTRY_DATABASE_URL"], role),
        "REGISTRY_HOME": str(tmp_path / "reader-home"),
        "REGISTRY_CACHE_DIR": str(tmp_path / "reader-cache"),
    }
    objects = _objects(seaweed_server, team)
    for args in (
        ("list",), ("show", "net:1"), ("log", "net"), ("diff", "net:1", "net:2"),
        ("pull", "net:2", "-o", str(tmp_path / "net2.pth")),
        ("export", "net:1", "net:2", "-o", str(tmp_path / "net.tar")),
        ("verify",),
    ):  # fmt: skip
        run_cli(*args, env=reader, check=True)
    loaded = subprocess.run(
        [sys.executable, "-c", "from registry import Registry; "
         "print(Registry().load('net:1').fc.weight.shape)"],
        env={**os.environ, **reader}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert loaded.returncode == 0 and "1000, 512" in loaded.stdout, loaded.stderr
    checkpoint = tmp_path / "new.pth"
    torch.save(make_model("resnet18", seed=9).state_dict(), checkpoint)
    for args in (
        ("push", str(checkpoint), "--name", "net", "--arch", "resnet18"),
        ("tag", "net:1", "stage=b"), ("alias", "net:1", "production"),
        ("describe", "net:1", "text"), ("rm", "net:2", "--yes"), ("gc",),
        ("import", str(tmp_path / "net.tar")),
    ):  # fmt: skip
        result = run_cli(*args, env=reader)
        assert result.returncode == 1, (args, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert "refused to write" in line, (args, line)
    assert _objects(seaweed_server, team) == objects and _uploads(seaweed_server, team) == []
    with Registry() as reg:
        assert [v.ref for v in reg.list()] == ["net:2", "net:1"]
        assert reg.get("net:1").tags == {"stage": "a"} and reg.get("net:1").aliases == ()
        assert [e.kind for e in reg.log("net")].count("push") == 2


def test_a_lost_object_is_reported_by_verify_and_healed_by_a_push(team, seaweed_server):
    state = make_model("resnet18").state_dict()
    with Registry() as reg:
        reg.push(state, "net", arch="resnet18")
        reg.load("net:1")  # cached here, so only asking the bucket shows the loss
        bucket, _, _ = team["REGISTRY_STORAGE_URL"][len("s3://") :].partition("/")
        [key] = _objects(seaweed_server, team)
        seaweed_server.client().delete_object(Bucket=bucket, Key=key)
        report = reg.verify()
        assert report.missing and {p.kind for p in report.missing} == {"missing"}
        assert all(u.startswith("net:1 ") for p in report.missing for u in p.used_by)
        again = reg.push(state, "net", arch="resnet18")  # the good weights, once more
        assert again.ref == "net:1" and again.pushed.healed > 0
        assert reg.verify().ok
        reg.clear_cache()
        assert_same_state(reg.load_state_dict("net:1", verify="sha256"), state)
