"""The soak test: several processes push, tag, alias, load, remove and collect garbage
on one registry at once, on both backends (SQLite + folder; PostgreSQL + SeaweedFS).

The workload and the final checks are benchmarks/soak.py's (``python
benchmarks/soak.py`` runs the same thing as a benchmark, longer if asked): here it
runs for REGISTRY_SOAK_SECONDS per backend (default soak.DEFAULT_SECONDS). It fails
on any error that concurrency does not make legitimate (the tracebacks are shown), on
a version number lost or given twice, a surviving version that differs by one bit
from what its pusher sent, a `registry verify` that finds anything, or a store that,
after a gc with no grace period, holds a pack the catalogue does not name or lacks one
it does. The per-operation table (counts, errors by kind, ops/s, median latencies) is
printed: `pytest -s` shows it. Two quick tests check the checker: each kind of damage
it is for is reported, and only errors concurrency explains count as legitimate.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

from registry import Registry

BACKENDS = ("local", "team")
SOAK_FILE = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def _load_soak():
    spec = importlib.util.spec_from_file_location("soak", SOAK_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


soak = _load_soak()


@pytest.mark.slow  # about a minute per backend (REGISTRY_SOAK_SECONDS of work, plus checks)
def test_soak(reg: Registry, backend: str, tmp_path: Path) -> None:
    """Four worker processes for REGISTRY_SOAK_SECONDS on this backend: no unexpected
    error, every operation succeeded some of the time, and soak.check finds nothing."""
    seconds = soak.seconds_from_env()
    result = soak.run(tmp_path / "soak", seconds=seconds, seed=sum(map(ord, backend)))
    print(soak.report(result, backend))
    assert not result.unexpected, "\n\n".join(
        f"worker {u['worker']}, {u['op']}: {u['traceback']}" for u in result.unexpected
    )
    # The workload did what it is for: every operation succeeded some of the time,
    # versions were created, found stored again, and removed.
    idle = [op for op, stats in result.ops.items() if stats.ok == 0]
    assert not idle, f"never succeeded: {idle}\n{soak.report(result, backend)}"
    assert any(not p["created"] for p in result.pushes) and result.removals
    checking = time.monotonic()
    problems = soak.check(reg, result)
    print(f"the final checks took {time.monotonic() - checking:.1f} s")
    assert not problems, "\n".join(problems)


@pytest.mark.local_only  # about the checker, not a backend
def test_the_final_checks_find_what_they_are_for(reg: Registry, home: Path, tmp_path: Path) -> None:
    """soak.check on a registry one in-process worker used: clean, it finds nothing;
    then a version removed and one pushed behind the workers' back, a record that
    disagrees with what was stored, and damaged pack bytes are each reported."""
    import random

    folder = tmp_path / "soak"
    folder.mkdir()
    reg.upgrade_database()
    with open(folder / "worker-0.jsonl", "w") as out:
        worker = soak.Worker(reg, 0, random.Random(0), out)
        started = time.time()
        for _ in range(4):
            worker.op_push()
        worker.op_push_again()
        for op in (worker.op_push_child, worker.op_remove):  # False: it picked an empty name
            while op() is False:
                pass
        worker.write(**worker.summary(), started=started, ended=time.time())
    result = soak.collect(folder, 1, 0, started)
    assert len(result.pushes) == 6 and len(result.removals) == 1
    assert soak.check(reg, result) == []

    survivors = sorted({p["ref"] for p in result.pushes} - {r["ref"] for r in result.removals})
    unrecorded_removal, misrecorded = survivors[0], survivors[1]
    reg.remove(unrecorded_removal, force=True)
    extra = reg.push(soak.weights("w9-0"), "soak/a", arch=soak.ARCH, arch_kwargs={"hidden": 256})
    for push in result.pushes:
        if push["ref"] == misrecorded:
            push["sha256"] = {**push["sha256"], "body.2.bias": "0" * 64}
    problems = "\n".join(soak.check(reg, result))
    assert f"there but not expected: ['{extra.ref}']" in problems
    assert f"expected but not there: ['{unrecorded_removal}']" in problems
    assert "the history's pushes" in problems and "the history's removals" in problems
    assert f"{misrecorded}: the catalogue's tensor table is not what was pushed" in problems
    assert f"{misrecorded}: the loaded module's tensors are not what was pushed" in problems

    [pack] = [p for p in (home / "objects").rglob("*.pack") if p.stat().st_size > 8192][:1]
    with open(pack, "r+b") as f:  # the first layer, which every version shares
        f.seek(pack.stat().st_size // 2)
        f.write(b"\x5a" * 64)
    problems = "\n".join(soak.check(reg, result))
    assert "registry verify (1)" in problems and "IntegrityError" in problems, problems


def test_which_errors_count_as_legitimate() -> None:
    """Only what concurrency explains is counted by kind; anything else is unexpected."""
    from registry.catalog.gateway import Contention
    from registry.errors import (
        IntegrityError,
        InvalidArgumentError,
        StorageError,
        VersionNotFoundError,
    )

    gone = VersionNotFoundError("soak/a:3 was removed")
    assert soak.classify("tag", gone) == soak.classify("load", gone) == "gone"
    assert soak.classify("push", gone) is None  # a plain push names no version
    assert soak.classify("push", Contention("a concurrent change")) == "contention"
    aliased = InvalidArgumentError("soak/a:3 is what ...; move the alias first, or ...")
    assert soak.classify("remove", aliased) == "aliased"
    assert soak.classify("tag", aliased) is None
    assert soak.classify("untag", InvalidArgumentError("soak/a:3 has no tag 'x'")) == "tag gone"
    for error in (IntegrityError("bad bytes"), StorageError("pack gone"), RuntimeError("bug")):
        assert soak.classify("load", error) is None
