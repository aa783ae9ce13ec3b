"""Where a push to (or a cold load from) an object store spends its time, and what the
S3 constants change.

    .venv/bin/python benchmarks/s3_phases.py [--repeat 7] [--big | --load]
                                             [--variant NAME:k=v,...] [--no-phases]

Starts a SeaweedFS server (S3 on 127.0.0.1) and, if tests/servers.py can, a PostgreSQL
catalogue (else SQLite), as benchmarks/run.py's s3-* comparisons do, then pushes
resnet50 (``--big``: the ~1 GB vgg19 state dict of run.py) into a fresh prefix and
catalogue per repetition, round robin with the by-hand baseline (torch.save + boto3
upload_file, default TransferConfig) and with each ``--variant``. ``--load`` instead
loads resnet50 with the cache emptied before each, against download_file + get_model +
torch.load + load_state_dict. The machine's 2 cores are shared with the server (and
with whatever else runs), so besides wall time each side shows the CPU seconds this
process used ("cpu") and the server used ("server"): steadier than wall time under
load. A variant sets registry.storage.s3's constants for its pushes only,
in this process (no file is changed): ``part`` (PART_BYTES, MiB), ``single``
(SINGLE_PUT_BYTES, MiB), ``conc`` (CONCURRENCY), ``crc`` (0: no CRC32 on parts and
PutObject; the client made with request_checksum_calculation=when_required),
``hash`` (HASH_THREADS, the sha256 threads + 1). (Variants that measured a part 1 of
5 MiB, hashing before uploading, bodies sent without a copy and GET bodies streamed
into the cache were tried on 2026-11-29; the last two are now the default.)

Phases of the default variant are timed by wrapping the functions that do them:
"wall" is the union of their intervals within a push (what the push waits for at
most), "sum" adds the intervals of all threads (CPU-ish work on 2 cores). Medians
over the repetitions, in milliseconds.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (benchmarks/run.py: the servers, the states, SentBytes)
import torchvision  # noqa: E402

from registry import Registry  # noqa: E402
from registry.catalog import blobs  # noqa: E402
from registry.pipelines import push  # noqa: E402
from registry.storage import base, s3  # noqa: E402

INTERVALS: dict[str, list[tuple[float, float]]] = defaultdict(list)
_lock = threading.Lock()
RECORDING = threading.Event()


def wrap(owner: object, attr: str, label: str | None = None, by_operation: bool = False) -> None:
    real = getattr(owner, attr)

    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            if RECORDING.is_set():
                name = f"S3 {args[2]}" if by_operation else label
                with _lock:
                    INTERVALS[name].append((start, time.perf_counter()))

    setattr(owner, attr, wrapper)


TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Clock:
    """Wall seconds, this process's CPU seconds and the server's, of one block."""

    def __init__(self, server_pid: int):
        self.server_pid = server_pid

    def __enter__(self):
        self.t = (time.perf_counter(), time.process_time(), cpu_of(self.server_pid))
        return self

    def __exit__(self, *exc):
        now = (time.perf_counter(), time.process_time(), cpu_of(self.server_pid))
        self.wall, self.cpu, self.server = (b - a for a, b in zip(self.t, now))


def union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def install_wrappers() -> None:
    import botocore.httpchecksum as hc

    wrap(push, "prepare", "read + fit + XXH3 checksums (prepare)")
    wrap(blobs.BlobQueries, "blobs_by_checksum", "catalogue: which are stored")
    wrap(push, "match_stored", "match_stored")
    wrap(s3.S3Store, "start_pack", "start_pack (returns once digests known)")
    wrap(s3, "sha256_hex", "  sha256 of tensors (hasher thread)")
    wrap(s3, "_gather", "  _gather: part bodies (one copy)")
    wrap(hc.Crc32Checksum, "handle", "  botocore CRC32 of bodies")
    wrap(s3.S3Store, "_call", by_operation=True)
    wrap(s3.S3Store, "_seal", "  _seal thread (parts done, complete, HEAD)")
    wrap(push, "_commit", "commit transaction (incl. wait for the upload)")
    wrap(base.PackWritten, "wait", "  wait for the upload (PackWritten.wait)")


def install_load_wrappers() -> None:
    from registry import architectures
    from registry.pipelines import read
    from registry.storage import cache

    wrap(read, "open_version", "open_version (catalogue + fetch + verify)")
    wrap(s3.S3Store, "_call", by_operation=True)
    wrap(s3.S3Store, "open_ranges", "  fetch into the cache (open_ranges)")
    wrap(s3.S3Store, "read_range", "    read_range (GET + body streamed to the cache)")
    wrap(cache.CacheEntry, "write", "    cache write (pwrite of each range)")
    wrap(cache.CacheEntry, "add", "    cache record (.ranges JSON, flock)")
    wrap(cache.PackCache, "prune", "    cache prune (glob + stat)")
    wrap(read, "_failing", "  verify (XXH3 of every tensor)")
    wrap(architectures, "instantiate", "build the model (instantiate)")


class Variant:
    def __init__(self, spec: str):
        self.name, _, rest = spec.partition(":")
        self.settings = dict(kv.split("=") for kv in rest.split(",") if kv)
        self.saved: dict = {}

    def __enter__(self):
        s = self.settings
        values = {
            "PART_BYTES": int(float(s["part"]) * (1 << 20)) if "part" in s else None,
            "SINGLE_PUT_BYTES": int(float(s["single"]) * (1 << 20)) if "single" in s else None,
            "CONCURRENCY": int(s["conc"]) if "conc" in s else None,
            "HASH_THREADS": int(s["hash"]) if "hash" in s else None,
        }
        for key, value in values.items():
            if value is not None:
                self.saved[key] = getattr(s3, key)
                setattr(s3, key, value)
        if s.get("crc") == "0":
            os.environ["AWS_REQUEST_CHECKSUM_CALCULATION"] = "when_required"
            self.saved["_call"] = s3.S3Store._call
            real = s3.S3Store._call

            def no_crc(self_, what, operation, /, **kwargs):
                kwargs.pop("ChecksumAlgorithm", None)
                return real(self_, what, operation, **kwargs)

            s3.S3Store._call = no_crc
        return self

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if key == "_call":
                setattr(s3.S3Store, key, value)
            else:
                setattr(s3, key, value)
        os.environ.pop("AWS_REQUEST_CHECKSUM_CALCULATION", None)
        self.saved = {}


def load_main(args, variants: list[Variant]) -> None:
    """Cold loads (cache emptied before each) vs download_file + get_model + torch.load +
    load_state_dict, round robin; phases of the default variant."""
    install_load_wrappers()
    work = Path(tempfile.mkdtemp(prefix="registry-s3-phases-"))
    bench = run.Bench(work, args.repeat)
    times: dict[str, list[float]] = defaultdict(list)
    cpus: dict[str, list[tuple[float, float]]] = defaultdict(list)
    phases: dict[str, list[float]] = defaultdict(list)
    try:
        with run.s3_site(bench, args.repeat) as site:
            first, prefix = site.registry()
            first.push(bench.small_state, "bench", arch="resnet50")
            url = first.settings.database_url
            hand = site.client()
            hand.upload_file(str(bench.small_pth), site.bucket, "by-hand/resnet50.pth")
            got = work / "got.pth"
            pid = site.server.process.pid

            def cold(variant: Variant, record: bool, timing: bool = True) -> float:
                with variant:
                    reg = Registry(
                        home=work / "h",
                        database_url=url,
                        storage_url=f"s3://{site.bucket}/{prefix}",
                    )
                    reg._store.client, reg._store.pool  # noqa: B018 - made untimed
                    site.clear_cache()
                    gc.collect()
                    INTERVALS.clear()
                    if record:
                        RECORDING.set()
                    with Clock(pid) as clock:
                        reg.load("bench:1")
                    RECORDING.clear()
                    reg.close()
                if timing:
                    times[variant.name].append(clock.wall)
                    cpus[variant.name].append((clock.cpu, clock.server))
                if record:
                    phases["(whole load)"].append(clock.wall)
                    for label, spans in INTERVALS.items():
                        phases[label + " |wall"].append(union(spans))
                        phases[label + " |sum"].append(sum(b - a for a, b in spans))
                        phases[label + " |n"].append(len(spans))
                return clock.wall

            def by_hand(record: bool) -> None:
                gc.collect()
                steps = []
                with Clock(pid) as total:
                    with Clock(pid) as c:
                        hand.download_file(site.bucket, "by-hand/resnet50.pth", str(got))
                    steps.append(("by hand: download_file", c))
                    with Clock(pid) as c:
                        m = torchvision.models.get_model("resnet50", weights=None)
                    steps.append(("by hand: get_model (random init)", c))
                    with Clock(pid) as c:
                        sd = torch.load(got, weights_only=True)
                    steps.append(("by hand: torch.load", c))
                    with Clock(pid) as c:
                        m.load_state_dict(sd)
                        m.eval()
                    steps.append(("by hand: load_state_dict", c))
                steps.append(("by hand (total)", total))
                got.unlink()
                if record:
                    for name, c in steps:
                        times[name].append(c.wall)
                        cpus[name].append((c.cpu, c.server))

            for variant in variants:  # warm-up
                cold(variant, False, timing=False)
            by_hand(False)
            for _ in range(args.repeat):
                for variant in variants:
                    cold(variant, variant.name == "default")
                by_hand(True)
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    report(times, cpus, phases, variants, "load", args.no_phases)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--big", action="store_true", help="the ~1 GB vgg19 state dict")
    parser.add_argument("--load", action="store_true", help="cold loads of resnet50 instead")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:k=v,...")
    parser.add_argument("--no-phases", action="store_true", help="skip the phase table")
    args = parser.parse_args()

    missing = run.seaweed_missing()
    if missing:
        sys.exit(f"cannot start SeaweedFS: {missing}")
    variants = [Variant("default:"), *(Variant(v) for v in args.variant)]
    if args.load:
        load_main(args, variants)
        return
    install_wrappers()
    work = Path(tempfile.mkdtemp(prefix="registry-s3-phases-"))
    bench = run.Bench(work, args.repeat)
    if args.big:
        state, arch, kwargs = bench.big_state, "vgg19", {"num_classes": run.BIG_CLASSES}
    else:
        state, arch, kwargs = bench.small_state, "resnet50", None
    times: dict[str, list[float]] = defaultdict(list)
    phases: dict[str, list[float]] = defaultdict(list)
    cpus: dict[str, list[tuple[float, float]]] = defaultdict(list)  # (ours, the server's)
    pth = work / "by-hand.pth"
    try:
        with run.s3_site(bench, args.repeat) as site:

            def push_once(variant: Variant, record: bool) -> float:
                with variant:
                    reg, prefix = site.registry()
                    gc.collect()
                    INTERVALS.clear()
                    if record:
                        RECORDING.set()
                    with Clock(site.server.process.pid) as clock:
                        reg.push(state, "bench", arch=arch, arch_kwargs=kwargs)
                    seconds = clock.wall
                    cpus[variant.name].append((clock.cpu, clock.server))
                    RECORDING.clear()
                    reg.close()
                site.delete_prefix(prefix)
                if record:
                    phases["(whole push)"].append(seconds)
                    for label, spans in INTERVALS.items():
                        phases[label + " |wall"].append(union(spans))
                        phases[label + " |sum"].append(sum(b - a for a, b in spans))
                        phases[label + " |n"].append(len(spans))
                return seconds

            def by_hand() -> tuple[float, float]:
                client = site.client()
                gc.collect()
                with Clock(site.server.process.pid) as save:
                    torch.save(state, pth)
                with Clock(site.server.process.pid) as upload:
                    client.upload_file(str(pth), site.bucket, "by-hand/model.pth")
                pth.unlink()
                client.close()
                cpus["by hand: torch.save"].append((save.cpu, save.server))
                cpus["by hand: upload_file"].append((upload.cpu, upload.server))
                cpus["by hand (total)"].append((save.cpu + upload.cpu, save.server + upload.server))
                return save.wall, upload.wall

            for variant in variants:  # warm-up
                push_once(variant, False)
            by_hand()
            for _ in range(args.repeat):
                for variant in variants:
                    times[variant.name].append(push_once(variant, variant.name == "default"))
                save, upload = by_hand()
                times["by hand: torch.save"].append(save)
                times["by hand: upload_file"].append(upload)
                times["by hand (total)"].append(save + upload)
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)

    report(times, cpus, phases, variants, "push", args.no_phases)


def report(times, cpus, phases, variants, what: str, no_phases: bool) -> None:
    base_total = statistics.median(times["by hand (total)"])

    print(
        f"\n{'side':48} {'median ms':>10} {'vs by hand':>10} {'cpu ms':>7} {'server':>7}   all (ms)"
    )
    for name, values in times.items():
        med = statistics.median(values)
        label = name if name.startswith("by hand") else f"{what} [{name}]"
        spec = next((v.settings for v in variants if v.name == name), None)
        if spec:
            label += " " + ",".join(f"{k}={v}" for k, v in spec.items())
        cpu = statistics.median(c for c, _ in cpus[name]) * 1000
        server = statistics.median(srv for _, srv in cpus[name]) * 1000
        print(
            f"{label:48} {med * 1000:10.0f} {med / base_total:9.2f}x {cpu:7.0f} {server:7.0f}   "
            + " ".join(f"{v * 1000:.0f}" for v in values)
        )
    if no_phases:
        return
    print(f"\n{'phase of the default ' + what:52} {'wall ms':>8} {'sum ms':>8} {'calls':>6}")
    labels = sorted(
        {k.rsplit(" |", 1)[0] for k in phases if " |" in k},
        key=lambda k: (
            ORDER.index(k) if k in ORDER else 99,
            k,
        ),
    )
    whole = statistics.median(phases[f"(whole {what})"])
    print(f"{f'(whole {what})':52} {whole * 1000:8.0f}")
    for label in labels:
        wall = statistics.median(phases[label + " |wall"]) * 1000
        total = statistics.median(phases[label + " |sum"]) * 1000
        calls = statistics.median(phases[label + " |n"])
        print(f"{label:52} {wall:8.0f} {total:8.0f} {calls:6.0f}")


ORDER = [  # the rows of the phase table, in this order
    "read + fit + XXH3 checksums (prepare)",
    "catalogue: which are stored",
    "match_stored",
    "start_pack (returns once digests known)",
    "  sha256 of tensors (hasher thread)",
    "  _gather: part bodies (one copy)",
    "  botocore CRC32 of bodies",
    "S3 create_multipart_upload",
    "S3 upload_part",
    "S3 put_object",
    "  _seal thread (parts done, complete, HEAD)",
    "S3 complete_multipart_upload",
    "S3 head_object",
    "S3 delete_object",
    "commit transaction (incl. wait for the upload)",
    "  wait for the upload (PackWritten.wait)",
    "open_version (catalogue + fetch + verify)",
    "  fetch into the cache (open_ranges)",
    "S3 head_object",
    "S3 get_object",
    "    read_range (GET + body streamed to the cache)",
    "    cache write (pwrite of each range)",
    "    cache record (.ranges JSON, flock)",
    "    cache prune (glob + stat)",
    "  verify (XXH3 of every tensor)",
    "build the model (instantiate)",
]


if __name__ == "__main__":
    main()
