"""The `registry` command: the installed executable (subprocess) and click's CliRunner (in-process).

Subprocess calls cost 2-3 s each when they import torch, so the real command is
exercised by a few combined tests; everything else goes through CliRunner.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from importlib.metadata import version as dist_version
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import assert_same_state, make_model, run_cli
from safetensors.torch import load_file

from registry import Registry
from registry.cli import cli

#: Tests using `home` or `reg` run on SQLite + a folder and on PostgreSQL + S3 (conftest.py).
BACKENDS = ("local", "team")


def invoke(*args: str):
    """Run the CLI in-process; stdout and stderr are kept apart (click >= 8.2)."""
    result = CliRunner().invoke(cli, list(args), prog_name="registry")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def ok(*args: str):
    result = invoke(*args)
    assert result.exit_code == 0, f"registry {' '.join(args)} exited {result.exit_code}:\n{result.stderr}"
    return result


def changed_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same keys and shapes with a different head bias: a different version."""
    out = OrderedDict(state)
    out["fc.bias"] = torch.arange(out["fc.bias"].numel(), dtype=out["fc.bias"].dtype)
    return out


# -- the installed command, in a subprocess ------------------------------------------


# local_only: 15-28 s on the team backend, whose installed-command push, pull and
# refusals tests/test_object_store.py runs (progress bars, readers, mirror).
@pytest.mark.local_only
def test_installed_command_push_dedup_and_pull(home: Path, tmp_path: Path, resnet18_pth: Path,
                                               resnet18_state):
    # First push: the ref on stdout, a summary on stderr.
    first = run_cli("push", str(resnet18_pth), "--arch", "resnet18", check=True)
    assert first.stdout == "model:1\n"
    assert "pushed model:1" in first.stderr and "resnet18" in first.stderr

    # Different weights under the same name (given with --name): version 2.
    changed = changed_state(resnet18_state)
    other = tmp_path / "changed.pth"
    torch.save(changed, other)
    second = run_cli("push", str(other), "--arch", "resnet18", "--name", "model", check=True)
    assert second.stdout == "model:2\n"

    # Identical weights again: the existing ref, and stderr says nothing new was made.
    again = run_cli("push", str(resnet18_pth), "--arch", "resnet18", check=True)
    assert again.stdout == "model:1\n"
    assert "already stored as model:1" in again.stderr and "no new version" in again.stderr
    with Registry(home=home) as reg:
        assert [mv.ref for mv in reg.list()] == ["model:2", "model:1"]

    # pull with no -o writes NAME-vVERSION.pth in the current folder.
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    pulled = run_cli("pull", "model:1", cwd=out_dir, check=True)
    target = out_dir / "model-v1.pth"
    assert Path(pulled.stdout.strip()) == target
    assert sorted(p.name for p in out_dir.iterdir()) == ["model-v1.pth"]
    assert_same_state(torch.load(target, weights_only=True), resnet18_state)

    # pull -o x.safetensors --json: safetensors by suffix, JSON report on stdout.
    st_path = tmp_path / "out.safetensors"
    report = json.loads(run_cli("pull", "model:2", "-o", str(st_path), "--json", check=True).stdout)
    assert report["ref"] == "model:2"
    assert report["format"] == "safetensors"
    assert Path(report["path"]) == st_path
    assert report["digest"].startswith("sha256:") and len(report["digest"]) == len("sha256:") + 64
    assert report["total_bytes"] == sum(t.numel() * t.element_size() for t in changed.values())
    loaded = load_file(st_path)
    assert_same_state({k: loaded[k] for k in changed}, changed)
    assert set(loaded) == set(changed)


def test_installed_command_help_version_and_db(home: Path):
    helped = run_cli("--help")
    assert helped.returncode == 0
    for command in ("push", "pull", "list", "show", "archs", "db"):
        assert command in helped.stdout

    versioned = run_cli("--version")
    assert versioned.returncode == 0
    assert versioned.stdout.strip() == f"registry, version {dist_version('registry')}"

    upgraded = run_cli("db", "upgrade", check=True)
    assert upgraded.stdout.strip() == "0005"
    assert "upgraded database schema from empty to 0005" in upgraded.stderr
    current = run_cli("db", "current", "--json", check=True)
    assert json.loads(current.stdout) == {"current": "0005", "required": "0005", "up_to_date": True}


# -- in-process (CliRunner) -------------------------------------------------------------


def test_push_records_name_tags_arch_args_description(home: Path, tmp_path: Path):
    model = make_model("resnet18", seed=1, num_classes=10)
    path = tmp_path / "cifar.pth"
    torch.save(model.state_dict(), path)

    pushed = ok("push", str(path), "--arch", "resnet18", "--name", "vision/cifar-net",
                "--arch-arg", "num_classes=10", "--tag", "task=cls", "--tag", "epoch=3",
                "--description", "baseline run", "--json")
    data = json.loads(pushed.stdout)
    assert data["ref"] == "vision/cifar-net:1" and data["version"] == 1
    assert data["name"] == "vision/cifar-net"
    assert data["digest"].startswith("sha256:") and len(data["digest"]) == 7 + 64
    assert data["arch"] == "resnet18"
    assert data["arch_kwargs"] == {"num_classes": 10}  # a JSON number, not the string "10"
    assert data["tags"] == {"task": "cls", "epoch": "3"}
    assert data["description"] == "baseline run"
    assert data["created"] is True and data["bytes_written"] > 0
    assert data["tensor_count"] == len(model.state_dict())
    assert "tensors" not in data

    shown = json.loads(ok("show", "vision/cifar-net:1", "--json").stdout)
    assert shown["digest"] == data["digest"]
    assert shown["arch_kwargs"] == {"num_classes": 10}
    assert shown["tags"] == {"task": "cls", "epoch": "3"}
    assert shown["description"] == "baseline run"
    assert shown["source_format"] == "pth"
    assert [t["name"] for t in shown["tensors"]] == list(model.state_dict())
    by_name = {t["name"]: t for t in shown["tensors"]}
    assert by_name["fc.weight"]["shape"] == [10, 512]
    assert by_name["fc.weight"]["dtype"] == "float32"
    assert by_name["bn1.num_batches_tracked"]["dtype"] == "int64"
    assert all(t["digest"].startswith("sha256:") and len(t["digest"]) == 7 + 64 for t in shown["tensors"])

    # The stored arguments rebuild the right head.
    with Registry(home=home) as reg:
        assert reg.load("vision/cifar-net:1").fc.out_features == 10


def test_push_json_for_an_existing_version(home: Path, resnet18_pth: Path):
    first = json.loads(ok("push", str(resnet18_pth), "--arch", "resnet18", "--json").stdout)
    again = invoke("push", str(resnet18_pth), "--arch", "resnet18", "--json")
    assert again.exit_code == 0
    data = json.loads(again.stdout)
    assert data["ref"] == "model:1" and data["created"] is False and data["bytes_written"] == 0
    assert data["digest"] == first["digest"]


def test_list(home: Path, reg: Registry, resnet18_state):
    empty = ok("list")
    assert empty.stdout == "" and "no versions" in empty.stderr
    assert json.loads(ok("list", "--json").stdout) == []

    reg.push(resnet18_state, "alpha", arch="resnet18", tags={"task": "cls", "stage": "dev"})
    reg.push(changed_state(resnet18_state), "alpha", arch="resnet18", tags={"task": "cls"})
    reg.push(resnet18_state, "beta", arch="resnet18", tags={"task": "det"})

    table = ok("list").stdout.splitlines()
    assert table[0].split() == ["REF", "ARCH", "PARAMS", "SIZE", "DIGEST", "CREATED", "TAGS"]
    assert [line.split()[0] for line in table[1:]] == ["beta:1", "alpha:2", "alpha:1"]
    assert "task=det" in table[1] and "stage=dev" in table[3]

    only_alpha = ok("list", "alpha").stdout.splitlines()
    assert [line.split()[0] for line in only_alpha[1:]] == ["alpha:2", "alpha:1"]

    tagged = json.loads(ok("list", "--tag", "task=cls", "--json").stdout)
    assert [v["ref"] for v in tagged] == ["alpha:2", "alpha:1"]
    both = json.loads(ok("list", "--tag", "task=cls", "--tag", "stage=dev", "--json").stdout)
    assert [v["ref"] for v in both] == ["alpha:1"]
    assert json.loads(ok("list", "beta", "--tag", "task=cls", "--json").stdout) == []

    everything = json.loads(ok("list", "--json").stdout)
    assert [v["ref"] for v in everything] == ["beta:1", "alpha:2", "alpha:1"]
    for v in everything:
        assert v["digest"].startswith("sha256:")
        assert v["arch"] == "resnet18" and v["arch_kwargs"] == {}
        assert isinstance(v["version"], int) and "tensors" not in v
    assert everything[0]["tags"] == {"task": "det"}
    # Same weights under two names: same digest.
    assert everything[0]["digest"] == everything[2]["digest"] != everything[1]["digest"]


def test_show_human_output(home: Path, reg: Registry, resnet18_state):
    mv = reg.push(resnet18_state, "model", arch="resnet18", tags={"task": "cls"}, description="first")
    out = ok("show", "model:1").stdout
    lines = out.splitlines()
    assert lines[0] == "model:1"
    assert f"sha256:{mv.digest}" in out
    assert "resnet18()" in out
    assert "task=cls" in out and "first" in out
    header = next(i for i, line in enumerate(lines) if line.startswith("TENSOR"))
    names = [line.split()[0] for line in lines[header + 1:]]
    assert names == list(resnet18_state)
    fc = next(line for line in lines[header + 1:] if line.split()[0] == "fc.weight")
    assert "1000x512" in fc and "float32" in fc


def test_show_reference_forms(home: Path, reg: Registry, resnet18_state):
    v1 = reg.push(resnet18_state, "model", arch="resnet18")
    v2 = reg.push(changed_state(resnet18_state), "model", arch="resnet18")
    assert v1.digest[:8] != v2.digest[:8]

    def shown(ref: str) -> dict:
        return json.loads(ok("show", ref, "--json").stdout)

    assert shown(f"model@sha256:{v1.digest[:8]}")["ref"] == "model:1"
    assert shown(f"model@sha256:{v2.digest[:12].upper()}")["ref"] == "model:2"
    assert shown(f"model@sha256:{v1.digest}")["ref"] == "model:1"
    assert shown("model:latest")["ref"] == "model:2"
    assert shown("model")["ref"] == "model:2"
    assert shown("model:1")["digest"] == f"sha256:{v1.digest}"
    # The human form follows the same resolution.
    assert ok("show", f"model@sha256:{v1.digest[:8]}").stdout.splitlines()[0] == "model:1"


def test_pull_default_name_and_format_option(home: Path, reg: Registry, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, resnet18_state):
    reg.push(resnet18_state, "model", arch="resnet18")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    # --format safetensors without -o: NAME-vVERSION.safetensors in the cwd.
    result = ok("pull", "model", "--format", "safetensors")
    target = work / "model-v1.safetensors"
    assert Path(result.stdout.strip()) == target
    assert "wrote model:1" in result.stderr
    assert_same_state({k: v for k, v in sorted(load_file(target).items())},
                      {k: v for k, v in sorted(resnet18_state.items())})

    # --format wins over the suffix; --json reports it.
    odd = work / "weights.bin"
    report = json.loads(ok("pull", "model:1", "-o", str(odd), "--format", "safetensors", "--json").stdout)
    assert report["format"] == "safetensors" and Path(report["path"]) == odd
    assert set(load_file(odd)) == set(resnet18_state)

    # pth by default, readable by weights_only torch.load; --json without --format says pth.
    report = json.loads(ok("pull", "model:1", "-o", str(work / "plain.pth"), "--json").stdout)
    assert report["format"] == "pth" and report["ref"] == "model:1"
    assert_same_state(torch.load(work / "plain.pth", weights_only=True), resnet18_state)
    assert sorted(p.name for p in work.iterdir()) == ["model-v1.safetensors", "plain.pth", "weights.bin"]


# local_only: `registry archs` never opens a registry.
@pytest.mark.local_only
def test_archs(home: Path):
    rows = ok("archs").stdout.splitlines()
    assert rows[0].split() == ["ARCH", "SOURCE"]
    names = [row.split()[0] for row in rows[1:]]
    assert "resnet18" in names and "resnet34" in names
    assert names == sorted(names)
    listed = json.loads(ok("archs", "--json").stdout)
    assert {"name": "resnet18", "source": "torchvision"} in listed
    assert [a["name"] for a in listed] == names


# local_only: ends by asserting the SQLite file HOME/registry.db exists; the team backend's
# `db current` / `db upgrade` run in test_installed_command_help_version_and_db[team].
@pytest.mark.local_only
def test_db_current_and_upgrade(home: Path):
    fresh = ok("db", "current")
    assert fresh.stdout.strip() == "none (needs 0005: run `registry db upgrade`)"
    assert json.loads(ok("db", "current", "--json").stdout) == {
        "current": None, "required": "0005", "up_to_date": False,
    }
    first = ok("db", "upgrade")
    assert first.stdout.strip() == "0005"
    assert "from empty to 0005" in first.stderr
    assert ok("db", "current").stdout.strip() == "0005 (up to date)"
    again = ok("db", "upgrade")
    assert again.stdout.strip() == "0005" and "up to date" in again.stderr
    assert json.loads(ok("db", "upgrade", "--json").stdout) == {"before": "0005", "after": "0005"}
    assert (home / "registry.db").is_file()


def test_help_for_every_command():
    assert "REF is NAME" in ok("--help").stdout
    assert ok("-h").stdout == ok("--help").stdout
    for command in (["push"], ["pull"], ["list"], ["show"], ["archs"], ["db"], ["db", "upgrade"],
                    ["db", "current"]):
        result = ok(*command, "--help")
        assert result.stdout.startswith("Usage:")
    push_help = ok("push", "--help").stdout
    for option in ("--arch", "--name", "--tag", "--arch-arg", "--description", "--json"):
        assert option in push_help
