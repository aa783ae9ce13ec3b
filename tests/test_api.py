"""The Python API end to end: push, get, list, load, load_state_dict, pull."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from conftest import assert_same_state, make_model
from safetensors.torch import load_file, save_file

from registry import ModelVersion, Registry
from registry.errors import InvalidArgumentError, ModelNotFoundError

#: Tests using `home` or `reg` run on SQLite + a folder and on PostgreSQL + S3 (conftest.py).
BACKENDS = ("local", "team")


def test_push_records_metadata(reg: Registry, resnet18_pth: Path, resnet18_state):
    mv = reg.push(
        resnet18_pth, arch="resnet18", tags={"task": "cls", "epoch": 3}, description="baseline"
    )
    assert isinstance(mv, ModelVersion)
    assert (mv.name, mv.version, mv.ref) == ("model", 1, "model:1")
    assert mv.arch == "resnet18" and mv.arch_kwargs == {}
    assert mv.tags == {"task": "cls", "epoch": "3"}
    assert mv.description == "baseline"
    assert mv.tensor_count == len(resnet18_state)
    assert mv.total_bytes == sum(t.numel() * t.element_size() for t in resnet18_state.values())
    assert mv.param_count == sum(p.numel() for p in make_model("resnet18").parameters())
    assert mv.torch_version == torch.__version__
    assert mv.source_format == "pth"
    assert len(mv.digest) == 64
    assert mv.pushed.created and mv.pushed.bytes_written > 0

    got = reg.get("model:1")
    assert [t.name for t in got.tensors] == list(resnet18_state)
    first = got.tensors[0]
    assert first.dtype == "float32" and list(first.shape) == list(resnet18_state[first.name].shape)
    assert got.created_at.tzinfo is not None


def test_versions_count_up_per_name_and_dedup(reg: Registry, resnet18_state):
    a = reg.push(resnet18_state, "net", arch="resnet18")
    changed = OrderedDict(resnet18_state)
    changed["fc.bias"] = torch.ones_like(changed["fc.bias"])
    b = reg.push(changed, "net", arch="resnet18")
    again = reg.push(dict(changed), "net", arch="resnet18")
    other = reg.push(resnet18_state, "other", arch="resnet18")
    assert (a.version, b.version) == (1, 2)
    assert again.version == 2 and again.pushed.created is False and again.pushed.bytes_written == 0
    assert other.ref == "other:1" and other.digest == a.digest
    # Tensors shared with net:1 are not written again for other:1 or net:2.
    assert other.pushed.bytes_written == 0
    assert b.pushed.tensors_written == 1
    assert [mv.ref for mv in reg.list()] == ["other:1", "net:2", "net:1"]
    assert [mv.ref for mv in reg.list("net")] == ["net:2", "net:1"]


# local_only: what this checks does not depend on the backend (team: covered by the
# other [team] tests), and the team variant costs seconds of suite time.
@pytest.mark.local_only
def test_same_digest_from_pth_and_safetensors(reg: Registry, tmp_path: Path, resnet18_state):
    torch.save(resnet18_state, tmp_path / "a.pth")
    save_file({k: v.contiguous() for k, v in resnet18_state.items()}, tmp_path / "b.safetensors")
    a = reg.push(tmp_path / "a.pth", arch="resnet18")
    b = reg.push(str(tmp_path / "b.safetensors"), arch="resnet18")
    assert a.digest == b.digest
    assert b.source_format == "safetensors"


def test_load_gives_same_outputs(reg: Registry, resnet18_pth: Path):
    original = make_model("resnet18")
    reg.push(resnet18_pth, arch="resnet18")
    model = reg.load("model:1")
    assert isinstance(model, torch.nn.Module) and not model.training
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in model.parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))
    # Training the loaded model must never change what is stored.
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert_same_state(reg.load_state_dict("model:1"), original.state_dict())


def test_load_state_dict_and_references(reg: Registry, resnet18_state):
    mv = reg.push(resnet18_state, "net", arch="resnet18")
    state = reg.load_state_dict("net:1")
    assert_same_state(state, resnet18_state)
    for ref in [
        "net",
        "net:latest",
        "net:1",
        f"net@sha256:{mv.digest[:8]}",
        f"net@sha256:{mv.digest}",
    ]:
        assert reg.get(ref).ref == "net:1"


# local_only: what this checks does not depend on the backend (team: covered by the
# other [team] tests), and the team variant costs seconds of suite time.
@pytest.mark.local_only
def test_checkpoint_wrappers(reg: Registry, tmp_path: Path, resnet18_state):
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"epoch": 7, "state_dict": resnet18_state, "optimizer": {"lr": 0.1}}, wrapped)
    mv = reg.push(wrapped, arch="resnet18")
    assert any("'state_dict'" in note for note in mv.pushed.notes)
    assert mv.name == "ckpt"

    model_key = tmp_path / "m.pth"
    torch.save({"model": resnet18_state}, model_key)
    assert reg.push(model_key, arch="resnet18").pushed.notes

    ddp = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in resnet18_state.items()}, ddp)
    mv = reg.push(ddp, arch="resnet18")
    assert any("module." in note for note in mv.pushed.notes)
    assert mv.digest == reg.get("ckpt:1").digest
    assert_same_state(reg.load_state_dict("ddp:1"), resnet18_state)


def test_finetune_with_num_classes(reg: Registry, tmp_path: Path):
    tuned = make_model("resnet18", seed=3, num_classes=10)
    torch.save(tuned.state_dict(), tmp_path / "tuned.pth")
    mv = reg.push(tmp_path / "tuned.pth", arch="resnet18", arch_kwargs={"num_classes": 10})
    assert mv.arch_kwargs == {"num_classes": 10}
    model = reg.load("tuned:1")
    assert model.fc.out_features == 10
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), tuned(x))


def test_push_module_object(reg: Registry):
    module = make_model("resnet18", seed=5)
    mv = reg.push(module, "from-module", arch="resnet18")
    assert mv.source_format == "module"
    assert_same_state(reg.load_state_dict("from-module:1"), module.state_dict())
    with pytest.raises(InvalidArgumentError, match="name="):
        reg.push(module, arch="resnet18")


def test_pull_formats(reg: Registry, tmp_path: Path, resnet18_state, monkeypatch):
    reg.push(resnet18_state, "net", arch="resnet18")
    monkeypatch.chdir(tmp_path)
    default = reg.pull("net:1")
    assert default == tmp_path / "net-v1.pth"
    assert_same_state(torch.load(default, weights_only=True), resnet18_state)
    st = reg.pull("net", tmp_path / "out" / "w.safetensors")
    loaded = load_file(st)  # safetensors sorts keys; compare key by key
    assert_same_state({k: loaded[k] for k in resnet18_state}, dict(resnet18_state))
    forced = reg.pull("net", tmp_path / "w.bin", format="safetensors")
    assert len(load_file(forced)) == len(resnet18_state)
    # No temporary files are left next to the outputs.
    assert not [p for p in tmp_path.rglob(".*.tmp")]
    assert oct(default.stat().st_mode & 0o777) != oct(0o600)


# local_only: what this checks does not depend on the backend (team: covered by the
# other [team] tests), and the team variant costs seconds of suite time.
@pytest.mark.local_only
def test_nested_names_pull_to_flat_filename(
    reg: Registry, tmp_path: Path, resnet18_state, monkeypatch
):
    reg.push(resnet18_state, "team/vision/resnet", arch="resnet18")
    monkeypatch.chdir(tmp_path)
    path = reg.pull("team/vision/resnet:1")
    assert path.parent == tmp_path and path.name == "team-vision-resnet-v1.pth"


def test_bfloat16_and_noncontiguous_round_trip(reg: Registry, resnet18_state):
    state = OrderedDict(
        (k, v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in resnet18_state.items()
    )
    state["fc.weight"] = state["fc.weight"].t().contiguous().t()  # non-contiguous, same shape
    assert not state["fc.weight"].is_contiguous()
    reg.push(state, "half", arch="resnet18")
    assert_same_state(reg.load_state_dict("half:1"), state)
    model = reg.load("half")
    assert model.conv1.weight.dtype == torch.bfloat16


class _TiedNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight


def test_tied_weights_stay_tied():
    from registry import architectures

    arch = architectures.Architecture(name="tied", source="test", builder=_TiedNet)
    original = _TiedNet()
    module = architectures.instantiate(arch, {}, original.state_dict())
    assert module.head.weight is module.embed.weight
    assert isinstance(module.head.weight, torch.nn.Parameter)
    assert torch.equal(module.head.weight, original.embed.weight)


# local_only: asserts where the local layout puts things (HOME/registry.db, HOME/objects/packs).
@pytest.mark.local_only
def test_registry_home_from_environment(home: Path, resnet18_state):
    with Registry() as reg:
        reg.push(resnet18_state, "env", arch="resnet18")
    assert (home / "registry.db").is_file()
    assert list((home / "objects" / "packs").rglob("*.pack"))
    with Registry(home=os.fspath(home)) as again:
        assert again.get("env").ref == "env:1"


def test_unknown_model_suggests_close_name(reg: Registry, resnet18_state):
    reg.push(resnet18_state, "resnet", arch="resnet18")
    with pytest.raises(ModelNotFoundError, match="did you mean resnet"):
        reg.get("resnt")


def test_metadata_values_json_cannot_hold_are_left_out(reg: Registry):
    """NaN and infinities in a state dict's ``_metadata`` (PostgreSQL's JSON refuses
    them) are left out with a note; the push works on both backends, and the rest of
    the metadata comes back."""
    torch.manual_seed(0)
    state = torch.nn.Linear(4, 2).state_dict()
    state._metadata = OrderedDict(  # type: ignore[attr-defined]
        [("", {"version": 1, "nan": float("nan"), "inf": float("-inf"), "lr": 0.5})]
    )
    mv = reg.push(
        state, "meta", arch="torch.nn:Linear", arch_kwargs={"in_features": 4, "out_features": 2}
    )
    assert any("_metadata" in note for note in mv.pushed.notes)
    loaded = reg.load_state_dict(mv.ref)
    assert loaded._metadata == {"": {"version": 1, "lr": 0.5}}
