"""Side-by-side timings: the registry against the plain torch.save / torch.load recipe.

    python benchmarks/run.py [--repeat 7] [--arch resnet50]

Each comparison runs both sides in this process, alternating, on the same state dict
and the same disk, and prints medians and the ratio registry / baseline. Durable
writes on both sides: torch.save is followed by fsync. Reads are warm (files in the
page cache) on both sides. THP_MEM_ALLOC_ENABLE is reported, not changed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from registry import Registry


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_pair(a, b, repeat: int) -> tuple[float, float]:
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(timed(a))
        tb.append(timed(b))
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--arch", default="resnet50")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.arch, weights=None)
    state = model.state_dict()
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    pth = work / "model.pth"
    counter = iter(range(10**6))

    def torch_save_fsync() -> None:
        path = work / f"save-{next(counter)}.pth"
        torch.save(state, path)
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    # An empty registry per push (created and migrated before timing), so every push
    # writes all the weights instead of finding them stored already.
    empties = []
    for i in range(args.repeat + 1):
        empty = Registry(home=work / f"empty-{i}")
        empty.list()
        empties.append(empty)

    def registry_push() -> None:
        empties.pop().push(state, "bench", arch=args.arch)

    torch.save(state, pth)
    reg = Registry(home=work / "main")
    reg.push(state, "bench", arch=args.arch)
    registry_push(), torch_save_fsync()  # warm-up: imports, schema, page cache

    def recipe_load() -> None:
        m = torchvision.models.get_model(args.arch, weights=None)
        m.load_state_dict(torch.load(pth, weights_only=True))
        m.eval()

    rows = [
        (
            "push (durable) vs torch.save + fsync",
            *median_pair(registry_push, torch_save_fsync, args.repeat),
        ),
        (
            "load vs get_model + torch.load + load_state_dict",
            *median_pair(lambda: reg.load("bench:1"), recipe_load, args.repeat),
        ),
        (
            "load_state_dict (verified) vs torch.load",
            *median_pair(
                lambda: reg.load_state_dict("bench:1"),
                lambda: torch.load(pth, weights_only=True),
                args.repeat,
            ),
        ),
    ]
    print(
        f"{args.arch}: {nbytes / 1e6:.1f} MB, {len(state)} tensors; {args.repeat} repetitions; "
        f"{os.cpu_count()} cores; THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}; "
        f"torch {torch.__version__}"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'comparison'.ljust(width)}  registry  baseline  ratio")
    for label, ours, base in rows:
        print(f"{label.ljust(width)}  {ours:7.3f}s  {base:7.3f}s  {ours / base:5.2f}x")


if __name__ == "__main__":
    main()
