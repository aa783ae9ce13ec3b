"""gc and the packs being written: a crashed push's pack is collected at once, a running
push's never, one whose writer cannot be seen only after ``grace``; ``grace=0`` brings
the store back to exactly what the versions use, and a push whose pack it took starts
over. Runs on both backends (SQLite + folder, PostgreSQL + SeaweedFS)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from archs_helper.models import TinyNet
from conftest import assert_same_state, run_cli

from registry import Registry, _faults
from registry.errors import InvalidArgumentError

BACKENDS = ("local", "team")
ARCH = "archs_helper.models:TinyNet"
#: 8 x 600k + 600k x 3 float32: 19 MB, so a push to a bucket is a multipart upload.
HIDDEN = 600_000


def tiny(seed: int, hidden: int = HIDDEN) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return TinyNet(hidden).state_dict()


def store_files(reg: Registry) -> list:
    """Every pack file, temporary file or unfinished upload in the store."""
    return reg._store.list()


def named_packs(reg: Registry) -> set[str]:
    with reg._gateway.read() as catalog:
        return set(catalog.packs())


def pending(reg: Registry) -> dict:
    with reg._gateway.read() as catalog:
        return catalog.pending_packs()


def exactly_what_versions_use(reg: Registry) -> bool:
    files = store_files(reg)
    return all(f.finished for f in files) and {f.pack_id for f in files} == named_packs(reg)


_KILLED_PUSH = textwrap.dedent(
    """
    import os, signal, sys, torch
    from archs_helper.models import TinyNet
    from registry import Registry, _faults
    after, point = sys.argv[1].split("/") if "/" in sys.argv[1] else ("", sys.argv[1])
    passed = []
    def hook(name):
        if name == point and (not after or after in passed):
            os.kill(os.getpid(), signal.SIGKILL)
        passed.append(name)
    torch.manual_seed(7)
    state = TinyNet(int(sys.argv[2])).state_dict()
    reg = Registry()
    _faults.hook = hook
    reg.push(state, "crashed", arch="archs_helper.models:TinyNet", arch_kwargs={"hidden": int(sys.argv[2])})
    """
)


def push_killed_at(point: str) -> subprocess.CompletedProcess[str]:
    tests = str(Path(__file__).parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-c", _KILLED_PUSH, point, str(HIDDEN)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


#: Where a push dies with its bytes in the store and no version naming them ("A/B": at
#: the first B after A): before its commit (a whole pack), and before the pack is
#: whole (a temporary file, an unfinished upload).
KILL_POINTS = {
    "local": ["pack.renamed/sql.commit", "pack.rename"],
    "team": ["object.complete_multipart_upload/sql.commit", "object.complete_multipart_upload"],
}


@pytest.mark.parametrize("which", [0, 1])
def test_a_crashed_push_is_collected_at_once(which: int, reg: Registry, backend: str):
    reg.push(tiny(1), "kept", arch=ARCH, arch_kwargs={"hidden": HIDDEN})
    result = push_killed_at(KILL_POINTS[backend][which])
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert [v.ref for v in reg.list()] == ["kept:1"]
    leftovers = [f for f in store_files(reg) if not (f.finished and f.pack_id in named_packs(reg))]
    assert leftovers, "the killed push left nothing to collect: killed too early"
    assert set(pending(reg)) == {f.pack_id for f in leftovers}
    assert reg.gc(dry_run=True).orphan_files_removed == len(leftovers)
    report = reg.gc()  # no grace needed: the writer is known gone
    assert report.orphan_files_removed == len(leftovers)
    assert exactly_what_versions_use(reg) and pending(reg) == {}
    assert reg.verify().ok
    assert_same_state(reg.load_state_dict("kept:1"), tiny(1))
    again = reg.push(tiny(7), "crashed", arch=ARCH, arch_kwargs={"hidden": HIDDEN})
    assert again.ref == "crashed:1" and reg.verify().ok


def test_a_running_push_keeps_its_pack_through_gc(
    reg: Registry, home: Path, monkeypatch: pytest.MonkeyPatch
):
    """A gc run while a push of this machine has written its pack but not committed
    (even with grace 0) leaves the pack; the push then commits a version that loads."""
    reports = []

    def hook(name: str) -> None:
        if name in ("pack.renamed", "object.complete_multipart_upload") and not reports:
            other = Registry(home=home)
            try:
                reports.append(other.gc(grace=0))
            finally:
                other.close()

    monkeypatch.setattr(_faults, "hook", hook)
    mv = reg.push(tiny(2), "racing", arch=ARCH, arch_kwargs={"hidden": HIDDEN})
    monkeypatch.setattr(_faults, "hook", None)
    assert reports and reports[0].orphan_files_removed == 0
    assert mv.pushed.bytes_written > 0
    assert_same_state(reg.load_state_dict(mv.ref), tiny(2))
    assert reg.verify().ok and pending(reg) == {} and exactly_what_versions_use(reg)


#: Where a push's pack is taken from under it: before it is whole (a temporary file,
#: an unfinished upload) and once it is whole, before its commit ("A/B": the first B
#: after A; on PostgreSQL the commit's first statement runs outside any lock).
TAKEN_AT = {
    "local": {"unfinished": "pack.rename", "whole": "pack.renamed"},
    "team": {
        "unfinished": "object.complete_multipart_upload",
        "whole": "object.complete_multipart_upload/sql",
    },
}


@pytest.mark.parametrize("stage", ["unfinished", "whole"])
def test_grace_zero_takes_a_pack_whose_writer_cannot_be_seen(
    stage: str, reg: Registry, home: Path, backend: str, monkeypatch: pytest.MonkeyPatch
):
    """A writer on another machine cannot be judged: its pack is kept for the grace
    period and taken by ``grace=0``; that push then finds its pack gone (an unfinished
    one) or its row gone at commit (PackCollected) and starts over with a new pack."""
    after, _, point = TAKEN_AT[backend][stage].rpartition("/")
    passed: list[str] = []
    seen: list[tuple[int, int]] = []

    def hook(name: str) -> None:
        if "gc" in passed:  # once only (the gc below passes points too)
            return
        if name == point and (not after or after in passed):
            passed.append("gc")
            with reg._gateway.write() as catalog:  # the writer now looks foreign
                catalog.execute("UPDATE pending_packs SET host = ?", ("elsewhere",))
            other = Registry(home=home)
            try:
                kept = other.gc()  # default grace: a young pack of an unseen writer stays
                taken = other.gc(grace=0)
            finally:
                other.close()
            seen.append((kept.orphan_files_removed, taken.orphan_files_removed))
        passed.append(name)

    monkeypatch.setattr(_faults, "hook", hook)
    mv = reg.push(tiny(3), "restarted", arch=ARCH, arch_kwargs={"hidden": HIDDEN})
    monkeypatch.setattr(_faults, "hook", None)
    [(kept, taken)] = seen
    assert kept == 0 and taken == 1
    assert mv.ref == "restarted:1" and mv.pushed.bytes_written > 0
    assert_same_state(reg.load_state_dict(mv.ref), tiny(3))
    assert reg.verify().ok and pending(reg) == {} and exactly_what_versions_use(reg)


def test_grace_is_checked(reg: Registry, home: Path):
    with pytest.raises(InvalidArgumentError, match="grace"):
        reg.gc(grace=-1)
    bad = run_cli("gc", "--grace", "-5")
    assert bad.returncode == 2 and "--grace" in bad.stderr
    ok = run_cli("gc", "--grace", "0", "--json", check=True)
    assert '"orphan_files_removed": 0' in ok.stdout
