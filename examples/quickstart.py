"""The registry's main job, end to end, on an embedded default.

Creates a registry in a temporary folder, deleted at the end (or in the folder given
as the first argument, which is kept), saves a randomly initialised torchvision resnet18 state dict to
model.pth (nothing is downloaded), then runs, exactly as a user would:

    registry push model.pth --arch resnet18
    registry pull model:1
    Registry().load("model:1")

and checks that the rebuilt model computes exactly what the original does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torchvision

from registry import Registry


def registry_command() -> str:
    exe = shutil.which("registry", path=str(Path(sys.executable).parent)) or shutil.which(
        "registry"
    )
    if exe is None:
        sys.exit("the `registry` command is not installed: run `pip install .` first")
    return exe


def run(*args: str, cwd: Path) -> str:
    print(f"$ registry {' '.join(args)}", flush=True)
    result = subprocess.run([registry_command(), *args], cwd=cwd, capture_output=True, text=True)
    sys.stderr.write(result.stderr)
    print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        sys.exit(f"registry {' '.join(args)} failed with exit code {result.returncode}")
    return result.stdout.strip()


def main() -> None:
    if len(sys.argv) > 1:
        work = Path(sys.argv[1]).resolve()
        work.mkdir(parents=True, exist_ok=True)
        demo(work)
        print(f"kept the registry and the files in {work}")
        return
    with tempfile.TemporaryDirectory(prefix="registry-demo-") as folder:
        try:
            demo(Path(folder))
        finally:
            print(f"removed the temporary folder {folder} (give a folder to keep the files)")


def demo(work: Path) -> None:
    os.environ["REGISTRY_HOME"] = str(work / "home")
    print(f"registry home: {os.environ['REGISTRY_HOME']}")

    torch.manual_seed(0)
    original = torchvision.models.resnet18(weights=None).eval()
    torch.save(original.state_dict(), work / "model.pth")
    print(f"saved a resnet18 state dict to {work / 'model.pth'}")

    ref = run("push", "model.pth", "--arch", "resnet18", cwd=work)
    pulled = Path(run("pull", ref, cwd=work))
    run("list", cwd=work)

    same_file = all(
        torch.equal(a, b)
        for a, b in zip(
            torch.load(pulled, weights_only=True).values(), original.state_dict().values()
        )
    )
    model = Registry().load("model:1")
    x = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        same_output = torch.equal(model(x), original(x))
    print(f"pulled file {pulled.name} equals the original state dict: {same_file}")
    print(
        f"Registry().load('model:1') -> {type(model).__name__}; same output as the original: {same_output}"
    )
    if not (same_file and same_output):
        sys.exit("the round trip did not reproduce the original model")
    print("ok")


if __name__ == "__main__":
    main()
