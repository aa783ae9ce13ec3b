"""Side-by-side benchmark: the registry against the plain torch / MLflow recipes.

    python benchmarks/run.py [--repeat 7] [--quick] [--only NAME ...] [--dir DIR]

Each comparison runs both sides in this process (peak memory: in fresh child
processes), alternating them for --repeat repetitions, and prints the medians, the
ratio registry / baseline, the target and whether it is met. Writes are durable on
both sides (torch.save is followed by fsync); reads are warm (files in the page
cache) on both sides. Untimed per-repetition setup and cleanup (fresh registries,
deleting written files, gc) stay outside the timings. THP_MEM_ALLOC_ENABLE is
reported, never changed. Everything is written under a temporary folder in --dir
(default /tmp), removed at the end.

Comparisons (names for --only):
  push           push resnet50 to an empty registry vs torch.save + fsync      [<=1.1x]
  push-1gb       the same for a ~1 GB state dict (vgg19, 26955 classes)        [<=1.1x]
  load           load("bench:1") vs get_model + torch.load + load_state_dict  [<=0.5x]
  load-mlflow    load("bench:1") vs mlflow.pytorch.load_model                 [<=1.0x]
  load-sd-1gb    load_state_dict of the 1 GB version vs torch.load            [<=1.0x]
  rss-1gb        peak RSS of those two loads, each in a fresh process  [< 1.3 GB extra]
  finetune       push with only fc.* changed: bytes written, time vs full push
  cli            registry --help / list / show / tag on a 1,000-version catalogue [<0.3 s]
  s3-push        push resnet50 to s3://bucket/pN/ vs torch.save + upload_file   [<=1.1x]
  s3-push-1gb    the same for the ~1 GB state dict                              [<=1.1x]
  s3-load        load("bench:1") from the store, cache emptied per rep, vs
                 download_file + torch.load + get_model + load_state_dict       [<=1.0x]
                 and again with the cache filled vs load from a local registry  [<=1.2x]
  s3-finetune    fine-tune push to the store: bytes sent / changed bytes        [<=1.05x]
                 and its time vs the same push to a local registry       (information)

The s3-* comparisons start a SeaweedFS server (S3 on 127.0.0.1, tests/servers.py) for
each comparison and stop it after; the registry side's catalogue is PostgreSQL on
loopback (a database per registry) when tests/servers.py can start one, else SQLite
in the temporary folder: the object store is what is measured. Both sides' boto3
clients (the registry's own; boto3's defaults for the baseline) are made untimed: per
repetition for pushes (connections opened inside the timings on both sides), once for
loads (connections kept on both sides). A push or
upload is done when the store has answered (the by-hand .pth is a temporary local file:
not fsynced). They run at most S3_REPEAT repetitions per side (s3-push-1gb:
S3_REPEAT_1GB). benchmarks/s3_phases.py splits an s3 push or load into its phases.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
import torchvision

from registry import Registry

GB = 1e9
MB = 1e6
BIG_CLASSES = 26955  # vgg19 with this many classes holds ~1.0e9 bytes of float32
QUICK_REPEAT = 3
S3_REPEAT = 5  # the object-store comparisons run at most this many repetitions per side
S3_REPEAT_1GB = 3  # ... and s3-push-1gb at most this many (~11 s per side each here)
TESTS = Path(__file__).resolve().parent.parent / "tests"  # servers.py: SeaweedFS, PostgreSQL


# -- measuring -----------------------------------------------------------------------


def timed_call(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds fn takes, and its result."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def timed(fn: Callable[[], object]) -> float:
    """Seconds fn takes; its result is freed after the clock stops."""
    return timed_call(fn)[0]


def alternate(a: Callable[[], float], b: Callable[[], float], repeat: int) -> tuple[list, list]:
    """Run a and b in turn, repeat times each; both return their own seconds."""
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(a())
        tb.append(b())
    return ta, tb


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def nbytes_of(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def unique_nbytes(state: dict[str, torch.Tensor]) -> int:
    """Bytes of the distinct tensor contents: what a deduplicating store has to write."""
    seen = set()
    for t in state.values():
        raw = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        seen.add((raw.nbytes, hashlib.sha256(raw).digest()))
    return sum(n for n, _ in seen)


def same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> bool:
    return list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)


def checked(row: Row, ok: bool, problem: str) -> Row:
    """The row, its verdict replaced by the problem if an (untimed) sanity check failed."""
    if not ok:
        row.met = f"NO: {problem}"
    return row


# -- the table -----------------------------------------------------------------------


@dataclass
class Row:
    label: str
    ours: str = "-"
    base: str = "-"
    ratio: str = "-"
    target: str = "-"
    met: str = "-"


def secs(values: list[float] | float) -> str:
    value = statistics.median(values) if isinstance(values, list) else values
    return f"{value:.3f} s"


def ratio_row(label: str, ours: float, base: float, limit: float, unit=secs) -> Row:
    """A row comparing two medians (or two numbers) against a target ratio <= limit."""
    ratio = ours / base
    return Row(
        label, unit(ours), unit(base), f"{ratio:.2f}x", f"<={limit}x", verdict(ratio <= limit)
    )


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def size(n: float) -> str:
    return f"{n / GB:.3f} GB" if n >= 0.1 * GB else f"{n / MB:.2f} MB"


def print_table(rows: list[Row]) -> None:
    header = Row("comparison", "registry", "baseline", "ratio", "target", "met")
    widths = [max(len(getattr(r, f)) for r in [header, *rows]) for f in Row.__dataclass_fields__]
    for row in [header, *rows]:
        cells = [getattr(row, f) for f in Row.__dataclass_fields__]
        line = cells[0].ljust(widths[0]) + "".join(
            "  " + c.rjust(w) for c, w in zip(cells[1:5], widths[1:5])
        )
        print(f"{line}  {cells[5]}")


# -- shared inputs, built on first use -------------------------------------------------


class Bench:
    def __init__(self, work: Path, repeat: int):
        self.work = work
        self.repeat = repeat
        self.full_push_times: list[float] | None = None  # from `push`, reused by `finetune`
        self._registries: list[Registry] = []
        self._counter = 0
        self._postgres = None  # servers.PostgresServer, started on first use

    def fresh_dir(self, prefix: str) -> Path:
        self._counter += 1
        return self.work / f"{prefix}-{self._counter}"

    def registry(self, home: Path) -> Registry:
        """A registry with its catalogue created (so timings exclude schema setup; reading
        an empty registry no longer creates it)."""
        reg = Registry(home=home)
        reg.upgrade_database()
        self._registries.append(reg)
        return reg

    def close(self) -> None:
        for reg in self._registries:
            reg.close()
        if self._postgres is not None:
            self._postgres.stop()

    def s3_repeat(self, most: int = S3_REPEAT) -> int:
        return min(self.repeat, most)

    @cached_property
    def postgres(self):
        """A PostgreSQL server for the s3-* catalogues (tests/servers.py), or None if
        this machine cannot start one (then they use SQLite)."""
        PostgresServer = test_servers().PostgresServer
        if PostgresServer.missing() is not None:
            return None
        self._postgres = PostgresServer().start()
        version = self._postgres.execute("SHOW server_version")[0][0]
        print(
            f"# catalogue of the s3-* registries: PostgreSQL {version} on 127.0.0.1 "
            f"(started in {self._postgres.startup_seconds:.1f} s), a database per registry",
            flush=True,
        )
        return self._postgres

    def catalogue_url(self) -> str | None:
        """A new empty PostgreSQL database, or None: SQLite in the registry's home."""
        return self.postgres.new_database() if self.postgres is not None else None

    @cached_property
    def resnet50(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return torchvision.models.get_model("resnet50", weights=None).eval()

    @cached_property
    def small_state(self) -> dict[str, torch.Tensor]:
        return self.resnet50.state_dict()

    @cached_property
    def small_pth(self) -> Path:
        path = self.work / "resnet50.pth"
        torch.save(self.small_state, path)
        return path

    @cached_property
    def small_reg(self) -> Registry:
        reg = self.registry(self.work / "main")
        reg.push(self.small_state, "bench", arch="resnet50")
        return reg

    @cached_property
    def big_state(self) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = torchvision.models.get_model("vgg19", weights=None, num_classes=BIG_CLASSES)
        state = model.state_dict()
        print(
            f"# 1 GB case: vgg19(num_classes={BIG_CLASSES}) state dict = {nbytes_of(state):,} "
            f"bytes in {len(state)} tensors",
            flush=True,
        )
        return state

    @cached_property
    def big_pth(self) -> Path:
        path = self.work / "big.pth"
        torch.save(self.big_state, path)
        return path

    @cached_property
    def big_home(self) -> Path:
        home = self.work / "big"
        self.registry(home).push(
            self.big_state, "big", arch="vgg19", arch_kwargs={"num_classes": BIG_CLASSES}
        )
        return home


# -- comparisons: one function each, returning table rows ----------------------------


def push_vs_save(
    bench: Bench, state: dict, arch: str, kwargs: dict | None
) -> tuple[list[float], list[float], int]:
    """Durable push into a fresh empty registry vs torch.save + fsync; files deleted per rep.

    Also returns the fewest bytes a push wrote (it should write every byte).
    """
    written = []

    def push() -> float:
        home = bench.fresh_dir("push")
        reg = bench.registry(home)
        seconds, version = timed_call(
            lambda: reg.push(state, "bench", arch=arch, arch_kwargs=kwargs)
        )
        written.append(version.pushed.bytes_written)
        reg.close()
        shutil.rmtree(home)
        return seconds

    def save() -> float:
        path = bench.fresh_dir("save").with_suffix(".pth")

        def write() -> None:
            torch.save(state, path)
            fsync_file(path)

        seconds = timed(write)
        path.unlink()
        return seconds

    push(), save()  # warm-up: imports, code paths, allocator
    ours, base = alternate(push, save, bench.repeat)
    return ours, base, min(written)


def push_row(label: str, state: dict, ours: list, base: list, written: int) -> Row:
    row = ratio_row(label, statistics.median(ours), statistics.median(base), 1.1)
    unique = unique_nbytes(state)
    return checked(row, written >= unique, f"a push wrote {written:,} < {unique:,} bytes")


def compare_push(bench: Bench) -> list[Row]:
    state = bench.small_state
    ours, base, written = push_vs_save(bench, state, "resnet50", None)
    bench.full_push_times = ours
    label = f"push resnet50 ({size(nbytes_of(state))}) vs torch.save+fsync"
    return [push_row(label, state, ours, base, written)]


def compare_push_1gb(bench: Bench) -> list[Row]:
    state = bench.big_state
    ours, base, written = push_vs_save(bench, state, "vgg19", {"num_classes": BIG_CLASSES})
    label = f"push vgg19 ({size(nbytes_of(state))}) vs torch.save+fsync"
    return [push_row(label, state, ours, base, written)]


def compare_load(bench: Bench) -> list[Row]:
    reg, pth = bench.small_reg, bench.small_pth

    def recipe() -> torch.nn.Module:
        m = torchvision.models.get_model("resnet50", weights=None)
        m.load_state_dict(torch.load(pth, weights_only=True))
        return m.eval()

    def ours() -> float:
        return timed(lambda: reg.load("bench:1"))

    def base() -> float:
        return timed(recipe)

    ours(), base()  # warm-up: page cache, imports
    ok = same_weights(reg.load("bench:1").state_dict(), bench.small_state)
    a, b = alternate(ours, base, bench.repeat)
    label = "load resnet50 vs get_model+torch.load+load_state_dict"
    row = ratio_row(label, statistics.median(a), statistics.median(b), 0.5)
    return [checked(row, ok, "loaded weights differ from the pushed ones")]


def compare_load_mlflow(bench: Bench) -> list[Row]:
    label = "load resnet50 vs mlflow.pytorch.load_model"
    try:
        import logging

        import mlflow
        import mlflow.pytorch
    except ImportError as exc:
        return [Row(label, met=f"skipped ({exc}); enable: pip install '.[bench]'")]
    logging.getLogger("mlflow").setLevel(logging.ERROR)  # its pickle warning on every save
    # MLflow >= 3 saves "pt2" (torch.export, needs an input example) by default; the
    # classic whole-module pickle is serialization_format="pickle", and loading it needs
    # pickle deserialisation allowed: MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true (set here).
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    path = bench.work / "mlflow-resnet50"
    mlflow.pytorch.save_model(
        bench.resnet50,
        str(path),
        serialization_format="pickle",
        pip_requirements=["torch", "torchvision"],  # skips slow requirement inference only
    )
    uri = path.as_uri()
    reg = bench.small_reg

    def ours() -> float:
        return timed(lambda: reg.load("bench:1"))

    def base() -> float:
        return timed(lambda: mlflow.pytorch.load_model(uri))

    ours(), base()
    a, b = alternate(ours, base, bench.repeat)
    label = f"load resnet50 vs mlflow {mlflow.__version__} pytorch.load_model"
    return [ratio_row(label, statistics.median(a), statistics.median(b), 1.0)]


def compare_load_sd_1gb(bench: Bench) -> list[Row]:
    reg, pth = Registry(home=bench.big_home), bench.big_pth
    bench._registries.append(reg)

    def ours() -> float:
        return timed(lambda: reg.load_state_dict("big:1"))

    def base() -> float:
        return timed(lambda: torch.load(pth, weights_only=True))

    ours(), base()  # warm-up: both files in the page cache
    ok = same_weights(reg.load_state_dict("big:1"), bench.big_state)
    a, b = alternate(ours, base, bench.repeat)
    label = f"load_state_dict vgg19 ({size(nbytes_of(bench.big_state))}) vs torch.load"
    row = ratio_row(label, statistics.median(a), statistics.median(b), 1.0)
    return [checked(row, ok, "loaded weights differ from the pushed ones")]


# Runs in a fresh interpreter: resident memory before and at the peak of one load.
PEAK_CHILD = r"""
import json, sys
import torch
import registry
from registry import Registry
side, where = sys.argv[1], sys.argv[2]

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

baseline = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM (peak RSS) to the current RSS
if side == "registry":
    result = Registry(home=where).load_state_dict("big:1")
else:
    result = torch.load(where, weights_only=True)
peak = status("VmHWM")
print(json.dumps({"baseline": baseline, "peak": peak, "tensors": len(result)}))
"""


def peak_rss(side: str, where: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_CHILD, side, str(where)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_rss_1gb(bench: Bench) -> list[Row]:
    home, pth = bench.big_home, bench.big_pth
    ours, base = peak_rss("registry", home), peak_rss("torch.load", pth)
    ours_extra, base_extra = ours["peak"] - ours["baseline"], base["peak"] - base["baseline"]
    return [
        Row("peak RSS, load_state_dict 1 GB (fresh process):"),
        Row(
            "  RSS before load (torch+registry imported)",
            size(ours["baseline"]),
            size(base["baseline"]),
        ),
        Row("  peak RSS (VmHWM after clear_refs)", size(ours["peak"]), size(base["peak"])),
        Row(
            "  peak - before",
            size(ours_extra),
            size(base_extra),
            f"{ours_extra / base_extra:.2f}x",
            "< 1.3 GB",
            verdict(ours_extra < 1.3 * GB),
        ),
    ]


def finetuned(state: dict) -> dict:
    """state with new random fc.weight and fc.bias."""
    tuned = dict(state)
    tuned["fc.weight"] = torch.randn_like(state["fc.weight"])
    tuned["fc.bias"] = torch.randn_like(state["fc.bias"])
    return tuned


def finetune_push(reg: Registry, state: dict) -> tuple[float, int]:
    """Push state with new random fc.weight and fc.bias; (seconds, bytes written)."""
    tuned = finetuned(state)
    seconds, version = timed_call(lambda: reg.push(tuned, "ft", arch="resnet50"))
    return seconds, version.pushed.bytes_written


def compare_finetune(bench: Bench) -> list[Row]:
    state = bench.small_state
    reg = bench.registry(bench.fresh_dir("finetune"))
    reg.push(state, "ft", arch="resnet50")  # ft:1
    changed = state["fc.weight"].nbytes + state["fc.bias"].nbytes
    pushes = [finetune_push(reg, state) for _ in range(bench.repeat)]  # ft:2, ft:3, ...
    times, written = [t for t, _ in pushes], [w for _, w in pushes]
    again = reg.push(state, "ft", arch="resnet50")

    full = bench.full_push_times
    if full is None:  # `push` was not run: time full pushes here, the same way
        full, _, _ = push_vs_save(bench, state, "resnet50", None)
    bytes_row = ratio_row(
        "fine-tune push (fc.* new): bytes written vs changed", max(written), changed, 1.05, size
    )
    return [
        bytes_row,
        ratio_row(
            "fine-tune push time vs full push (resnet50)",
            statistics.median(times),
            statistics.median(full),
            0.2,
        ),
        Row(
            f"push identical weights again -> {again.ref}: bytes written",
            f"{again.pushed.bytes_written} B",
            target="= 0",
            met=verdict(again.pushed.bytes_written == 0 and not again.pushed.created),
        ),
    ]


def build_catalogue(home: Path, names: int = 10, versions: int = 100) -> float:
    """names x versions of squeezenet1_1, each version with its own classifier.1.bias."""
    start = time.perf_counter()
    torch.manual_seed(0)
    state = torchvision.models.get_model("squeezenet1_1", weights=None).state_dict()
    with Registry(home=home) as reg:
        for n in range(names):
            for v in range(versions):
                variant = dict(state)
                variant["classifier.1.bias"] = torch.full_like(
                    state["classifier.1.bias"], n * versions + v
                )
                reg.push(variant, f"model-{n}", arch="squeezenet1_1")
    return time.perf_counter() - start


def run_wall(cmd: list[str], env: dict) -> tuple[float, str | None]:
    """Wall seconds of a command, and its first error line if it failed."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return elapsed, (lines[-1] if lines else f"exit code {proc.returncode}")
    return elapsed, None


def compare_cli(bench: Bench) -> list[Row]:
    home = bench.work / "catalogue"
    built = build_catalogue(home)
    with Registry(home=home) as reg:
        count = len(reg.list())
    exe = str(Path(sys.executable).with_name("registry"))
    commands = {
        "registry --help": [exe, "--help"],
        "registry list": [exe, "list"],
        "registry show model-0:50": [exe, "show", "model-0:50"],
        "registry tag model-0:50 stage=bench": [exe, "tag", "model-0:50", "stage=bench"],
        "context: python -c pass": [sys.executable, "-c", "pass"],
        'context: python -c "import torch"': [sys.executable, "-c", "import torch"],
    }
    env = {**os.environ, "REGISTRY_HOME": str(home)}
    walls: dict[str, list[float]] = {label: [] for label in commands}
    errors: dict[str, str | None] = {}
    for label, cmd in commands.items():  # warm-up: page cache for the interpreter and modules
        errors[label] = run_wall(cmd, env)[1]
    for _ in range(bench.repeat):  # round robin, like the alternating pairs
        for label, cmd in commands.items():
            seconds, errors[label] = run_wall(cmd, env)
            walls[label].append(seconds)

    rows = [Row(f"catalogue of {count} versions built in {built:.1f} s; CLI wall time:")]
    for label in commands:
        median = statistics.median(walls[label])
        if label.startswith("context:"):
            rows.append(Row(f"  {label}", base=secs(median)))
        elif errors[label]:
            rows.append(
                Row(f"  {label}", secs(median), target="< 0.3 s", met=f"FAILED: {errors[label]}")
            )
        else:
            rows.append(
                Row(f"  {label}", secs(median), target="< 0.3 s", met=verdict(median < 0.3))
            )
    return rows


# -- object storage (SeaweedFS on loopback) ------------------------------------------


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """os.environ with ``values`` set (boto3 and the registry read them), then restored."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class S3Site:
    """One SeaweedFS server's bucket, its environment and a read cache folder, and
    registries on fresh prefixes of it."""

    def __init__(self, bench: Bench, server, bucket: str):
        self.bench, self.server, self.bucket = bench, server, bucket
        self.cache = bench.fresh_dir("s3-cache")
        self.catalogue = "SQLite" if bench.postgres is None else "PostgreSQL"
        self._prefixes = 0

    def registry(self) -> tuple[Registry, str]:
        """A registry on a new prefix with a new empty catalogue, its client made (so
        timings exclude schema setup and client creation, as the baseline's do)."""
        self._prefixes += 1
        prefix = f"p{self._prefixes}/"
        home = self.bench.fresh_dir("s3-home")
        reg = Registry(
            home=home,
            database_url=self.bench.catalogue_url(),
            storage_url=f"s3://{self.bucket}/{prefix}",
        )
        reg.upgrade_database()
        reg._store.client  # noqa: B018 - made now, untimed
        self.bench._registries.append(reg)
        return reg, prefix

    def client(self):
        """A boto3 client with boto3's defaults, from the environment (as a user's is)."""
        import boto3

        return boto3.session.Session().client("s3")

    def clear_cache(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under prefix (untimed clean-up between repetitions)."""
        client = self.server.client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
            if keys:
                client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})


def test_servers():
    """tests/servers.py (SeaweedServer, PostgresServer), imported from the tests folder."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import servers

    return servers


def seaweed_missing() -> str | None:
    try:
        return test_servers().SeaweedServer.missing()
    except ImportError as exc:
        return f"tests/servers.py: {exc}"


@contextmanager
def s3_site(bench: Bench, repeat: int) -> Iterator[S3Site]:
    """A SeaweedFS server started for one comparison, stopped after it (SIGTERM, then
    SIGKILL after SeaweedServer.STOP_GRACE_S), with the AWS_* environment set."""
    SeaweedServer = test_servers().SeaweedServer
    server = SeaweedServer().start()
    try:
        version = subprocess.run(
            [SeaweedServer.binary(), "version"], capture_output=True, text=True
        ).stdout.split()
        print(
            f"# object store: SeaweedFS {version[2] if len(version) > 2 else '?'}, S3 on "
            f"{server.endpoint} (started in {server.startup_seconds:.1f} s); {repeat} "
            "repetitions per side",
            flush=True,
        )
        bucket = server.new_bucket()
        with environ(server.env()):
            site = S3Site(bench, server, bucket)
            with environ({"REGISTRY_CACHE_DIR": str(site.cache)}):
                yield site
    finally:
        server.stop()


def s3_skipped(label: str) -> list[Row] | None:
    missing = seaweed_missing()
    if missing:
        return [Row(label, met=f"skipped ({missing}); enable: pip install '.[test]'")]
    return None


class SentBytes:
    """Request body bytes a boto3 client sends in PutObject and UploadPart requests
    (every attempt, as sent), counted by an event hook on the client."""

    def __init__(self, client):
        self.total = 0
        for operation in ("PutObject", "UploadPart"):
            client.meta.events.register(f"before-send.s3.{operation}", self.count)

    def count(self, request, **_kwargs) -> None:
        headers = request.headers
        length = headers.get("x-amz-decoded-content-length") or headers.get("Content-Length")
        if length is None:
            body = request.body
            length = len(body) if isinstance(body, (bytes, bytearray)) else 0
        self.total += int(length)


def s3_push_vs_upload(
    bench: Bench, site: S3Site, state: dict, arch: str, kwargs: dict | None, repeat: int
) -> tuple[list[float], list[float], list[int], list[int], bool]:
    """Push to a fresh prefix (fresh catalogue) vs torch.save + upload_file of a local file.

    Returns the times, the bytes each push sent and wrote (its report's bytes_written),
    and whether the warm-up push loads back (load_state_dict, cache emptied first) as
    the weights pushed.
    """
    sent: list[int] = []
    written: list[int] = []
    kept: list[tuple[Registry, str]] = []
    pth = bench.fresh_dir("s3-by-hand").with_suffix(".pth")

    def push() -> float:
        reg, prefix = site.registry()
        counter = SentBytes(reg._store.client)
        seconds, version = timed_call(
            lambda: reg.push(state, "bench", arch=arch, arch_kwargs=kwargs)
        )
        sent.append(counter.total)
        written.append(version.pushed.bytes_written)
        if not kept:
            kept.append((reg, prefix))  # the warm-up push: checked below, untimed
        else:
            reg.close()
            site.delete_prefix(prefix)
        return seconds

    def upload() -> float:
        client = site.client()
        key = f"by-hand/{bench.fresh_dir('s3-save').name}/model.pth"

        def write() -> None:
            torch.save(state, pth)
            client.upload_file(str(pth), site.bucket, key)

        seconds = timed(write)
        pth.unlink()
        client.delete_object(Bucket=site.bucket, Key=key)
        client.close()
        return seconds

    push(), upload()  # warm-up: imports, code paths, allocator, the server's volumes
    ours, base = alternate(push, upload, repeat)
    reg, prefix = kept[0]
    site.clear_cache()
    ok = same_weights(reg.load_state_dict("bench:1"), state)
    site.clear_cache()
    site.delete_prefix(prefix)
    return ours, base, sent, written, ok


def s3_push_rows(
    bench: Bench, name: str, state: dict, arch: str, kwargs: dict | None, repeat: int
) -> list[Row]:
    label = f"s3 push {name} ({size(nbytes_of(state))}) vs torch.save+upload_file"
    skipped = s3_skipped(label)
    if skipped:
        return skipped
    with s3_site(bench, repeat) as site:
        ours, base, sent, written, ok = s3_push_vs_upload(bench, site, state, arch, kwargs, repeat)
        label += f" [{site.catalogue} catalogue]"
    row = push_row(label, state, ours, base, min(sent))
    row = checked(row, sent == written, f"bytes sent {sent} != bytes_written {written}")
    return [checked(row, ok, "the pushed version loads back different weights")]


def compare_s3_push(bench: Bench) -> list[Row]:
    return s3_push_rows(bench, "resnet50", bench.small_state, "resnet50", None, bench.s3_repeat())


def compare_s3_push_1gb(bench: Bench) -> list[Row]:
    big = {"num_classes": BIG_CLASSES}
    return s3_push_rows(
        bench, "vgg19", bench.big_state, "vgg19", big, bench.s3_repeat(S3_REPEAT_1GB)
    )


def compare_s3_load(bench: Bench) -> list[Row]:
    label = "s3 load resnet50 (cache empty) vs download_file+get_model+torch.load+load_state_dict"
    skipped = s3_skipped(label)
    if skipped:
        return skipped
    local = bench.small_reg
    with s3_site(bench, bench.s3_repeat()) as site:
        reg, _ = site.registry()
        reg.push(bench.small_state, "bench", arch="resnet50")
        by_hand = site.client()
        key = "by-hand/resnet50.pth"
        by_hand.upload_file(str(bench.small_pth), site.bucket, key)
        fetched = bench.fresh_dir("s3-download").with_suffix(".pth")

        def recipe() -> torch.nn.Module:
            by_hand.download_file(site.bucket, key, str(fetched))
            m = torchvision.models.get_model("resnet50", weights=None)
            m.load_state_dict(torch.load(fetched, weights_only=True))
            return m.eval()

        def cold() -> float:
            site.clear_cache()
            return timed(lambda: reg.load("bench:1"))

        def base() -> float:
            seconds = timed(recipe)
            fetched.unlink()
            return seconds

        def warm() -> float:
            return timed(lambda: reg.load("bench:1"))

        def local_load() -> float:
            return timed(lambda: local.load("bench:1"))

        cold(), base()  # warm-up: imports, code paths, connections
        ok_cold = same_weights(reg.load("bench:1").state_dict(), bench.small_state)
        ok_base = same_weights(recipe().state_dict(), bench.small_state)
        fetched.unlink()
        a, b = alternate(cold, base, bench.s3_repeat())

        warm(), local_load()  # the cache is filled by the last cold load
        ok_warm = same_weights(reg.load("bench:1").state_dict(), bench.small_state)
        c, d = alternate(warm, local_load, bench.s3_repeat())
        catalogue = site.catalogue
    cold_row = ratio_row(
        f"{label} [{catalogue} catalogue]", statistics.median(a), statistics.median(b), 1.0
    )
    warm_row = ratio_row(
        f"s3 load resnet50 (cache filled) vs load from a local registry [{catalogue} vs SQLite]",
        statistics.median(c),
        statistics.median(d),
        1.2,
    )
    return [
        checked(cold_row, ok_cold and ok_base, "loaded weights differ from the pushed ones"),
        checked(warm_row, ok_warm, "loaded weights differ from the pushed ones"),
    ]


def compare_s3_finetune(bench: Bench) -> list[Row]:
    label = "s3 fine-tune push (fc.* new): bytes sent vs changed"
    skipped = s3_skipped(label)
    if skipped:
        return skipped
    state = bench.small_state
    changed = state["fc.weight"].nbytes + state["fc.bias"].nbytes
    local = bench.registry(bench.fresh_dir("finetune"))
    local.push(state, "ft", arch="resnet50")  # ft:1
    with s3_site(bench, bench.s3_repeat()) as site:
        reg, _ = site.registry()
        reg.push(state, "ft", arch="resnet50")  # ft:1
        counter = SentBytes(reg._store.client)
        sent: list[int] = []
        written: list[int] = []
        last: list = []  # (tuned state, its version) of the latest fine-tune

        def remote() -> float:
            tuned = finetuned(state)
            before = counter.total
            seconds, version = timed_call(lambda: reg.push(tuned, "ft", arch="resnet50"))
            sent.append(counter.total - before)
            written.append(version.pushed.bytes_written)
            last[:] = [tuned, version]
            return seconds

        def here() -> float:
            return finetune_push(local, state)[0]

        remote(), here()  # warm-up
        a, b = alternate(remote, here, bench.s3_repeat())
        tuned, version = last  # the latest fine-tune, loaded untimed from an empty cache
        site.clear_cache()
        ok = same_weights(reg.load_state_dict(version.ref), tuned)
        catalogue = site.catalogue
    bytes_row = ratio_row(f"{label} [{catalogue} catalogue]", max(sent), changed, 1.05, size)
    ours, base = statistics.median(a), statistics.median(b)
    time_row = Row(
        f"s3 fine-tune push time vs the same push to a local registry [{catalogue} vs SQLite]",
        secs(ours),
        secs(base),
        f"{ours / base:.2f}x",
        "(info)",
    )
    return [
        checked(
            checked(bytes_row, sent == written, f"bytes sent {sent} != bytes_written {written}"),
            ok,
            "the fine-tuned version loads back different weights",
        ),
        time_row,
    ]


COMPARISONS: dict[str, Callable[[Bench], list[Row]]] = {
    "push": compare_push,
    "push-1gb": compare_push_1gb,
    "load": compare_load,
    "load-mlflow": compare_load_mlflow,
    "load-sd-1gb": compare_load_sd_1gb,
    "rss-1gb": compare_rss_1gb,
    "finetune": compare_finetune,
    "cli": compare_cli,
    "s3-push": compare_s3_push,
    "s3-push-1gb": compare_s3_push_1gb,
    "s3-load": compare_s3_load,
    "s3-finetune": compare_s3_finetune,
}
ONE_GB = {"push-1gb", "load-sd-1gb", "rss-1gb", "s3-push-1gb"}


# -- main --------------------------------------------------------------------------


def header(repeat: int) -> str:
    mem_kb = next(
        int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal:")
    )
    try:
        thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        thp = "unreadable"
    return (
        f"# {datetime.datetime.now().isoformat(timespec='seconds')}; cpus={os.cpu_count()}; "
        f"RAM {mem_kb * 1024 / GB:.1f} GB; torch {torch.__version__}; "
        f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}; "
        f"THP enabled: {thp}; {repeat} repetitions per side (medians)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per side (default 7)")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_REPEAT} repetitions, skip the 1 GB cases"
    )
    parser.add_argument("--only", nargs="+", choices=list(COMPARISONS), metavar="NAME")
    parser.add_argument(
        "--dir", default=None, help="where to put the temporary folder (default /tmp)"
    )
    args = parser.parse_args()
    repeat = args.repeat or (QUICK_REPEAT if args.quick else 7)
    names = args.only or [n for n in COMPARISONS if not (args.quick and n in ONE_GB)]

    print(header(repeat), flush=True)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="registry-bench-", dir=args.dir or "/tmp"))
    bench = Bench(work, repeat)
    rows: list[Row] = []
    try:
        for name in names:
            print(f"# running {name} ...", flush=True)
            rows += COMPARISONS[name](bench)
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    print(f"# total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
