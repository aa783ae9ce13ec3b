"""The web page (`registry ui`) against its budget: each page in under 200 ms on a
catalogue of 10,000 versions.

    python benchmarks/ui.py [--repeat 20] [--quick] [--home DIR] [--workers 2] [--dir DIR]

Fills a registry (SQLite and a folder), serves it with the real command in a child
process (``registry ui --port 0``, REGISTRY_HOME set, the address read from its
stderr line "registry ui: serving http://127.0.0.1:PORT/"), and times GETs of every
page and /api/ endpoint with one persistent httpx client (keep-alive: one TCP
connection), the whole body read. Every address is fetched once untimed first
(warm-up: imports, torch included, which the server imports at the first compare
and which makes Python's cyclic garbage collection slower from then on; the
server's per-thread Registry; the page cache), then each --repeat times (default
20; SLOW_REPEAT times for an address whose median is over SLOW_S by then: far over
budget either way); the table gives the repetitions, the median and the 90th
percentile in ms, the body size, and whether the median is under 200 ms. Other
processes on the machine change the numbers: the load average is printed before
and after.

Baselines measured in the same run:

- the server's floor: ``GET /static/ui.css`` from the same server (routing, the
  access checks, HTTP on loopback: no registry call, no template);
- the same data through the Python API in this process: the Registry calls the page
  makes (``Registry.models(limit=50)`` and ``count_models`` for the models page;
  ``get(tensors=False)``, ``tensor_table(limit=500)``, ``log(limit=200)``,
  ``lineage`` and ``children`` for a version page; ...), on a Registry of this
  process opened on the same home (torch imported here too, as in the server after
  the warm-up), run alternately with the page. "ratio" is page / API. The calls are
  timed after a gc.collect(), as benchmarks/run.py times; the server never collects
  between requests, so a page that makes many objects (a 40,000-tensor table) also
  pays for the full cyclic collections they trigger, 90 ms and more each once torch
  is imported: part of a ratio well over 1. Rows over 200 ms are followed by the
  median of each of those calls on its own, to show where the time goes.

The catalogue (``fill``), all through the public API (``Registry.push``, ``tag``,
``alias``; ``FULL``): 200 model names ``name-0`` .. ``name-199`` with 50 versions
each (10,000), every one a state dict of ``archs_helper.models:TinyNet(hidden)`` (4
tensors, hidden 16..256 by name, 0.4-12 kB) whose first layer changes every 10
versions (so deduplication has work) and whose last layer is new in each; every
version has tags (epoch, dataset, lr; ``stage=candidate`` each 10th, plus a later
``reviewed=yes`` tag event on those), each 5th a description; version v's parent is
v-1, and version 1 of each fourth name has the last version of the name before as
its parent (lineage across names); aliases ``production`` (half the names) and
``staging`` (a third). Then ``wide``: two versions of a module registered here
(``ui-bench-wide``: 10,000 blocks of Linear(4, 4) + LayerNorm(4), 4 tensors
each: 40,000 tensors), the second a child of the first with 1% of its tensors
changed; its version page shows the tensor table at 40,000 tensors.

Filling 10,000 versions serially would take 1.5-6 minutes here (``Registry.push`` of
a small state dict is 9-35 ms depending on the machine's load, much of it the two
git processes provenance starts and the fsyncs), so --workers processes (default
2) push at once, each name group (4 names, a cross-name parent inside its group)
in one process, ``wide`` (the two 40,000-tensor pushes, 30-75 s) first: 95 s on
a quiet machine, 6 minutes with a load average of 6. A ``Contention`` (a concurrent filler's change) is
retried: each step is idempotent. The time is printed.

With ``--home DIR`` the catalogue is filled there once and reused by later runs (a
file ``ui-bench.json`` in DIR records what was filled; an existing folder holding
something else is refused); without it, it is filled in a temporary folder under
--dir (default /tmp), removed at the end. ``--quick`` is a smoke run: 20 names (1,000
versions), a 4,000-tensor ``wide``, 5 repetitions.

REGISTRY_DATABASE_URL, REGISTRY_STORAGE_URL and REGISTRY_UI_TOKEN are ignored
(removed from this process's environment and the server's): the registry measured
is the home's SQLite file and folder, served without a token.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import hashlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import torch
from torch import nn

import registry
from registry import Registry
from registry.catalog.gateway import Contention
from registry.ui.pages import TENSORS_PER_PAGE

TESTS = Path(__file__).resolve().parent.parent / "tests"  # archs_helper (TinyNet)

BUDGET_MS = 200.0
DEFAULT_REPEAT = 20
QUICK_REPEAT = 5
TINY = "archs_helper.models:TinyNet"
HIDDENS = (16, 32, 64, 128, 256)  # TinyNet(hidden) by name: 0.4 kB .. 12.3 kB
DATASETS = ("imagenet", "cifar10", "coco")
WIDE = "wide"  # the model whose versions hold Shape.wide_blocks * 4 tensors
WIDE_ARCH = "ui-bench-wide"
MARKER = "ui-bench.json"  # in --home: what was filled there
SERVER_START_TIMEOUT_S = 120.0
FILL_WORKERS = 2
SLOW_S, SLOW_REPEAT = 1.0, 5  # an address over SLOW_S after SLOW_REPEAT: no more
IGNORED_ENV = ("REGISTRY_DATABASE_URL", "REGISTRY_STORAGE_URL", "REGISTRY_UI_TOKEN")


@dataclass(frozen=True)
class Shape:
    """How big the catalogue is."""

    names: int
    versions: int  # per name
    wide_blocks: int  # 4 tensors each

    @property
    def total(self) -> int:
        return self.names * self.versions + 2  # and wide:1, wide:2

    @property
    def wide_tensors(self) -> int:
        return self.wide_blocks * 4


FULL = Shape(names=200, versions=50, wide_blocks=10_000)
QUICK = Shape(names=20, versions=50, wide_blocks=1_000)


# -- the catalogue -------------------------------------------------------------------


class Wide(nn.Module):
    """``blocks`` x (Linear(width, width), LayerNorm(width)): 4 tiny tensors a block."""

    def __init__(self, blocks: int = 10_000, width: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width)) for _ in range(blocks)
        )

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


registry.register_architecture(WIDE_ARCH, Wide)


def generator(*seed: object) -> torch.Generator:
    digest = hashlib.sha256(repr(seed).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:7], "big"))


def tiny_state(i: int, v: int, hidden: int) -> dict[str, torch.Tensor]:
    """Version v of name i: TinyNet(hidden)'s keys; the first layer changes every 10
    versions, the last is new in each."""
    first, last = generator("first", i, v // 10), generator("last", i, v)
    return {
        "body.0.weight": torch.randn(hidden, 8, generator=first),
        "body.0.bias": torch.randn(hidden, generator=first),
        "body.2.weight": torch.randn(3, hidden, generator=last),
        "body.2.bias": torch.randn(3, generator=last),
    }


def wide_state(blocks: int, changed_from: dict | None = None) -> dict[str, torch.Tensor]:
    """Wide(blocks)'s keys with random values; or ``changed_from`` with every 100th
    tensor changed."""
    if changed_from is not None:
        state = dict(changed_from)
        for key in list(state)[::100]:
            state[key] = state[key] + 0.01
        return state
    g = generator("wide", blocks)
    state = {}
    for b in range(blocks):
        state[f"blocks.{b}.0.weight"] = torch.randn(4, 4, generator=g)
        state[f"blocks.{b}.0.bias"] = torch.randn(4, generator=g)
        state[f"blocks.{b}.1.weight"] = torch.randn(4, generator=g)
        state[f"blocks.{b}.1.bias"] = torch.randn(4, generator=g)
    return state


def retried(fn: Callable[..., object], *args: object, **kwargs: object) -> object:
    """fn(*args, **kwargs), again while a concurrent filler's change makes it start over (each call
    of the fill is idempotent: a push of weights already there returns that version)."""
    for attempt in range(20):
        try:
            return fn(*args, **kwargs)
        except Contention:
            if attempt == 19:
                raise
            time.sleep(0.05 * (attempt + 1))
    return None


def fill_names(home: Path, shape: Shape, names: range) -> int:
    """Push every version of these names, tag, alias (module docstring); a name whose
    version 1 has a parent in another name comes after that name in ``names``."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    with Registry(home=home) as reg:
        for i in names:
            name, hidden, dataset = f"name-{i}", HIDDENS[i % len(HIDDENS)], DATASETS[i % 3]
            for v in range(1, shape.versions + 1):
                if v > 1:
                    parent = f"{name}:{v - 1}"
                elif i % 4 == 1:
                    parent = f"name-{i - 1}:{shape.versions}"  # across names
                else:
                    parent = None
                tags = {"epoch": v, "dataset": dataset, "lr": f"{1e-3 / (1 + v // 10):.2g}"}
                if v % 10 == 0:
                    tags["stage"] = "candidate"
                description = (
                    f"{name} after epoch {v} on {dataset}: fine-tuned from "
                    f"{parent or 'scratch'}, hidden {hidden}"
                    if v % 5 == 0
                    else None
                )
                retried(
                    reg.push,
                    tiny_state(i, v, hidden),
                    name,
                    arch=TINY,
                    arch_kwargs={"hidden": hidden},
                    tags=tags,
                    description=description,
                    parent=parent,
                )
            for v in range(10, shape.versions + 1, 10):
                retried(reg.tag, f"{name}:{v}", {"reviewed": "yes"})
            if i % 2 == 0:
                retried(reg.alias, f"{name}:{max(shape.versions - 10, 1)}", "production")
            if i % 3 == 0:
                retried(reg.alias, f"{name}:{shape.versions}", "staging")
    return len(names) * shape.versions


def fill_wide(home: Path, shape: Shape) -> float:
    """wide:1, then wide:2 (its child, 1% of the tensors changed); returns the seconds."""
    started = time.perf_counter()
    kwargs = {"blocks": shape.wide_blocks}
    first = wide_state(shape.wide_blocks)
    with Registry(home=home) as reg:
        retried(reg.push, first, WIDE, arch=WIDE_ARCH, arch_kwargs=kwargs, tags={"stage": "base"})
        retried(
            reg.push,
            wide_state(shape.wide_blocks, changed_from=first),
            WIDE,
            arch=WIDE_ARCH,
            arch_kwargs=kwargs,
            tags={"stage": "tuned"},
            description=f"every 100th of {shape.wide_tensors:,} tensors changed",
            parent=f"{WIDE}:1",
        )
        retried(reg.alias, f"{WIDE}:2", "production")
    return time.perf_counter() - started


def fill(home: Path, shape: Shape, workers: int) -> float:
    """Fill an empty registry at home (module docstring) from ``workers`` processes;
    returns the seconds it took."""
    started = time.perf_counter()
    with Registry(home=home) as reg:
        reg.upgrade_database()
    # Groups of 4 names: the cross-name parent (name 4k+1's version 1 is a child of
    # name 4k's last) is in the same group, pushed before it.
    groups = [range(i, min(i + 4, shape.names)) for i in range(0, shape.names, 4)]
    done, shown = 0, 0

    def progress(n: int) -> None:
        nonlocal done, shown
        done += n
        if done - shown >= shape.names * shape.versions // 10:
            shown = done
            print(f"#   {done:,} versions in {time.perf_counter() - started:.0f} s", flush=True)

    def wide_done(seconds: float) -> None:
        print(
            f"#   {WIDE}:1 and {WIDE}:2 ({shape.wide_tensors:,} tensors each) in {seconds:.0f} s",
            flush=True,
        )

    if workers <= 1:
        for group in groups:
            progress(fill_names(home, shape, group))
        wide_done(fill_wide(home, shape))
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            wide = pool.apply_async(fill_wide, (home, shape))  # the longest: first
            for n in pool.imap_unordered(functools.partial(fill_names, home, shape), groups):
                progress(n)
            wide_done(wide.get())
    return time.perf_counter() - started


def catalogue(home: Path, shape: Shape, reusable: bool, workers: int) -> tuple[str, float | None]:
    """Fill home, or reuse what a previous run filled there; says which, and the
    seconds the fill took now (None when reused)."""
    marker = home / MARKER
    wanted = {"names": shape.names, "versions": shape.versions, "wide_blocks": shape.wide_blocks}
    if reusable and marker.exists():
        recorded = json.loads(marker.read_text())
        with Registry(home=home) as reg:
            count = reg.count()
        if {k: recorded.get(k) for k in wanted} == wanted and count == shape.total:
            return f"reused (filled in {recorded.get('seconds', 0):.0f} s by an earlier run)", None
        raise SystemExit(
            f"{home} holds another catalogue ({recorded}, {count} versions): give an empty "
            "or new --home"
        )
    if home.exists() and any(home.iterdir()):
        raise SystemExit(
            f"{home} is not empty and holds no finished fill of this benchmark (an "
            "interrupted one?): remove it or give another --home"
        )
    home.mkdir(parents=True, exist_ok=True)
    print(
        f"# filling {home}: {shape.names} names x {shape.versions} versions + {WIDE} "
        f"({shape.wide_tensors:,} tensors), {workers} processes ...",
        flush=True,
    )
    seconds = fill(home, shape, workers)
    with Registry(home=home) as reg:
        count = reg.count()
    if count != shape.total:
        raise SystemExit(f"the fill made {count} versions, not {shape.total}")
    if reusable:
        marker.write_text(json.dumps({**wanted, "seconds": seconds}) + "\n")
    return f"filled in {seconds:.0f} s ({seconds / shape.total * 1000:.1f} ms a version)", seconds


# -- the server ------------------------------------------------------------------------


class Server:
    """``registry ui --port 0`` in a child process, serving home."""

    def __init__(self, home: Path):
        env = {k: v for k, v in os.environ.items() if k not in IGNORED_ENV}
        env["REGISTRY_HOME"] = str(home)
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "registry.cli", "ui", "--port", "0"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(SERVER_START_TIMEOUT_S) or self.url is None:
            self.stop()
            raise SystemExit("registry ui did not start:\n" + "".join(self.lines))
        self.startup_seconds = time.perf_counter() - started

    def _drain(self) -> None:
        """Read the server's stderr (so it never blocks on a full pipe); find its address."""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            prefix = "registry ui: serving "
            if self.url is None and line.startswith(prefix):
                self.url = line[len(prefix) :].strip()
                self._ready.set()
        self._ready.set()  # ended before serving

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- measuring ---------------------------------------------------------------------------

Call = tuple[str, Callable[[], object]]  # a Registry call the page makes, named


@dataclass
class Page:
    label: str
    path: str
    calls: list[Call] = field(default_factory=list)  # the API baseline; none: no baseline
    page_ms: list[float] = field(default_factory=list)
    api_ms: list[float] = field(default_factory=list)
    body_bytes: int = 0
    failed: str | None = None


def ms(seconds: float) -> float:
    return seconds * 1000.0


def p90(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def run_calls(calls: list[Call]) -> float:
    """Milliseconds the calls take in turn; results freed after the clock stops."""
    gc.collect()
    start = time.perf_counter()
    kept = [fn() for _, fn in calls]
    seconds = time.perf_counter() - start
    del kept
    return ms(seconds)


def fetch(client: httpx.Client, page: Page) -> float:
    """Milliseconds one GET takes, body read; records its size, or the failure."""
    gc.collect()
    start = time.perf_counter()
    response = client.get(page.path)
    body = response.content
    seconds = time.perf_counter() - start
    page.body_bytes = len(body)
    if response.status_code != 200 and page.failed is None:
        page.failed = f"HTTP {response.status_code}: {body[:200]!r}"
    return ms(seconds)


def measure(client: httpx.Client, pages: list[Page], repeat: int) -> None:
    """Every page once untimed (so the server has imported all it will, torch with
    the first compare, before anything is timed), then each page and its API calls
    alternately, repeat times (SLOW_REPEAT when their median is over SLOW_S by then)."""
    for page in pages:
        fetch(client, page)
        if page.calls:
            run_calls(page.calls)
    for page in pages:
        for i in range(repeat):
            if i == SLOW_REPEAT and statistics.median(page.page_ms) > SLOW_S * 1000:
                break
            page.page_ms.append(fetch(client, page))
            if page.calls:
                page.api_ms.append(run_calls(page.calls))
        print(f"#   {page.label}: {statistics.median(page.page_ms):.1f} ms", flush=True)


def breakdown(page: Page, repeat: int) -> list[str]:
    """The median of each of the page's Registry calls on its own."""
    lines = []
    for label, fn in page.calls:
        run_calls([(label, fn)])
        times = [run_calls([(label, fn)]) for _ in range(min(repeat, SLOW_REPEAT))]
        lines.append(f"    {label}: {statistics.median(times):.1f} ms")
    return lines


# -- the pages ---------------------------------------------------------------------------


def pages_to_time(reg: Registry, shape: Shape) -> list[Page]:
    """Every page and endpoint, with the Registry calls that fetch the same data."""
    models_total = shape.names + 1
    late = max(1, min(4, math.ceil(models_total / 50)))
    name = "name-9" if shape.names > 9 else "name-1"  # version 1's parent is another name's
    ref, before = f"{name}:{shape.versions // 2}", f"{name}:{shape.versions // 2 - 1}"
    wide = f"{WIDE}:2"
    needle = "blocks.99"

    def dry_gc() -> object:
        return reg.gc(dry_run=True)

    def models(**kw: object) -> list[Call]:
        count_kw = {k: v for k, v in kw.items() if k == "name"}
        return [
            (f"models({fmt(kw)})", lambda: reg.models(limit=50, **kw)),
            (f"count_models({fmt(count_kw)})", lambda: reg.count_models(**count_kw)),
        ]

    def model(n: str) -> list[Call]:
        calls: list[Call] = [
            (f"count({n!r})", lambda: reg.count(n)),
            (f"list({n!r}, limit=100)", lambda: reg.list(n, limit=100)),
        ]
        outside = sorted(
            {mv.parent for mv in reg.list(n, limit=100) if mv.parent}
            - {mv.ref for mv in reg.list(n, limit=100)}
        )
        calls += [(f"get({p!r}) (a parent)", lambda p=p: reg.get(p)) for p in outside]
        return calls

    def table(r: str, **kw: object) -> list[Call]:
        args = fmt(kw) + ", " if kw else ""
        return [
            (
                f"tensor_table({r!r}, {args}limit=500)",
                lambda: reg.tensor_table(r, limit=TENSORS_PER_PAGE, **kw),
            )
        ]

    def version(r: str, **kw: object) -> list[Call]:
        return [
            (f"get({r!r}, tensors=False)", lambda: reg.get(r, tensors=False)),
            *table(r, **kw),
            (f"log({r!r}, limit=200)", lambda: reg.log(r, limit=200)),
            (f"lineage({r!r})", lambda: reg.lineage(r)),
            (f"children({r!r})", lambda: reg.children(r)),
        ]

    def compare(a: str, b: str) -> list[Call]:
        return [
            (f"get({a!r})", lambda: reg.get(a)),
            (f"get({b!r})", lambda: reg.get(b)),
            (f"diff({a!r}, {b!r})", lambda: reg.diff(a, b)),
        ]

    pair = urlencode({"a": before, "b": ref})
    wide_pair = urlencode({"a": f"{WIDE}:1", "b": wide})
    wide_path = "/versions/" + quote(wide, safe="/:")
    n = shape.wide_tensors
    by_size = {"sort": "size", "descending": True}
    return [
        Page("floor: /static/ui.css", "/static/ui.css"),
        Page("models", "/", models()),
        Page("models, searched", "/?q=name-1*", models(name="name-1*")),
        Page("models, sorted by size", "/?sort=size", models(sort="size")),
        Page(f"models, page {late}", f"/?page={late}", models(offset=(late - 1) * 50)),
        Page("model", f"/models/{name}", model(name)),
        Page("version", f"/versions/{ref}", version(ref)),
        Page(f"version, {n:,} tensors", wide_path, version(wide)),
        Page(
            f"version, {n:,} tensors, ?tq=",
            f"{wide_path}?tq={needle}",
            version(wide, contains=needle),
        ),
        Page(
            f"version, {n:,} tensors, by size",
            f"{wide_path}?sort=size&dir=desc",
            version(wide, **by_size),
        ),
        Page("compare", f"/compare?{pair}", compare(before, ref)),
        Page(f"compare, {n:,} tensors", f"/compare?{wide_pair}", compare(f"{WIDE}:1", wide)),
        Page("storage", "/storage", [("storage(gc=False)", lambda: reg.storage(gc=False))]),
        Page("api: models", "/api/models", models()),
        Page("api: model", f"/api/models/{name}", model(name)),
        Page("api: version", f"/api/versions/{ref}", [(f"get({ref!r})", lambda: reg.get(ref))]),
        Page(
            f"api: version, {n:,} tensors",
            f"/api/versions/{wide}",
            [(f"get({wide!r})", lambda: reg.get(wide))],
        ),
        Page(f"api: tensors, {n:,}", f"/api/versions/{wide}/tensors", table(wide)),
        Page(
            f"api: tensors, {n:,}, by size",
            f"/api/versions/{wide}/tensors?sort=size&dir=desc",
            table(wide, **by_size),
        ),
        Page("api: log", f"/api/versions/{ref}/log", [(f"log({ref!r})", lambda: reg.log(ref))]),
        Page("api: compare", f"/api/compare?{pair}", compare(before, ref)),
        Page("api: storage", "/api/storage", [("storage()", reg.storage)]),
        Page("api: gc (the storage page's figure)", "/api/gc", [("gc(dry_run=True)", dry_gc)]),
    ]


def fmt(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


# -- the table -------------------------------------------------------------------------


def kb(n: int) -> str:
    return f"{n / 1000:.1f} kB" if n < 1_000_000 else f"{n / 1e6:.2f} MB"


def table(pages: list[Page]) -> list[list[str]]:
    rows = [["page", "address", "n", "median", "p90", "body", "API", "ratio", "< 200 ms"]]
    for page in pages:
        med = statistics.median(page.page_ms)
        api = statistics.median(page.api_ms) if page.api_ms else None
        floor = page.path.startswith("/static/")
        verdict = "-" if floor else ("yes" if med < BUDGET_MS else "NO")
        if page.failed:
            verdict = f"FAILED: {page.failed}"
        address = page.path if len(page.path) <= 44 else page.path[:41] + "..."
        rows.append(
            [
                page.label,
                address,
                str(len(page.page_ms)),
                f"{med:.1f} ms",
                f"{p90(page.page_ms):.1f} ms",
                kb(page.body_bytes),
                f"{api:.1f} ms" if api is not None else "-",
                f"{med / api:.2f}x" if api else "-",
                verdict,
            ]
        )
    return rows


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        left = "  ".join(c.ljust(w) for c, w in zip(row[:2], widths[:2]))
        right = "  ".join(c.rjust(w) for c, w in zip(row[2:-1], widths[2:-1]))
        print(f"{left}  {right}  {row[-1]}")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def header(repeat: int) -> str:
    import starlette
    import uvicorn

    return (
        f"# {datetime.datetime.now().isoformat(timespec='seconds')}; cpus={os.cpu_count()}; "
        f"Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}; "
        f"torch {torch.__version__}; uvicorn {uvicorn.__version__}; starlette "
        f"{starlette.__version__}; httpx {httpx.__version__}; {repeat} repetitions per page "
        f"(median, p90); {load()}"
    )


# -- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help=f"repetitions per page (default {DEFAULT_REPEAT})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK.total - 2:,} versions, a {QUICK.wide_tensors:,}-tensor {WIDE}, "
        f"{QUICK_REPEAT} repetitions",
    )
    parser.add_argument(
        "--home", default=None, help="fill the registry here once and reuse it in later runs"
    )
    parser.add_argument(
        "--dir", default=None, help="where to put the temporary folder (default /tmp)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=FILL_WORKERS,
        help=f"processes filling the catalogue (default {FILL_WORKERS})",
    )
    args = parser.parse_args()
    shape = QUICK if args.quick else FULL
    repeat = args.repeat or (QUICK_REPEAT if args.quick else DEFAULT_REPEAT)
    for key in IGNORED_ENV:
        os.environ.pop(key, None)

    print(header(repeat), flush=True)
    started = time.perf_counter()
    work = None
    if args.home:
        home = Path(args.home).expanduser().absolute()
    else:
        work = Path(tempfile.mkdtemp(prefix="registry-ui-bench-", dir=args.dir or "/tmp"))
        home = work / "home"
    server = None
    try:
        how, _ = catalogue(home, shape, work is None, args.workers)
        print(
            f"# catalogue: {shape.total:,} versions of {shape.names + 1} models in {home}: {how}",
            flush=True,
        )
        server = Server(home)
        print(
            f"# server: {server.url} (started in {server.startup_seconds:.1f} s); {load()}",
            flush=True,
        )
        with Registry(home=home) as reg, httpx.Client(base_url=server.url, timeout=120) as client:
            pages = pages_to_time(reg, shape)
            measure(client, pages, repeat)
            rows = table(pages)
            slow = [p for p in pages if p.calls and statistics.median(p.page_ms) >= BUDGET_MS]
            notes = [
                [f"# {p.label} ({p.path}): its Registry calls"] + breakdown(p, repeat) for p in slow
            ]
    finally:
        if server is not None:
            server.stop()
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    for lines in notes:
        print("\n".join(lines))
    print(f"# total {time.perf_counter() - started:.0f} s; {load()}")


if __name__ == "__main__":
    main()
