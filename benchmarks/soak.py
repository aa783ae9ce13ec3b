"""Soak: several processes push, tag, alias, load, remove and collect garbage on one
registry at once for a while; then nothing may be lost, duplicated or damaged.

    python benchmarks/soak.py [--seconds S] [--workers N] [--backend local|team|both]
                              [--seed N] [--dir DIR]

Prints, for each backend, every operation's count, its legitimate errors by kind, its
rate (ops/s) and its median latency, then what the final checks found (exit 1 if
anything). ``--seconds`` (default REGISTRY_SOAK_SECONDS, else 30) is how long the
workers run on each backend. "local" is SQLite and a folder; "team" is PostgreSQL
and a SeaweedFS bucket, servers started here by tests/servers.py (SQLite when no
PostgreSQL server can be started; skipped when SeaweedFS cannot be).
tests/test_soak.py runs the same workload, bounded, on both backends.

The workload (``run``): N worker processes (this file with ``--worker``) start
together and, until the deadline, each draws operations from ``MIX``: pushes of new
weights to three shared names (some with a parent), pushes again of weights it pushed
before (the version, or a new one if someone removed it), pushes of weights every
worker pushes identically to one name, tag, untag, alias, unalias, load, remove,
gc and verify. Weights are a small MLP (``archs_helper.models:TinyNet``) whose
first layer every version shares and whose last weight two successive versions of
a worker share, so gc deletes whole packs and rewrites partly used ones. Each
state dict says where it came from (its last bias is ``[code, worker, i]``), so any
loaded weights are checked bit for bit against the weights regenerated from that
origin, however the worker came to load them (an alias, say, that moved meanwhile).

Each worker writes what it did to ``worker-N.jsonl`` of its own, one line per event,
flushed as it goes: every push (ref, created or found, version digest, the sha256 of
each tensor it sent), every removal, every unexpected error with its traceback, and
a summary (counts, errors by kind, latencies). Errors that concurrency makes
legitimate (``LEGITIMATE``: the version was removed meanwhile, an alias points at it,
a tag was removed meanwhile, a ``Contention`` that ran out of retries) are counted
by kind; anything else is unexpected.

``check`` then compares the registry with the workers' files: every version number
given once, none lost (1..N per name, and the history's pushes and removals are the
workers'), the surviving versions exactly those pushed and not removed, each
verifying bit for bit against what its pusher sent (and loading as a module),
aliases resolving, `registry verify` clean, and after a plain gc (every writer has ended) the
store holds exactly the packs the catalogue names.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"  # archs_helper, servers.py

#: Seconds the workers run on each backend unless REGISTRY_SOAK_SECONDS says otherwise.
DEFAULT_SECONDS = 30.0
DEFAULT_WORKERS = 4

ARCH = "archs_helper.models:TinyNet"
HIDDEN = 256  # TinyNet(hidden=256): 8 -> 256 -> 3, 4 tensors, 12.3 kB of float32
NAMES = ("soak/a", "soak/b", "soak/c")
COMMON = "soak/common"  # weights every worker pushes identically
COMMON_WEIGHTS = 3  # how many such state dicts there are
ALIASES = ("production", "staging")
LIST_LIMIT = 25  # versions a worker looks at to pick one (the newest or the oldest)

#: Operations and their relative frequency.
MIX: dict[str, int] = {
    "push": 16,  # new weights to one of NAMES
    "push-child": 6,  # new weights with a parent (a listed version of that name)
    "push-again": 6,  # weights this worker pushed before, to the same name
    "push-common": 5,  # weights every worker pushes identically, to COMMON
    "tag": 10,
    "untag": 4,
    "alias": 8,
    "unalias": 2,
    "load": 20,
    "remove": 14,
    "gc": 5,
    "verify": 2,
}

#: Operations on a version picked from a listing a moment ago, which may be removed
#: before the operation reaches it ("gone"). Also legitimate: removing a version an
#: alias points at without force ("aliased"), untagging a tag removed meanwhile ("tag
#: gone"), and a concurrent writer's change that outlasted the retries ("contention").
_GONE_OPS = {"push-child", "tag", "untag", "alias", "unalias", "load", "remove", "verify"}


def classify(op: str, error: BaseException) -> str | None:
    """The kind of a legitimate error of ``op`` under concurrency, or None (unexpected)."""
    from registry.catalog.gateway import Contention
    from registry.errors import InvalidArgumentError, NotFoundError

    if isinstance(error, Contention):
        return "contention"
    if isinstance(error, NotFoundError) and op in _GONE_OPS:
        return "gone"
    if isinstance(error, InvalidArgumentError):
        if op == "remove" and "move the alias first" in str(error):
            return "aliased"
        if op == "untag" and " has no tag " in str(error):
            return "tag gone"
    return None


# -- weights ---------------------------------------------------------------------------


def _generator(*seed: int):
    import torch

    return torch.Generator().manual_seed(
        int.from_bytes(hashlib.sha256(repr(seed).encode()).digest()[:7], "big")
    )


def weights(origin: str):
    """The state dict called ``origin``: ``wW-I`` (worker W's I-th new weights) or
    ``common-K``. Every one shares the first layer; ``wW-2J`` and ``wW-2J+1`` share the
    last weight; the last bias is ``[code, W or -1, I or K]`` (``origin_of``)."""
    from collections import OrderedDict

    import torch

    code, worker, i = _parse_origin(origin)
    base, pair = _generator(0), _generator(code, worker, i // 2)
    return OrderedDict(
        [
            ("body.0.weight", torch.randn(HIDDEN, 8, generator=base)),
            ("body.0.bias", torch.randn(HIDDEN, generator=base)),
            ("body.2.weight", torch.randn(3, HIDDEN, generator=pair)),
            ("body.2.bias", torch.tensor([code, worker, i], dtype=torch.float32)),
        ]
    )


def _parse_origin(origin: str) -> tuple[int, int, int]:
    kind, _, rest = origin.partition("-")
    if kind == "common":
        return 2, -1, int(rest)
    if kind.startswith("w") and kind[1:].isdigit():
        return 1, int(kind[1:]), int(rest)
    raise ValueError(f"not an origin: {origin!r}")


def origin_of(state) -> str:
    """Which weights these are, read from their last bias; ValueError if it says nothing."""
    values = state["body.2.bias"].tolist()
    if len(values) != 3 or any(v != int(v) for v in values):
        raise ValueError(f"the last bias {values} names no origin")
    code, worker, i = (int(v) for v in values)
    if code == 1 and worker >= 0 and i >= 0:
        return f"w{worker}-{i}"
    if code == 2 and worker == -1 and i >= 0:
        return f"common-{i}"
    raise ValueError(f"the last bias {values} names no origin")


def tensor_digests(state) -> dict[str, str]:
    """Each tensor's sha256 (hex) over its raw bytes, as the registry digests them."""
    return {
        key: hashlib.sha256(
            t.detach().contiguous().reshape(-1).view(-1).numpy().view("u1")
        ).hexdigest()
        for key, t in state.items()
    }


def same_weights(got, origin: str) -> str | None:
    """None if ``got`` is bit for bit the state dict ``origin``; else what differs."""
    import torch

    want = weights(origin)
    if list(got) != list(want):
        return f"keys {list(got)} != {list(want)}"
    for key in want:
        a, b = got[key], want[key]
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            return f"{key} differs from {origin}'s"
    return None


class SoakFailure(AssertionError):
    """The registry answered something wrong (wrong bytes, a version given twice, ...)."""


# -- a worker ----------------------------------------------------------------------------


class Worker:
    """One process's loop: draw an operation, do it, write down what happened."""

    def __init__(self, reg, index: int, rng: random.Random, out):
        self.reg, self.index, self.rng, self.out = reg, index, rng, out
        self.next_i = 0
        self.mine: list[tuple[str, str]] = []  # (name, origin) pushed by this worker
        self.latest: dict[str, str] = {}  # origin -> the ref its last creating push made
        self.ok: Counter[str] = Counter()
        self.errors: dict[str, Counter[str]] = {op: Counter() for op in MIX}
        self.latency: dict[str, list[float]] = {op: [] for op in MIX}
        self.examples: dict[str, str] = {}  # "op kind" -> the first such error's message
        self.tags = 0

    def write(self, **record) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    @contextmanager
    def clock(self, op: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.latency[op].append(time.perf_counter() - started)

    def step(self) -> None:
        op = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        try:
            done = getattr(self, "op_" + op.replace("-", "_"))()
        except Exception as error:  # noqa: BLE001 - every error is counted or reported
            kind = None if isinstance(error, SoakFailure) else classify(op, error)
            if kind is None:
                self.errors[op]["unexpected"] += 1
                self.write(
                    kind="unexpected",
                    op=op,
                    error=f"{type(error).__name__}: {error}",
                    traceback=traceback.format_exc(),
                )
            else:
                self.errors[op][kind] += 1
                self.examples.setdefault(f"{op} {kind}", f"{type(error).__name__}: {error}")
            return
        if done is not False:
            self.ok[op] += 1

    # -- picking what to work on ----------------------------------------------------

    def listed(self, name: str | None = None):
        """Up to LIST_LIMIT versions of a name (the newest or the oldest)."""
        name = name or self.rng.choice((*NAMES, COMMON))
        return self.reg.list(name, limit=LIST_LIMIT, reverse=self.rng.random() < 0.5)

    def pick(self, name: str | None = None):
        versions = self.listed(name)
        return self.rng.choice(versions) if versions else None

    # -- pushes -----------------------------------------------------------------------

    def _push(self, op: str, name: str, origin: str, parent: str | None = None):
        state = weights(origin)
        with self.clock(op):
            mv = self.reg.push(
                state,
                name,
                arch=ARCH,
                arch_kwargs={"hidden": HIDDEN},
                tags={"origin": origin},
                parent=parent,
            )
        self.write(
            kind="push",
            op=op,
            ref=mv.ref,
            name=mv.name,
            version=mv.version,
            created=mv.pushed.created,
            digest=mv.digest,
            origin=origin,
            sha256=tensor_digests(state),
            parent=parent if mv.pushed.created else None,
        )
        if mv.name != name:
            raise SoakFailure(f"pushed to {name}, got {mv.ref}")
        if mv.pushed.created and mv.parent != parent:
            raise SoakFailure(f"{mv.ref} pushed with parent {parent} has parent {mv.parent}")
        if mv.pushed.healed:
            raise SoakFailure(
                f"{mv.ref}: the push healed {mv.pushed.healed} tensors, none were damaged"
            )
        return mv

    def _new(self, op: str, parent: str | None = None, name: str | None = None) -> None:
        name = name or self.rng.choice(NAMES)
        origin = f"w{self.index}-{self.next_i}"
        self.next_i += 1
        mv = self._push(op, name, origin, parent)
        if not mv.pushed.created:
            raise SoakFailure(f"new weights {origin} found stored as {mv.ref}")
        self.mine.append((name, origin))
        self.latest[origin] = mv.ref

    def op_push(self) -> None:
        self._new("push")

    def op_push_child(self) -> bool | None:
        parent = self.pick(self.rng.choice(NAMES))
        if parent is None:
            return False
        self._new("push-child", parent=parent.ref, name=parent.name)
        return None

    def op_push_again(self) -> bool | None:
        if not self.mine:
            return False
        name, origin = self.rng.choice(self.mine)
        mv = self._push("push-again", name, origin)
        if mv.pushed.created:
            self.latest[origin] = mv.ref
        elif mv.ref != self.latest[origin]:
            raise SoakFailure(
                f"{origin} pushed again is {mv.ref}, but the version holding it is "
                f"{self.latest[origin]}"
            )
        return None

    def op_push_common(self) -> None:
        self._push("push-common", COMMON, f"common-{self.rng.randrange(COMMON_WEIGHTS)}")

    # -- labels -----------------------------------------------------------------------

    def op_tag(self) -> bool | None:
        version = self.pick()
        if version is None:
            return False
        self.tags += 1
        value = f"w{self.index}-{self.tags}"
        with self.clock("tag"):
            mv = self.reg.tag(version.ref, {"touched": value})
        if mv.ref != version.ref or mv.tags.get("touched") != value:
            raise SoakFailure(f"tag {version.ref} touched={value} gave {mv.ref} {mv.tags}")
        return None

    def op_untag(self) -> bool | None:
        tagged = [v for v in self.listed() if "touched" in v.tags]
        if not tagged:
            return False
        version = self.rng.choice(tagged)
        with self.clock("untag"):
            mv = self.reg.untag(version.ref, ["touched"])
        if mv.ref != version.ref or "touched" in mv.tags:
            raise SoakFailure(f"untag {version.ref} touched gave {mv.ref} {mv.tags}")
        return None

    def op_alias(self) -> bool | None:
        version = self.pick()
        if version is None:
            return False
        alias = self.rng.choice(ALIASES)
        with self.clock("alias"):
            mv = self.reg.alias(version.ref, alias)
        if mv.ref != version.ref or alias not in mv.aliases:
            raise SoakFailure(f"alias {version.ref} {alias} gave {mv.ref} {mv.aliases}")
        return None

    def op_unalias(self) -> None:
        ref = f"{self.rng.choice((*NAMES, COMMON))}:{self.rng.choice(ALIASES)}"
        with self.clock("unalias"):
            mv = self.reg.unalias(ref)
        if ref.rsplit(":", 1)[1] in mv.aliases:
            raise SoakFailure(f"unalias {ref}: {mv.ref} still has it")

    # -- reads ------------------------------------------------------------------------

    def op_load(self) -> bool | None:
        """A listed version by number (its weights must be its origin's), or an alias
        (whatever it points at, the weights must be what their last bias says)."""
        if self.rng.random() < 0.3:
            ref, wanted = f"{self.rng.choice((*NAMES, COMMON))}:{self.rng.choice(ALIASES)}", None
        else:
            version = self.pick()
            if version is None:
                return False
            ref, wanted = version.ref, version.tags.get("origin")
            if wanted is None:
                raise SoakFailure(f"{ref} lost its origin tag: {version.tags}")
        with self.clock("load"):
            model = self.reg.load(ref)
        state = model.state_dict()
        try:
            origin = origin_of(state)
        except ValueError as exc:
            raise SoakFailure(f"load {ref}: {exc}") from None
        if wanted is not None and origin != wanted:
            raise SoakFailure(f"load {ref} gave the weights of {origin}, not {wanted}")
        differs = same_weights(state, origin)
        if differs:
            raise SoakFailure(f"load {ref}: {differs}")
        return None

    def op_verify(self) -> None:
        """Mostly one listed version's tensors; a quarter of the time the whole store
        (which reads every pack: on a bucket, seconds once there are hundreds)."""
        version = self.pick() if self.rng.random() < 0.75 else None
        with self.clock("verify"):
            report = self.reg.verify(version.ref if version else None)
        if not report.ok:
            raise SoakFailure(f"verify: corrupt {report.corrupt}, missing {report.missing}")

    # -- removal and gc --------------------------------------------------------------

    def op_remove(self) -> bool | None:
        version = self.pick()
        if version is None:
            return False
        with self.clock("remove"):
            mv = self.reg.remove(version.ref, force=self.rng.random() < 0.5)
        self.write(kind="remove", ref=mv.ref)
        if mv.ref != version.ref:
            raise SoakFailure(f"remove {version.ref} removed {mv.ref}")
        return None

    def op_gc(self) -> None:
        with self.clock("gc"):
            self.reg.gc()

    def summary(self) -> dict:
        return {
            "kind": "summary",
            "ok": dict(self.ok),
            "errors": {op: dict(kinds) for op, kinds in self.errors.items() if kinds},
            "latency": self.latency,
            "examples": self.examples,
        }


def _worker_main(folder: Path, index: int, seed: int) -> None:
    """A worker process: get ready, wait for the go file, work until its deadline."""
    from registry import Registry

    weights("w0-0")  # torch imported and warm before the start
    with Registry() as reg, open(folder / f"worker-{index}.jsonl", "w") as out:
        reg.list(COMMON)  # the catalogue connection made
        (folder / f"ready-{index}").touch()
        go = folder / "go"
        while not go.exists():
            time.sleep(0.01)
        deadline = float(go.read_text())
        worker = Worker(reg, index, random.Random(seed * 1000 + index), out)
        started = time.time()
        while time.time() < deadline:
            worker.step()
        worker.write(**worker.summary(), started=started, ended=time.time())


# -- running a soak ------------------------------------------------------------------


@dataclass
class OpStats:
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latency: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.ok + sum(self.errors.values())


@dataclass
class Soak:
    """What the workers did, from their files."""

    seed: int
    workers: int
    seconds: float  # from the start to the last worker's end
    ops: dict[str, OpStats]
    pushes: list[dict]  # every push's record (created or found)
    removals: list[dict]
    unexpected: list[dict]  # errors that are no legitimate outcome, with tracebacks
    ended: float  # time.time() when the last worker stopped
    examples: dict[str, str] = field(default_factory=dict)  # "op kind" -> a message

    @property
    def errors(self) -> Counter[str]:
        """Legitimate errors by kind, all operations together."""
        total: Counter[str] = Counter()
        for stats in self.ops.values():
            total.update({k: n for k, n in stats.errors.items() if k != "unexpected"})
        return total

    @property
    def operations(self) -> int:
        return sum(s.total for s in self.ops.values())


def run(folder: Path, *, seconds: float, workers: int = DEFAULT_WORKERS, seed: int = 0) -> Soak:
    """Run ``workers`` worker processes on the registry the environment names
    (REGISTRY_* and AWS_* variables) for ``seconds`` from the moment all are ready;
    their files go in ``folder``. Creates the catalogue's schema first. Raises
    AssertionError if a worker does not start or exits with an error (its stderr)."""
    from registry import Registry

    folder.mkdir(parents=True, exist_ok=True)
    with Registry() as reg:
        reg.upgrade_database()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    }
    procs = []
    for index in range(workers):
        with open(folder / f"worker-{index}.err", "w") as err:
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--worker", str(folder), str(index), str(seed)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            )
    try:
        _wait_ready(folder, procs, timeout=300)
        start = time.time()
        go = folder / "go.tmp"
        go.write_text(repr(start + seconds))
        go.rename(folder / "go")
        for proc in procs:
            proc.wait(timeout=seconds + 600)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = [
        f"worker {i} exited with {p.returncode}:\n{(folder / f'worker-{i}.err').read_text()}"
        for i, p in enumerate(procs)
        if p.returncode != 0
    ]
    assert not failed, "\n".join(failed)
    return collect(folder, workers, seed, start)


def _wait_ready(folder: Path, procs: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all((folder / f"ready-{i}").exists() for i in range(len(procs))):
        for i, proc in enumerate(procs):
            if proc.poll() is not None:
                raise AssertionError(
                    f"worker {i} exited before starting ({proc.returncode}):\n"
                    + (folder / f"worker-{i}.err").read_text()
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"the workers were not ready after {timeout} s")
        time.sleep(0.05)


def collect(folder: Path, workers: int, seed: int, start: float) -> Soak:
    ops = {op: OpStats() for op in MIX}
    pushes, removals, unexpected, ended, examples = [], [], [], start, {}
    for index in range(workers):
        summaries = 0
        for line in (folder / f"worker-{index}.jsonl").read_text().splitlines():
            record = json.loads(line)
            record["worker"] = index
            kind = record.pop("kind")
            if kind == "push":
                pushes.append(record)
            elif kind == "remove":
                removals.append(record)
            elif kind == "unexpected":
                unexpected.append(record)
            elif kind == "summary":
                summaries += 1
                ended = max(ended, record["ended"])
                for op, n in record["ok"].items():
                    ops[op].ok += n
                for op, kinds in record["errors"].items():
                    ops[op].errors.update(kinds)
                for op, seconds in record["latency"].items():
                    ops[op].latency += seconds
                examples = {**record["examples"], **examples}
        assert summaries == 1, f"worker {index} wrote {summaries} summaries"
    return Soak(seed, workers, ended - start, ops, pushes, removals, unexpected, ended, examples)


# -- the final checks ----------------------------------------------------------------


def final_gc(reg):
    """gc as a user runs it, with its default grace: nothing writes any more, and every
    writer's process has ended, so every file no version names goes (a push's pack is
    kept only while its writer runs; see Registry.gc)."""
    return reg.gc()


def registry_command() -> str:
    """The installed `registry` console script beside this Python."""
    found = shutil.which("registry", path=str(Path(sys.executable).parent)) or shutil.which(
        "registry"
    )
    assert found, "the `registry` command is not installed"
    return found


def check(reg, soak: Soak) -> list[str]:
    """What is wrong with the registry after ``soak`` (empty: nothing). ``reg`` is the
    registry the workers used, opened in this process; nobody else may write to it."""
    problems: list[str] = []
    created = [p for p in soak.pushes if p["created"]]
    by_ref = {p["ref"]: p for p in created}
    problems += [
        f"{ref} was created {n} times"
        for ref, n in Counter(p["ref"] for p in created).items()
        if n > 1
    ]
    removed = Counter(r["ref"] for r in soak.removals)
    problems += [f"{ref} was removed {n} times" for ref, n in removed.items() if n > 1]
    problems += [f"{ref} was removed but never created" for ref in removed if ref not in by_ref]

    # Version numbers: 1..N per name, each given once; the history says the same.
    for name in sorted({p["name"] for p in created}):
        numbers = sorted(p["version"] for p in created if p["name"] == name)
        lost = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
        if lost:
            problems.append(f"{name}: numbers {lost} were never given to a push")
        events = reg.log(name)
        logged = sorted(e.version for e in events if e.kind == "push")
        if logged != numbers:
            problems.append(f"{name}: the history's pushes {logged} != the pushes made {numbers}")
        gone = sorted(int(r.rsplit(":", 1)[1]) for r in removed if r.rsplit(":", 1)[0] == name)
        logged = sorted(e.version for e in events if e.kind == "remove")
        if logged != gone:
            problems.append(f"{name}: the history's removals {logged} != the removals made {gone}")

    # The survivors: exactly what was pushed and not removed, one version per digest.
    listed = reg.list(limit=None)
    alive = {v.ref for v in listed}
    wanted = set(by_ref) - set(removed)
    if alive != wanted:
        problems.append(
            f"versions there but not expected: {sorted(alive - wanted)}; "
            f"expected but not there: {sorted(wanted - alive)}"
        )
    digests = Counter((v.name, v.digest) for v in listed)
    problems += [
        f"{name} holds {n} versions of {d[:12]}" for (name, d), n in digests.items() if n > 1
    ]
    for version in listed:
        for alias in version.aliases:
            target = reg.get(f"{version.name}:{alias}").ref
            if target != version.ref:
                problems.append(f"{version.ref} lists alias {alias}, which names {target}")

    # A push that found its weights stored returned a version holding exactly them.
    for push in soak.pushes:
        if push["created"]:
            continue
        made = by_ref.get(push["ref"])
        if made is None:
            problems.append(f"a push of {push['origin']} found {push['ref']}, never created")
        elif made["sha256"] != push["sha256"] or made["digest"] != push["digest"]:
            problems.append(f"a push of {push['origin']} found {push['ref']} ({made['origin']})")

    # The store, as the command says; then gc with no grace leaves exactly what is named.
    out = subprocess.run(
        [registry_command(), "verify", "--json"], capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0 or not json.loads(out.stdout or "{}").get("ok"):
        problems.append(
            f"registry verify ({out.returncode}): {out.stdout[-2000:]}{out.stderr[-2000:]}"
        )
    # An object store's times are whole seconds: let the last file be a second old.
    time.sleep(max(0.0, soak.ended + 2.0 - time.time()))
    try:
        final_gc(reg)
    except Exception as error:  # noqa: BLE001 - reported with the others
        problems.append(f"gc with no grace: {type(error).__name__}: {error}")
    with reg._gateway.read() as catalog:  # the catalogue's pack table: no public reader
        named = set(catalog.packs())
    stored = reg._store.list()
    strays = sorted(f.key for f in stored if f.pack_id is None or f.pack_id not in named)
    lacking = sorted(named - {f.pack_id for f in stored})
    if strays or lacking:
        problems.append(
            f"after gc with no grace: files not named {strays}; packs named but not stored {lacking}"
        )
    dry = reg.gc(dry_run=True)
    if dry.bytes_freed or dry.blobs_removed or dry.packs_removed or dry.packs_rewritten:
        problems.append(f"a gc right after gc would still free something: {dry}")

    # Every survivor, after gc's rewrites: bit for bit what its pusher sent, as a module.
    for ref in sorted(alive & wanted):
        try:
            problems += _survivor_problems(reg, by_ref[ref], alive)
        except Exception as error:  # noqa: BLE001 - reported with the others
            problems.append(f"{ref}: {type(error).__name__}: {error}")
    report = reg.verify()
    if not report.ok:
        problems.append(f"verify after gc: corrupt {report.corrupt}, missing {report.missing}")
    return problems


def _survivor_problems(reg, push: dict, alive: set[str]) -> list[str]:
    """What differs between a surviving version and its push's record."""
    problems, ref = [], push["ref"]
    record = reg.get(ref)
    if (record.digest, record.tags.get("origin")) != (push["digest"], push["origin"]):
        problems.append(
            f"{ref}: digest {record.digest[:12]}, origin {record.tags.get('origin')}; "
            f"pushed {push['digest'][:12]}, {push['origin']}"
        )
    if {t.name: t.digest for t in record.tensors} != push["sha256"]:
        problems.append(f"{ref}: the catalogue's tensor table is not what was pushed")
    state = reg.load(ref, verify="sha256").state_dict()
    if tensor_digests(state) != push["sha256"]:
        problems.append(f"{ref}: the loaded module's tensors are not what was pushed")
    # Its parent is the one it was pushed with while that one is there, else none.
    parent = push["parent"] if push["parent"] in alive else None
    if record.parent != parent:
        problems.append(f"{ref}: parent {record.parent}, pushed with {push['parent']}")
    return problems


# -- the report ----------------------------------------------------------------------


def report(soak: Soak, label: str) -> str:
    """The per-operation table: counts, legitimate errors by kind, ops/s, median latency."""
    lines = [
        f"soak [{label}]: {soak.workers} workers, {soak.seconds:.1f} s, seed {soak.seed}: "
        f"{soak.operations} operations, {soak.operations / soak.seconds:.1f} ops/s, "
        f"{sum(soak.errors.values())} legitimate errors, {len(soak.unexpected)} unexpected",
        f"  {'OP':<12} {'OK':>6} {'ERRORS':>7} {'OPS/S':>7} {'MEDIAN MS':>10} {'MAX MS':>8}"
        "  ERRORS BY KIND",
    ]
    for op, stats in soak.ops.items():
        errors = sum(stats.errors.values())
        median = f"{statistics.median(stats.latency) * 1000:.1f}" if stats.latency else "-"
        most = f"{max(stats.latency) * 1000:.0f}" if stats.latency else "-"
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(stats.errors.items()))
        lines.append(
            f"  {op:<12} {stats.ok:>6} {errors:>7} {stats.total / soak.seconds:>7.2f} "
            f"{median:>10} {most:>8}  {kinds}"
        )
    created = sum(p["created"] for p in soak.pushes)
    lines.append(
        f"  versions created {created}, found already stored {len(soak.pushes) - created}, "
        f"removed {len(soak.removals)}"
    )
    lines += [f"  e.g. {key}: {message[:160]}" for key, message in sorted(soak.examples.items())]
    return "\n".join(lines)


def seconds_from_env() -> float:
    """REGISTRY_SOAK_SECONDS, else DEFAULT_SECONDS."""
    return float(os.environ.get("REGISTRY_SOAK_SECONDS") or DEFAULT_SECONDS)


# -- the benchmark -------------------------------------------------------------------


@contextmanager
def backend_env(backend: str, work: Path) -> Iterator[tuple[str, dict[str, str]] | None]:
    """(label, environment) of a fresh registry on ``backend``; None if it cannot be had."""
    base = {"REGISTRY_HOME": str(work / "home"), "REGISTRY_CACHE_DIR": str(work / "cache")}
    if backend == "local":
        yield (
            "local: SQLite + folder",
            {**base, "REGISTRY_DATABASE_URL": "", "REGISTRY_STORAGE_URL": ""},
        )
        return
    sys.path.insert(0, str(TESTS))
    from servers import PostgresServer, SeaweedServer

    missing = SeaweedServer.missing()
    if missing:
        print(f"# team backend skipped: {missing}")
        yield None
        return
    stops: list[Callable[[], None]] = []
    try:
        seaweed = SeaweedServer().start()
        stops.append(seaweed.stop)
        database, catalogue = "", "SQLite"
        if PostgresServer.missing() is None:
            postgres = PostgresServer().start()
            stops.append(postgres.stop)
            database, catalogue = postgres.new_database(), "PostgreSQL"
        yield (
            f"team: {catalogue} + SeaweedFS",
            {
                **base,
                **seaweed.env(),
                "REGISTRY_DATABASE_URL": database,
                "REGISTRY_STORAGE_URL": f"s3://{seaweed.new_bucket()}/soak/",
            },
        )
    finally:
        for stop in reversed(stops):
            stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="per backend (default: REGISTRY_SOAK_SECONDS, else 30)",
    )
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--backend", choices=("local", "team", "both"), default="both")
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    parser.add_argument(
        "--dir", default=None, help="where the temporary folder goes (default /tmp)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(TESTS))  # archs_helper: the workload's architecture
    seconds = args.seconds if args.seconds is not None else seconds_from_env()
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    failed = False
    for backend in ("local", "team") if args.backend == "both" else (args.backend,):
        work = Path(tempfile.mkdtemp(prefix=f"registry-soak-{backend}-", dir=args.dir))
        try:
            with backend_env(backend, work) as site:
                if site is None:
                    continue
                label, env = site
                os.environ.update(env)  # every backend sets the same variables
                from registry import Registry

                print(f"# soak on {label}: {args.workers} workers, {seconds:.0f} s ...", flush=True)
                soak = run(work / "soak", seconds=seconds, workers=args.workers, seed=seed)
                print(report(soak, label), flush=True)
                with Registry() as reg:
                    problems = check(reg, soak)
            for item in soak.unexpected:
                print(f"UNEXPECTED in worker {item['worker']} ({item['op']}): {item['traceback']}")
            for problem in problems:
                print(f"PROBLEM: {problem}")
            print(
                f"# {label}: {'FAILED' if soak.unexpected or problems else 'all checks passed'}",
                flush=True,
            )
            failed |= bool(soak.unexpected or problems)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        sys.path.insert(0, str(TESTS))
        _worker_main(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(main())
