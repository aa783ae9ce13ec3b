"""The tensor store: pack format, dedup, durability order and crash safety."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import create_engine, text

from registry import Registry
from registry.storage import LocalStore
from registry.storage.packs import DATA_ALIGNMENT, read_index


def packs(home: Path) -> list[Path]:
    return sorted((home / "objects" / "packs").rglob("*.pack"))


def test_pack_is_safetensors_with_aligned_verifiable_blobs(tmp_path: Path):
    store = LocalStore(tmp_path)
    blobs = [bytes([i]) * n for i, n in enumerate([8, 100, 4096, 1, 0, 333])]
    written = store.write_pack([memoryview(b) for b in blobs])
    # The digests were computed while writing, and name the blobs in the header.
    assert written.digests == [hashlib.sha256(b).hexdigest() for b in blobs]
    path = store.pack_path(written.pack_id)
    assert path.stat().st_size == written.nbytes
    data = path.read_bytes()
    for blob, digest, offset in zip(blobs, written.digests, written.offsets):
        assert offset % DATA_ALIGNMENT == 0
        assert hashlib.sha256(data[offset : offset + len(blob)]).hexdigest() == digest
    # Any safetensors reader opens it; the index in the header matches the catalogue's view.
    tensors = load_file(path)
    for blob, digest in zip(blobs, written.digests):
        assert bytes(tensors[digest].numpy()) == blob
    assert read_index(data[:100_000]) == {
        d: (off, len(b)) for d, off, b in zip(written.digests, written.offsets, blobs)
    }
    assert not list((tmp_path / "tmp").iterdir())
    assert not os.access(path, os.W_OK) or os.geteuid() == 0  # written read-only (0444)
    assert path.stat().st_mode & 0o222 == 0


def test_large_pack_is_written_in_chunks_and_hashed_exactly(tmp_path: Path):
    """Blobs larger than the write-back chunk, hashed on threads while they are written."""
    store = LocalStore(tmp_path)
    blobs = [os.urandom(40 << 20), os.urandom(3), os.urandom(70 << 20)]
    written = store.write_pack([memoryview(b) for b in blobs])
    assert written.digests == [hashlib.sha256(b).hexdigest() for b in blobs]
    with open(store.pack_path(written.pack_id), "rb") as f:
        for blob, offset in zip(blobs, written.offsets):
            f.seek(offset)
            assert f.read(len(blob)) == blob


def test_identical_tensors_stored_once(reg: Registry, home: Path, resnet18_state):
    reg.push(resnet18_state, "a", arch="resnet18")
    size_after_first = sum(p.stat().st_size for p in packs(home))
    again = reg.push(resnet18_state, "b", arch="resnet18")
    assert again.pushed.bytes_written == 0 and len(packs(home)) == 1
    tuned = OrderedDict(resnet18_state)
    tuned["fc.weight"] = resnet18_state["fc.weight"] * 0.5
    tuned["fc.bias"] = resnet18_state["fc.bias"] + 1
    mv = reg.push(tuned, "a", arch="resnet18")
    changed = tuned["fc.weight"].nbytes + tuned["fc.bias"].nbytes
    assert mv.pushed.tensors_written == 2
    assert changed <= mv.pushed.bytes_written <= changed + 4096
    assert len(packs(home)) == 2
    assert sum(p.stat().st_size for p in packs(home)) == size_after_first + mv.pushed.bytes_written


def test_pack_is_durable_before_the_catalogue_commit(reg: Registry, resnet18_state, monkeypatch):
    from registry.catalog.rows import Statements

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        return real_fsync(fd)

    def replace(src, dst):
        if str(dst).endswith(".pack"):
            events.append("rename")
        return real_replace(src, dst)

    real_execute = Statements.execute

    def execute(self, sql, params=()):
        if sql == "COMMIT" and events and events[-1] != "commit":
            events.append("commit")
        return real_execute(self, sql, params)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Statements, "execute", execute)
    reg.push(resnet18_state, "durable", arch="resnet18")
    assert "fsync-file" in events and "rename" in events and "commit" in events
    assert events.index("fsync-file") < events.index("rename")
    after_rename = events[events.index("rename") :]
    assert after_rename.index("fsync-dir") < after_rename.index("commit")


def test_failed_commit_leaves_no_version_and_no_pack(
    reg: Registry, home: Path, resnet18_state, monkeypatch
):
    from registry.catalog.versions import VersionQueries

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure while recording the version")

    monkeypatch.setattr(VersionQueries, "add_version", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        reg.push(resnet18_state, "x", arch="resnet18")
    monkeypatch.undo()
    assert reg.list() == []
    assert packs(home) == []
    assert reg.push(resnet18_state, "x", arch="resnet18").ref == "x:1"


CRASH_CHILD = r"""
import os, signal, sys, torch
sys.path.insert(0, sys.argv[2])
from conftest import make_model
from registry import Registry
from registry.catalog.rows import Statements
execute = Statements.execute
def die_at_commit(self, sql, params=()):
    if sql == "COMMIT" and getattr(self, "wrote", False):  # the push's rows, not yet committed
        os.kill(os.getpid(), signal.SIGKILL)
    self.wrote = getattr(self, "wrote", False) or sql.startswith("INSERT INTO versions")
    return execute(self, sql, params)
Statements.execute = die_at_commit
Registry(home=sys.argv[1]).push(make_model("resnet18", seed=9).state_dict(), "crash", arch="resnet18")
"""


def test_crash_between_pack_and_commit(home: Path, resnet18_state):
    result = subprocess.run(
        [sys.executable, "-c", CRASH_CHILD, str(home), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert len(packs(home)) == 1  # the pack made it to disk...
    with Registry(home=home) as reg:
        assert reg.list() == []  # ...but no version points at anything
        engine = create_engine(f"sqlite:///{home / 'registry.db'}")
        with engine.connect() as conn:
            assert conn.execute(text("select count(*) from blobs")).scalar() == 0
            assert conn.execute(text("select count(*) from versions")).scalar() == 0
        engine.dispose()
        assert reg.push(resnet18_state, "crash", arch="resnet18").ref == "crash:1"
        assert reg.load_state_dict("crash:1")["fc.bias"].equal(resnet18_state["fc.bias"])


def test_loaded_tensors_are_private_copies_on_write(reg: Registry, home: Path, resnet18_state):
    reg.push(resnet18_state, "cow", arch="resnet18")
    before = [p.read_bytes() for p in packs(home)]
    state = reg.load_state_dict("cow:1")
    state["conv1.weight"].mul_(0)
    assert [p.read_bytes() for p in packs(home)] == before
    assert torch.equal(reg.load_state_dict("cow:1")["conv1.weight"], resnet18_state["conv1.weight"])
