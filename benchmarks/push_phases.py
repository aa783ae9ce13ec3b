"""Where a push's time goes, phase by phase: a full push of resnet50 and a fine-tune.

    .venv/bin/python benchmarks/push_phases.py [--repeat 9]

Each phase is timed by wrapping the pipeline function that does it (nothing in the
package is changed); the table gives medians in milliseconds over ``--repeat``
pushes, with the share of the whole push. Phases overlap where the code overlaps
them (git runs while the weights are read; the pack's fsync runs while the commit
prepares), so the shares need not add up to 100 %.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections import defaultdict

import torch
import torchvision

from registry import Registry
from registry.catalog import blobs, gateway, rows, versions
from registry.pipelines import push
from registry.storage import base, local

TIMES: dict[str, list[float]] = defaultdict(list)


def timed(owner: object, attr: str, label: str) -> None:
    real = getattr(owner, attr)

    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            TIMES[label].append(time.perf_counter() - start)

    setattr(owner, attr, wrapper)


PHASES = [
    (push, "check_request", "check the request"),
    (push, "prepare", "read + fit + checksums (prepare)"),
    (blobs.BlobQueries, "blobs_by_checksum", "ask the catalogue what is stored"),
    (push, "match_stored", "confirm candidates byte for byte"),
    (local.LocalStore, "start_pack", "write the pack (+ sha256)"),
    (base.PackWritten, "wait", "wait for the pack's fsync + rename"),
    (push, "_commit", "commit transaction (all of it)"),
    (versions.VersionQueries, "add_version", "  insert version + tensor rows"),
    (gateway.Gateway, "_connect", "  connect (every transaction)"),
    (gateway.Catalog, "version_by_digest", "  is this version stored?"),
    (blobs.BlobQueries, "add_pack", "  insert pack + blob rows"),
    (gateway.Catalog, "record_event", "  insert the push event"),
]


def time_commits() -> None:
    """COMMIT statements: where SQLite (synchronous=FULL) waits for its fsync."""
    real = rows.Statements.execute

    def execute(self, sql, params=()):
        start = time.perf_counter()
        try:
            return real(self, sql, params)
        finally:
            if sql == "COMMIT":
                TIMES["  COMMIT (the database's fsync)"].append(time.perf_counter() - start)

    rows.Statements.execute = execute
    PHASES.append((None, None, "  COMMIT (the database's fsync)"))


def run(label: str, make, reg: Registry, repeat: int) -> None:
    TIMES.clear()
    totals = []
    for i in range(repeat):
        state = make(i)
        start = time.perf_counter()
        reg.push(state, label, arch="resnet50")
        totals.append(time.perf_counter() - start)
    total = statistics.median(totals)
    print(f"\n{label}: median {total * 1000:.1f} ms over {repeat} pushes")
    for _, _, phase in PHASES:
        values = TIMES.get(phase)
        if values:
            per_push = sum(values) / repeat
            print(f"  {phase:<40} {per_push * 1000:7.1f} ms  {per_push / total:6.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    for owner, attr, phase in PHASES:
        timed(owner, attr, phase)
    time_commits()
    torch.manual_seed(0)
    state = torchvision.models.resnet50(weights=None).state_dict()
    with tempfile.TemporaryDirectory() as home, Registry(home=home) as reg:
        reg.push(state, "base", arch="resnet50")

        def full(i: int):
            return {k: (v + i + 1 if v.is_floating_point() else v) for k, v in state.items()}

        def finetune(i: int):
            tuned = dict(state)
            tuned["fc.weight"] = torch.randn_like(state["fc.weight"])
            tuned["fc.bias"] = torch.randn_like(state["fc.bias"])
            return tuned

        run("full", full, reg, args.repeat)
        run("finetune", finetune, reg, args.repeat)


if __name__ == "__main__":
    main()
