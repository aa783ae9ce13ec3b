"""What the speed work relies on: each shortcut must give the same answer as the long way.

Metadata commands skip torch and SQLAlchemy, pushes find stored tensors by a fast
checksum, loads copy a cached skeleton and check checksums. These tests pin down
that none of it changes a result; the timings live in benchmarks/run.py.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from conftest import IN_PROCESS, assert_same_state, make_model, run_cli

from registry import Registry, architectures
from registry.errors import InvalidArgumentError


def test_metadata_commands_never_import_torch_or_sqlalchemy(
    home: Path, reg: Registry, resnet18_state
):
    reg.push(resnet18_state, "m", arch="resnet18", tags={"stage": "dev"})
    commands = [
        ["list"],
        ["list", "m", "--tag", "stage=dev", "--json"],
        ["show", "m:1"],
        ["show", "m:latest", "--json"],
        ["tag", "m:1", "stage=prod", "owner=ana"],
        ["untag", "m:1", "owner"],
        ["alias", "m:1", "prod"],
        ["describe", "m:1", "first run"],
        ["log", "m"],
        ["log", "m:prod", "--json"],
    ]
    result = subprocess.run(
        [sys.executable, "-c", IN_PROCESS.format(commands=repr(commands))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "imported:"  # no torch, SQLAlchemy, Alembic
    assert reg.get("m:1").tags == {"stage": "prod"}


def test_tags_change_metadata_only(reg: Registry, resnet18_state):
    pushed = reg.push(resnet18_state, "m", arch="resnet18", tags={"stage": "dev"})
    tagged = reg.tag("m", {"stage": "prod", "owner": "ana"})
    assert tagged.ref == "m:1" and tagged.tags == {"owner": "ana", "stage": "prod"}
    assert [v.ref for v in reg.list(tags={"stage": "prod"})] == ["m:1"]
    assert reg.list(tags={"stage": "dev"}) == []
    untagged = reg.untag("m:1", ["owner"])
    assert untagged.tags == {"stage": "prod"}
    assert untagged.digest == pushed.digest
    assert_same_state(reg.load_state_dict("m:1"), resnet18_state)
    with pytest.raises(InvalidArgumentError, match="no tag 'owner'"):
        reg.untag("m:1", ["owner"])
    with pytest.raises(InvalidArgumentError):
        reg.tag("m:1", {"bad key": "x"})
    assert reg.get("m:1").tags == {"stage": "prod"}  # a refused edit changes nothing


def test_tag_and_untag_commands(home: Path, reg: Registry, resnet18_state):
    reg.push(resnet18_state, "m", arch="resnet18")
    tagged = run_cli("tag", "m:1", "stage=prod", "note=a b", check=True)
    assert tagged.stdout.strip() == "m:1"
    assert "note=a b, stage=prod" in tagged.stderr
    as_json = run_cli("untag", "m:latest", "note", "--json", check=True)
    assert json.loads(as_json.stdout)["tags"] == {"stage": "prod"}
    missing = run_cli("untag", "m:1", "nope")
    assert missing.returncode == 1 and missing.stderr.startswith("Error: m:1 has no tag 'nope'")
    malformed = run_cli("tag", "m:1", "novalue")
    assert malformed.returncode == 2 and "KEY=VALUE" in malformed.stderr.upper().replace(" ", "")


def _collide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every buffer gets the same checksum, as an adversary or bad luck could arrange."""
    import registry.pipelines.push

    monkeypatch.setattr(
        registry.pipelines.push, "checksum_many", lambda views: ["0" * 32] * len(views)
    )


def test_checksum_collisions_never_merge_different_tensors(
    reg: Registry, resnet18_state, monkeypatch: pytest.MonkeyPatch
):
    _collide(monkeypatch)
    first = reg.push(resnet18_state, "a", arch="resnet18")
    tuned = OrderedDict(resnet18_state)
    tuned["fc.weight"] = resnet18_state["fc.weight"] + 1
    second = reg.push(tuned, "b", arch="resnet18")
    # Only the changed tensor is new; everything else was confirmed byte for byte.
    assert second.pushed.tensors_written == 1
    for name, state, mv in (("a", resnet18_state, first), ("b", tuned, second)):
        stored = reg.get(f"{name}:1")
        for info in stored.tensors:
            raw = state[info.name].contiguous().view(-1).view(torch.uint8).numpy().tobytes()
            assert info.digest == hashlib.sha256(raw).hexdigest(), info.name
        assert_same_state(reg.load_state_dict(f"{name}:1", verify="sha256"), state)
        assert stored.digest == mv.digest


def test_identical_tensors_within_a_push_are_stored_once(reg: Registry):
    zeros = torch.zeros(1000)
    state = make_model("resnet18").state_dict()
    for key in ("bn1.running_mean", "layer1.0.bn1.running_mean"):
        state[key] = zeros[:64].clone()
    mv = reg.push(state, "m", arch="resnet18")
    digests = {t.name: t.digest for t in reg.get("m:1").tensors}
    assert digests["bn1.running_mean"] == digests["layer1.0.bn1.running_mean"]
    # The report counts the version's tensors; the pack holds each distinct content once.
    assert mv.pushed.tensors_written == len(digests)
    sizes = {t.digest: t.nbytes for t in reg.get("m:1").tensors}
    assert mv.pushed.bytes_written < sum(t.nbytes for t in reg.get("m:1").tensors)
    assert mv.pushed.bytes_written <= sum(sizes.values()) + 64 * (len(sizes) + 40)


def test_each_load_is_an_independent_module(reg: Registry, resnet18_state):
    reg.push(resnet18_state, "m", arch="resnet18")
    first, second = reg.load("m:1"), reg.load("m:1")
    assert first is not second
    for a, b in zip(first.modules(), second.modules()):
        assert a is not b
    first.register_forward_hook(lambda *args: None)
    assert not any(m._forward_hooks for m in second.modules())
    first.fc.out_features = 3  # an attribute edit on one copy stays there
    assert second.fc.out_features == 1000
    with torch.no_grad():
        first.conv1.weight.mul_(0)
    assert torch.equal(second.conv1.weight, resnet18_state["conv1.weight"])
    third = reg.load("m:1")
    assert torch.equal(third.conv1.weight, resnet18_state["conv1.weight"])
    for model in (second, third):
        params = list(model.named_parameters())
        assert params and all(
            isinstance(p, torch.nn.Parameter) and p.requires_grad for _, p in params
        )
        assert not model.training


class _TiedNet(torch.nn.Module):
    def __init__(self, size: int = 10):
        super().__init__()
        self.embed = torch.nn.Embedding(size, 4)
        self.head = torch.nn.Linear(4, size, bias=False)
        self.head.weight = self.embed.weight


def test_tied_weights_stay_tied_on_every_load():
    arch = architectures.Architecture(name="tied-fast-path", source="test", builder=_TiedNet)
    original = _TiedNet()
    loads = [architectures.instantiate(arch, {}, original.state_dict()) for _ in range(3)]
    for module in loads:  # the first builds the skeleton, the others copy it
        assert module.head.weight is module.embed.weight
        assert isinstance(module.head.weight, torch.nn.Parameter)
        assert torch.equal(module.head.weight, original.embed.weight)
    assert loads[1].head.weight is not loads[2].head.weight


def test_outputs_equal_after_cached_loads(reg: Registry):
    original = make_model("mobilenet_v3_small", seed=3)
    reg.push(original, "m", arch="mobilenet_v3_small")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = original(x)
        for _ in range(2):
            assert torch.equal(reg.load("m:1")(x), expected)


def test_verify_modes(reg: Registry, resnet18_state):
    reg.push(resnet18_state, "m", arch="resnet18")
    for mode in (True, "sha256", False):
        assert_same_state(reg.load_state_dict("m:1", verify=mode), resnet18_state)
    with pytest.raises(InvalidArgumentError, match="verify="):
        reg.load("m:1", verify="md5")
