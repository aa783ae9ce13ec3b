"""Crash tests (issue 13, hardening): every writing command killed with SIGKILL at its
fault points leaves a registry where every listed version loads and verifies, no
version, tag or alias change is half visible, the command run again finishes the job,
the next push and gc work, and gc leaves exactly the packs the catalogue names.

The harness is tests/crashing.py (read its docstring). The sweeps (marked slow) kill
each command at every statement, commit, pack step and bucket call it makes, and at a
dozen SQLite VM steps and pack chunks spread over the run: at least 30 distinct points
each. The everyday run kills each command at a handful of points (just before and just
after its last commit, its last pack step, one at random). The check itself is checked:
damage a crash could do, made by hand, must be reported.
"""

from __future__ import annotations

import signal
import zlib

import pytest
from crashing import (
    DAMAGES,
    LOCAL_OPERATIONS,
    TEAM_OPERATIONS,
    Harness,
    LocalBackend,
    Sweep,
    TeamBackend,
    check_damaged,
    kill_indices,
    kill_the_lock_holder,
    quick_indices,
    targets,
)

#: Kills per operation in the sweeps at least (crashing.kill_indices: every point but
#: the fine-grained ones, a sample of those, then more at random up to this).
SWEEP_KILLS = 36
#: Distinct kill points each sweep must reach at least (issue 13).
MINIMUM_POINTS = 30


def seed(name: str) -> int:
    return zlib.crc32(name.encode())


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    harness = Harness(tmp_path_factory.mktemp("crashes"))
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def local(harness: Harness) -> LocalBackend:
    return LocalBackend(harness.root / "local")


@pytest.fixture(scope="module")
def team(harness: Harness, postgres_server, seaweed_server, team_bucket: str) -> TeamBackend:
    return TeamBackend(harness.root / "team", postgres_server, seaweed_server, team_bucket)


def assert_clean(sweep: Sweep, minimum: int) -> None:
    print(sweep.summary())
    assert not sweep.problems, "\n".join(sweep.problems)
    assert sweep.distinct >= minimum, sweep.summary()


def assert_swept(sweep: Sweep) -> None:
    """At least MINIMUM_POINTS distinct kills, every point name the command passes
    among them, and both outcomes reached where the command changes what the API shows."""
    assert_clean(sweep, MINIMUM_POINTS)
    assert set(sweep.names) <= {o.point for o in sweep.killed}, sweep.summary()
    states = {o.state for o in sweep.outcomes}
    assert states <= {"before", "after", "unchanged"}, states
    if "unchanged" not in states:
        assert {"before", "after"} <= states, sweep.summary()


@pytest.mark.parametrize("name", LOCAL_OPERATIONS)
def test_a_few_kills(harness: Harness, local: LocalBackend, name: str):
    """SQLite + folder: each command killed just before and just after its last
    commit, at its last pack step and at one point at random."""
    op = LOCAL_OPERATIONS[name]
    names, _after = harness.count(local, op)
    where = targets(names, quick_indices(names, seed(name)))
    assert_clean(harness.sweep(local, op, where), minimum=3)


@pytest.mark.slow
@pytest.mark.parametrize("name", LOCAL_OPERATIONS)
def test_kills_everywhere(harness: Harness, local: LocalBackend, name: str):
    """SQLite + folder: each command killed at SWEEP_KILLS of its points."""
    op = LOCAL_OPERATIONS[name]
    names, _after = harness.count(local, op)
    where = targets(names, kill_indices(names, SWEEP_KILLS, seed(name)))
    assert_swept(harness.sweep(local, op, where))


@pytest.mark.slow
@pytest.mark.parametrize("name", TEAM_OPERATIONS)
def test_kills_everywhere_team(harness: Harness, team: TeamBackend, name: str):
    """PostgreSQL + SeaweedFS (S3): push (a multipart upload) and gc (a rewrite) killed
    at SWEEP_KILLS of their points: statements, commits, parts, completion, reads."""
    op = TEAM_OPERATIONS[name]
    names, _after = harness.count(team, op)
    where = targets(names, kill_indices(names, SWEEP_KILLS, seed(name)))
    assert_swept(harness.sweep(team, op, where))


def test_the_next_writer_gets_the_lock_of_a_killed_one(harness: Harness, local: LocalBackend):
    """kill -9 of a process holding SQLite's write lock (its transaction open, its
    statements run, not committed): the writer waiting for the lock gets it (within
    the busy timeout, else it would fail) and commits; the killed one's change is gone."""
    facts = kill_the_lock_holder(harness, local)
    assert facts["paused at"] == "sql.commit"
    assert facts["lock held"], facts
    assert facts["second began"].startswith("BEGIN IMMEDIATE")
    assert facts["second waiting"], facts  # blocked on the lock, not done
    assert facts["first"] == -signal.SIGKILL, facts
    assert facts["second"] == 0 and facts["second result"] == 0, facts
    assert facts["tags"] == {"stage": "next"}, facts
    assert facts["tag events"] == [{"stage": "next"}], facts
    assert facts["verify"], facts


def test_a_gc_killed_in_its_write_probe_leaves_no_upload(harness: Harness, team: TeamBackend):
    """PostgreSQL + S3: gc killed between the start and the abort of its write probe's
    multipart upload; the gc after it must leave no unfinished upload."""
    op = TEAM_OPERATIONS["gc-rewrite"]
    names, _after = harness.count(team, op)
    sweep = harness.sweep(team, op, [("object.abort_multipart_upload", 1)])
    assert [o.point for o in sweep.killed] == ["object.abort_multipart_upload"]
    assert_clean(sweep, minimum=1)


@pytest.mark.parametrize("how", DAMAGES)
def test_the_check_sees_what_a_crash_could_break(harness: Harness, local: LocalBackend, how: str):
    """The harness's check is no rubber stamp: each damage a crash could do (a version
    half there, half a tag change, a lost pack, a stray file) is reported."""
    problems = check_damaged(harness, local, how)
    assert any(DAMAGES[how][1] in p for p in problems), problems
