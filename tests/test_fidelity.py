"""Fidelity: what a user pushes is what they get back, by torch's own rules.

Each test is one everyday input that once came back different, and its siblings:
storage sharing (equal values are not the same tensor; tied weights stay tied), the
state dict's ``_metadata`` and a safetensors file's metadata, the check by torch's own
``load_state_dict``, wrapper prefixes, healing a damaged store, and one-line refusals.
"""

from __future__ import annotations

import glob
import os
import sqlite3
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torchvision
from archs_helper import fidelity
from conftest import make_model, run_cli
from safetensors import safe_open
from safetensors.torch import save_file

from registry import Registry
from registry.errors import ArchitectureMismatchError, InvalidArgumentError, NotACheckpointError

TESTS_DIR = Path(__file__).parent


def storage_groups(state) -> list[list[str]]:
    """Keys grouped by the storage their tensors share (torch's notion); empty ones alone."""
    groups: dict[object, list[str]] = {}
    for key, value in state.items():
        ident = value.untyped_storage()._cdata if value.numel() else ("empty", key)
        groups.setdefault(ident, []).append(key)
    return sorted(sorted(g) for g in groups.values())


def fresh_resnet18() -> torch.nn.Module:
    """A freshly initialised resnet18: every BatchNorm weight ones, every bias zeros."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)


def sgd_step(model: torch.nn.Module, seed: int = 1) -> None:
    torch.manual_seed(seed)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = model(torch.randn(4, 3, 64, 64)).logsumexp(dim=1).mean()
    loss.backward()
    optimizer.step()


def flip_byte(home: Path, digest: str, at: int = 100) -> None:
    """Damage one byte of a stored tensor in place (same file size)."""
    with sqlite3.connect(home / "registry.db") as db:
        pack, offset = db.execute(
            'select pack_id, "offset" from blobs where digest = ?', (digest,)
        ).fetchone()
    path = Path(glob.glob(str(home / "objects" / "packs" / "*" / f"{pack}.pack"))[0])
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(offset + at)
        byte = f.read(1)
        f.seek(offset + at)
        f.write(bytes([byte[0] ^ 0xFF]))


# -- 1. dedup is never visible --------------------------------------------------------------


def test_equal_values_come_back_as_independent_tensors(reg: Registry):
    model = fresh_resnet18()
    state = model.state_dict()
    assert torch.equal(state["bn1.bias"], state["layer1.0.bn1.bias"])  # the trap
    reg.push(state, "r", arch="resnet18")

    loaded = reg.load_state_dict("r:1")
    assert storage_groups(loaded) == storage_groups(state)  # nothing shared, as in the source
    loaded["bn1.bias"].add_(1)
    assert torch.equal(loaded["layer1.0.bn1.bias"], state["layer1.0.bn1.bias"])
    loaded["bn1.weight"].mul_(3)
    assert torch.equal(loaded["bn1.running_var"], state["bn1.running_var"])
    # The store was not touched: a second load is as pushed.
    assert torch.equal(reg.load_state_dict("r:1")["bn1.bias"], state["bn1.bias"])


def test_a_loaded_model_trains_exactly_like_the_original(reg: Registry):
    original = fresh_resnet18()
    reg.push(original.state_dict(), "r", arch="resnet18")
    loaded = reg.load("r:1")
    bn = loaded.bn1
    assert bn.weight.untyped_storage().data_ptr() != bn.running_var.untyped_storage().data_ptr()

    sgd_step(original)
    sgd_step(loaded)
    after, got = original.state_dict(), loaded.state_dict()
    assert list(after) == list(got)
    for key in after:
        assert torch.equal(after[key], got[key]), key


def test_a_pulled_pth_keeps_separate_storages_separate(reg: Registry, tmp_path: Path):
    state = fresh_resnet18().state_dict()
    reg.push(state, "r", arch="resnet18")
    pulled = torch.load(reg.pull("r:1", tmp_path / "r.pth"), weights_only=True)
    assert storage_groups(pulled) == storage_groups(state)
    pulled["bn1.bias"].add_(1)
    assert not pulled["layer1.0.bn1.bias"].any()


def test_tied_weights_come_back_tied_everywhere(reg: Registry, tmp_path: Path):
    torch.manual_seed(0)
    lm = fidelity.TiedLM()
    state = lm.state_dict()
    assert storage_groups(state) != [[k] for k in sorted(state)]  # tied in the source
    reg.push(state, "lm", arch="archs_helper.fidelity:TiedLM")

    loaded = reg.load_state_dict("lm:1")
    assert storage_groups(loaded) == storage_groups(state)
    loaded["embed.weight"].add_(1)
    assert torch.equal(loaded["head.weight"], loaded["embed.weight"])

    pulled = torch.load(reg.pull("lm:1", tmp_path / "lm.pth"), weights_only=True)
    assert storage_groups(pulled) == storage_groups(state)

    model = reg.load("lm:1")
    assert model.head.weight is model.embed.weight
    model.train()
    tokens = torch.randint(0, 50, (3, 7))
    model(tokens).sum().backward()
    with torch.no_grad():
        model.embed.weight.sub_(0.1 * model.embed.weight.grad)
    assert torch.equal(model.head.weight, model.embed.weight)


def test_keys_that_are_views_of_one_storage_keep_their_places(reg: Registry, tmp_path: Path):
    """A fused qkv weight saved as three slices: one storage, three offsets."""
    torch.manual_seed(0)
    qkv = torch.randn(12, 4)
    other = torch.randn(4, 4)
    state = OrderedDict(
        [
            ("q", qkv[0:4]),
            ("k", qkv[4:8]),
            ("v", qkv[8:12]),
            ("t", other.t()),  # non-contiguous, alone
            ("same_as_q", qkv[0:4].clone()),  # equal values, own storage
        ]
    )
    # No architecture has these keys: push them under a state-dict-shaped module.
    entries = [[k, "float32", list(v.shape), "buffer", None] for k, v in state.items()]
    reg.push(state, "views", arch="archs_helper.models:StateBag", arch_kwargs={"entries": entries})
    for loaded in (
        reg.load_state_dict("views:1"),
        torch.load(reg.pull("views:1", tmp_path / "v.pth"), weights_only=True),
    ):
        assert storage_groups(loaded) == storage_groups(state)
        for key in ("q", "k", "v"):
            assert loaded[key].storage_offset() == state[key].storage_offset()
            assert loaded[key].stride() == state[key].stride()
            assert torch.equal(loaded[key], state[key])
        assert torch.equal(loaded["t"], state["t"])
        loaded["same_as_q"].zero_()
        assert torch.equal(loaded["q"], state["q"])


def test_tied_and_untied_weights_are_different_versions(reg: Registry):
    torch.manual_seed(0)
    tied = fidelity.TiedLM().state_dict()
    untied = OrderedDict((k, v.clone()) for k, v in tied.items())
    untied._metadata = tied._metadata
    a = reg.push(tied, "lm", arch="archs_helper.fidelity:TiedLM")
    b = reg.push(untied, "lm", arch="archs_helper.fidelity:TiedLM")
    assert b.pushed.created and a.digest != b.digest
    assert b.pushed.bytes_written == 0  # the bytes are the same: stored once
    assert storage_groups(reg.load_state_dict("lm:2")) == storage_groups(untied)


def test_verify_counts_the_versions_tensors(reg: Registry, home: Path):
    state = fresh_resnet18().state_dict()
    mv = reg.push(state, "r", arch="resnet18")
    report = reg.verify("r:1")
    assert report.ok and report.checked == mv.tensor_count == len(state)
    assert report.checked_bytes == mv.total_bytes
    zeros = reg.get("r:1").tensors
    digest = next(t.digest for t in zeros if t.name == "bn1.bias")
    users = [t.name for t in zeros if t.digest == digest]
    assert len(users) > 1
    flip_byte(home, digest, at=0)
    report = reg.verify("r:1")
    assert report.affected("corrupt") == len(users)
    result = run_cli("verify", "r:1")
    assert result.returncode == 1
    assert f"{len(users)} corrupt" in result.stderr


# -- 2. what the state dict carried besides tensors ----------------------------------------


def test_module_versions_survive_push_load_and_pull(reg: Registry, tmp_path: Path):
    torch.manual_seed(0)
    model = torchvision.models.mnasnet0_5(weights=None).eval()
    path = tmp_path / "mnas.pth"
    torch.save(model.state_dict(), path)
    reg.push(path, "mnas", arch="mnasnet0_5")

    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(reg.load("mnas:1")(x), model(x))
    loaded = reg.load_state_dict("mnas:1")
    assert loaded._metadata == model.state_dict()._metadata
    pulled = torch.load(reg.pull("mnas:1", tmp_path / "out.pth"), weights_only=True)
    assert pulled._metadata == model.state_dict()._metadata
    fresh = torchvision.models.mnasnet0_5(weights=None).eval()
    fresh.load_state_dict(pulled)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    # Loading does not change what is stored (torch writes into the metadata it is given).
    assert reg.load_state_dict("mnas:1")._metadata == model.state_dict()._metadata


def test_weights_without_module_versions_say_what_load_assumes(reg: Registry, tmp_path: Path):
    torch.manual_seed(0)
    model = torchvision.models.mnasnet0_5(weights=None).eval()
    path = tmp_path / "mnas.safetensors"
    save_file(model.state_dict(), path)
    mv = reg.push(path, "mnas", arch="mnasnet0_5")
    (note,) = [n for n in mv.pushed.notes if "module versions" in n]
    assert "refuses weights without them" in note and torch.__version__ in note
    assert not hasattr(reg.load_state_dict("mnas:1"), "_metadata")  # as pushed: none
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(reg.load("mnas:1")(x), model(x))

    resnet = tmp_path / "r.safetensors"
    save_file(make_model("resnet18").state_dict(), resnet)
    result = run_cli("push", str(resnet), "--arch", "resnet18")
    assert result.returncode == 0, result.stderr
    assert "note: the weights carry no module versions" in result.stderr
    assert "load passes none, as torch's load_state_dict does" in result.stderr


def test_a_module_that_refuses_without_versions_is_refused_where_it_has_wrong_ones(
    reg: Registry,
):
    state = fidelity.Versioned().state_dict()
    state._metadata[""] = {"version": 7}
    with pytest.raises(ArchitectureMismatchError, match="version should be 1 or 2, not 7"):
        reg.push(state, "v", arch="archs_helper.fidelity:Versioned")
    plain = dict(state)  # no _metadata: the current version is assumed and recorded
    mv = reg.push(plain, "v", arch="archs_helper.fidelity:Versioned")
    assert any("refuses weights without them" in n for n in mv.pushed.notes)
    reg.load("v:1")


def test_safetensors_metadata_is_kept_with_format_pt(reg: Registry, tmp_path: Path):
    state = make_model("resnet18").state_dict()
    path = tmp_path / "r.safetensors"
    save_file(state, path, metadata={"format": "pt", "author": "me", "registry.ref": "old:9"})
    reg.push(path, "r", arch="resnet18")
    pulled = reg.pull("r:1", tmp_path / "out.safetensors")
    with safe_open(pulled, "pt") as f:
        header = f.metadata()
    assert header["format"] == "pt" and header["author"] == "me"
    assert header["registry.ref"] == "r:1"  # the registry's keys describe this version
    assert header["registry.arch"] == "resnet18"

    # Weights pushed from a .pth get format: pt too, which Hugging Face loaders require.
    torch.save(state, tmp_path / "r.pth")
    reg.push(tmp_path / "r.pth", "p", arch="resnet18")
    pulled = reg.pull("p:1", tmp_path / "p.safetensors")
    with safe_open(pulled, "pt") as f:
        assert f.metadata()["format"] == "pt"
        assert list(f.keys()) == sorted(state)
    from safetensors.torch import load_file

    back = load_file(pulled)
    for key, value in state.items():
        assert torch.equal(back[key], value)


def test_a_pulled_safetensors_file_of_tied_weights_loads(reg: Registry, tmp_path: Path):
    torch.manual_seed(0)
    state = fidelity.TiedLM().state_dict()
    reg.push(state, "lm", arch="archs_helper.fidelity:TiedLM")
    from safetensors.torch import load_file

    back = load_file(reg.pull("lm:1", tmp_path / "lm.safetensors"))
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value)


# -- 3. torch's own rules, not a stricter copy ----------------------------------------------


def test_a_checkpoint_from_before_num_batches_tracked_is_accepted(reg: Registry, tmp_path):
    state = make_model("resnet18").state_dict()
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(state) - len(old) == 20
    torchvision.models.resnet18(weights=None).load_state_dict(old, strict=True)  # torch: fine
    path = tmp_path / "old.pth"
    torch.save(old, path)
    mv = reg.push(path, "old", arch="resnet18")
    assert mv.tensor_count == len(old)
    model = reg.load("old:1")
    assert int(model.bn1.num_batches_tracked) == 0
    x = torch.randn(1, 3, 64, 64)
    reference = make_model("resnet18")
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_what_torch_refuses_push_refuses_with_the_same_facts(reg: Registry, home: Path):
    """The sibling: the same keys, but _metadata says BatchNorm version 2, which has
    num_batches_tracked, so torch reports the 20 keys missing."""
    state = make_model("resnet18").state_dict()
    for key in [k for k in state if k.endswith("num_batches_tracked")]:
        del state[key]
    with pytest.raises(RuntimeError, match="Missing key"):
        torchvision.models.resnet18(weights=None).load_state_dict(state)
    with pytest.raises(ArchitectureMismatchError, match="20 missing keys") as info:
        reg.push(state, "old", arch="resnet18")
    assert len(info.value.missing) == 20
    assert all(k.endswith("num_batches_tracked") for k in info.value.missing)
    assert reg.list() == []


def test_extra_state_goes_through_the_modules_own_code(reg: Registry):
    module = fidelity.WithExtraState()
    module.calls.fill_(41)
    reg.push(module.state_dict(), "extra", arch="archs_helper.fidelity:WithExtraState")
    loaded = reg.load("extra:1")
    assert int(loaded.calls) == 41


def test_num_classes_hint_only_for_a_head(reg: Registry):
    cifar = make_model("resnet18", num_classes=10).state_dict()
    with pytest.raises(ArchitectureMismatchError, match="the head fits num_classes=10"):
        reg.push(cifar, "c", arch="resnet18", arch_kwargs={"num_classes": 5})

    # Two tensors that differ in their first dimension by one common size, but are not
    # the head: no hint (and no inference).
    odd = make_model("resnet18").state_dict()
    odd["layer4.1.bn2.weight"] = torch.ones(10)
    odd["layer4.1.bn2.bias"] = torch.zeros(10)
    with pytest.raises(ArchitectureMismatchError) as info:
        reg.push(odd, "odd", arch="resnet18")
    assert "num_classes" not in str(info.value)

    # An architecture without num_classes: no hint either.
    tiny = fidelity.HoldsModule(width=8).state_dict()
    tiny["module.2.weight"] = torch.zeros(10, 8)
    tiny["module.2.bias"] = torch.zeros(10)
    with pytest.raises(ArchitectureMismatchError) as info:
        reg.push(tiny, "tiny", arch="archs_helper.fidelity:HoldsModule")
    assert "num_classes" not in str(info.value)
    assert reg.list() == []


# -- 4. wrapper prefixes ---------------------------------------------------------------------


def _prefixed(state, prefix: str) -> OrderedDict:
    out = OrderedDict((prefix + k, v) for k, v in state.items())
    out._metadata = OrderedDict(
        [("", {"version": 1})] + [((prefix + k).rstrip("."), v) for k, v in state._metadata.items()]
    )
    return out


def test_compiled_ddp_prefixes_are_stripped_with_a_note(reg: Registry):
    model = make_model("resnet18")
    x = torch.randn(1, 3, 64, 64)
    for prefix in ("module.", "_orig_mod.", "_orig_mod.module.", "module._orig_mod."):
        name = "p" + prefix.replace(".", "").replace("_", "")
        mv = reg.push(_prefixed(model.state_dict(), prefix), name, arch="resnet18")
        assert f"stripped the {prefix!r} prefix from 122 keys" in mv.pushed.notes
        loaded = reg.load_state_dict(mv.ref)
        assert list(loaded) == list(model.state_dict())
        assert loaded._metadata == model.state_dict()._metadata  # re-rooted too
        with torch.no_grad():
            assert torch.equal(reg.load(mv.ref)(x), model(x))


def test_identification_sees_through_a_wrapper_prefix(reg: Registry):
    state = _prefixed(make_model("resnet18").state_dict(), "_orig_mod.module.")
    assert reg.identify(state)[0].name == "resnet18"
    mv = reg.push(state, "found")
    assert mv.arch == "resnet18"
    assert any("stripped the '_orig_mod.module.' prefix" in n for n in mv.pushed.notes)


def test_a_child_really_named_module_keeps_its_keys(reg: Registry):
    net = fidelity.HoldsModule()
    state = net.state_dict()
    assert all(k.startswith("module.") for k in state)
    mv = reg.push(state, "holds", arch="archs_helper.fidelity:HoldsModule")
    assert not any("stripped" in n for n in mv.pushed.notes)
    assert list(reg.load_state_dict("holds:1")) == list(state)
    x = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(reg.load("holds:1")(x), net(x))


def lightning_checkpoint(state) -> dict:
    """What PyTorch Lightning saves for a LightningModule that holds the net as self.model."""
    return {
        "epoch": 3,
        "global_step": 10,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": _prefixed(state, "model."),
        "loops": {},
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
    }


def test_a_lightning_checkpoint_pushes_with_notes(home: Path, tmp_path: Path):
    model = make_model("resnet18")
    path = tmp_path / "epoch=3-step=10.ckpt"
    torch.save(lightning_checkpoint(model.state_dict()), path)
    result = run_cli("push", str(path), "--arch", "resnet18", "--name", "lit")
    assert result.returncode == 0, result.stderr
    assert "note: using the state dict stored under the 'state_dict' key" in result.stderr
    assert "note: stripped the 'model.' prefix from 122 keys" in result.stderr
    with Registry(home=home) as reg:
        loaded = reg.load_state_dict("lit:1")
        assert list(loaded) == list(model.state_dict())


def test_a_refusal_shows_what_push_did_to_the_input(home: Path, tmp_path: Path):
    path = tmp_path / "lit.ckpt"
    torch.save(lightning_checkpoint(make_model("resnet18").state_dict()), path)
    result = run_cli("push", str(path), "--arch", "resnet34", "--name", "lit")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "Error: weights do not fit resnet34() (keys without their 'model.' prefix)"
    )
    assert "missing keys" in line and "unexpected" not in line
    assert "the 'state_dict' key" in line


def test_strip_prefix_says_it_outright(reg: Registry, home: Path, tmp_path: Path):
    model = make_model("resnet18")
    state = _prefixed(model.state_dict(), "net.")
    mv = reg.push(state, "n", arch="resnet18", strip_prefix="net.")
    assert list(reg.load_state_dict(mv.ref)) == list(model.state_dict())
    with pytest.raises(InvalidArgumentError, match="do not start with it"):
        reg.push(state, "n2", arch="resnet18", strip_prefix="model.")
    path = tmp_path / "n.pth"
    torch.save(state, path)
    result = run_cli(
        "push", str(path), "--arch", "resnet18", "--strip-prefix", "net", "--name", "n3"
    )
    assert result.returncode == 0, result.stderr


# -- 5. re-pushing good bytes heals a damaged store -------------------------------------------


def push_then_damage(reg: Registry, home: Path, tmp_path: Path, tensor: str):
    """Push resnet18 from a file as prod:1, then flip a byte of one stored tensor."""
    model = make_model("resnet18")
    path = tmp_path / "m.pth"
    torch.save(model.state_dict(), path)
    reg.push(path, "prod", arch="resnet18")
    flip_byte(home, next(t.digest for t in reg.get("prod:1").tensors if t.name == tensor))
    return model, path


def test_pushing_good_bytes_heals_a_damaged_copy(reg: Registry, home: Path, tmp_path: Path):
    model, path = push_then_damage(reg, home, tmp_path, "layer1.0.conv1.weight")
    report = reg.verify("prod:1")
    assert not report.ok and "prod:1 layer1.0.conv1.weight" in report.corrupt[0].used_by
    with pytest.raises(Exception, match="layer1.0.conv1.weight"):
        reg.load("prod:1")

    new = reg.push(path, "copy", arch="resnet18")
    assert new.pushed.healed == 1
    assert any(
        "healed 1 damaged stored tensor (layer1.0.conv1.weight)" in n for n in new.pushed.notes
    )
    assert reg.verify().ok
    reg.gc()
    assert reg.verify().ok
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ref in ("prod:1", "copy:1"):
            assert torch.equal(reg.load(ref)(x), model(x))


def test_an_identical_push_of_a_damaged_version_heals_it(reg: Registry, home: Path, tmp_path):
    model, path = push_then_damage(reg, home, tmp_path, "fc.weight")
    result = run_cli("push", str(path), "--arch", "resnet18", "--name", "prod")
    assert result.returncode == 0, result.stderr
    assert "healed 1 damaged stored tensor (fc.weight)" in result.stderr
    assert "already stored as prod:1" in result.stderr
    assert reg.verify("prod:1").ok
    assert torch.equal(reg.load_state_dict("prod:1")["fc.weight"], model.state_dict()["fc.weight"])


def test_a_missing_pack_is_healed_too(reg: Registry, home: Path):
    state = make_model("resnet18").state_dict()
    reg.push(state, "prod", arch="resnet18")
    for pack in glob.glob(str(home / "objects" / "packs" / "*" / "*.pack")):
        os.unlink(pack)
    assert not reg.verify().ok
    mv = reg.push(state, "prod", arch="resnet18")
    assert mv.ref == "prod:1" and mv.pushed.healed > 0
    assert reg.verify().ok
    loaded = reg.load_state_dict("prod:1")
    for key, value in state.items():
        assert torch.equal(loaded[key], value)


# -- 6. refusals are one clean line -----------------------------------------------------------


def test_a_quantized_state_dict_is_refused_in_one_line(home: Path, tmp_path: Path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(torch.nn.Linear(16, 32)), {torch.nn.Linear}, dtype=torch.qint8
        )
        path = tmp_path / "q.pth"
        torch.save(model.state_dict(), path)
        per_tensor = {"w": torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.qint8)}
        torch.save(per_tensor, tmp_path / "q2.pth")
    for file in (path, tmp_path / "q2.pth"):
        result = run_cli("push", str(file), "--arch", "resnet18")
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("Error: ") and "quantized" in line
        assert "Warning" not in result.stderr
    with Registry(home=home) as reg, pytest.raises(NotACheckpointError, match="quantized"):
        reg.push(path, "q", arch="resnet18")


# -- bundles and upgrades carry all of it --------------------------------------------------


def test_bundles_carry_sharing_and_metadata(reg: Registry, tmp_path: Path):
    torch.manual_seed(0)
    lm = fidelity.TiedLM().state_dict()
    reg.push(lm, "lm", arch="archs_helper.fidelity:TiedLM")
    mnas = torchvision.models.mnasnet0_5(weights=None).state_dict()
    save_file(mnas, tmp_path / "m.safetensors", metadata={"format": "pt", "who": "me"})
    reg.push(tmp_path / "m.safetensors", "mnas", arch="mnasnet0_5")
    bundle = reg.export(["lm:1", "mnas:1"], tmp_path / "b.tar")

    with Registry(home=tmp_path / "other") as other:
        other.import_bundle(bundle.path)
        assert other.get("lm:1").digest == reg.get("lm:1").digest
        assert storage_groups(other.load_state_dict("lm:1")) == storage_groups(lm)
        other.load("mnas:1")  # the assumed module versions came along
        with safe_open(other.pull("mnas:1", tmp_path / "x.safetensors"), "pt") as f:
            assert f.metadata()["who"] == "me"


def test_versions_from_before_0003_still_load(home: Path):
    """A catalogue migrated from revision 0002 has no module versions recorded: a load
    that torch refuses without them gets the current ones."""
    from alembic import command
    from sqlalchemy import create_engine

    from registry.catalog import schema

    torch.manual_seed(0)
    model = torchvision.models.mnasnet0_5(weights=None).eval()
    with Registry(home=home) as reg:
        reg.push(model.state_dict(), "mnas", arch="mnasnet0_5")
    engine = create_engine(f"sqlite:///{home / 'registry.db'}")
    with engine.begin() as connection:
        command.downgrade(schema.alembic_config(connection), "0002")
        command.upgrade(schema.alembic_config(connection), "head")
    engine.dispose()
    with Registry(home=home) as reg:
        assert not hasattr(reg.load_state_dict("mnas:1"), "_metadata")
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(reg.load("mnas:1")(x), model(x))


def test_show_says_which_keys_share_storage(home: Path):
    torch.manual_seed(0)
    with Registry(home=home) as reg:
        reg.push(fidelity.TiedLM().state_dict(), "lm", arch="archs_helper.fidelity:TiedLM")
    result = run_cli("show", "lm:1", check=True)
    (head_row,) = [line for line in result.stdout.splitlines() if line.startswith("head.weight")]
    assert head_row.rstrip().endswith("shared with embed.weight")
    shown = run_cli("show", "lm:1", "--json", check=True).stdout
    import json

    tensors = {t["name"]: t for t in json.loads(shown)["tensors"]}
    assert tensors["head.weight"]["storage"] == {"group": 0, "offset": 0, "stride": [16, 1]}
    assert "storage" not in tensors["norm.weight"]


def test_torchs_verdict_is_remembered_only_where_values_cannot_matter(reg: Registry):
    from registry import architectures

    blind = architectures._value_blind
    assert blind(architectures.resolve("resnet18"), {})
    assert not blind(architectures.resolve("mnasnet0_5"), {})  # its own _load_from_state_dict
    assert not blind(architectures.resolve("archs_helper.fidelity:WithExtraState"), {})
    assert not blind(architectures.resolve("archs_helper.fidelity:Versioned"), {})

    state = make_model("resnet18").state_dict()
    reg.push(state, "r", arch="resnet18")  # accepted, and remembered
    reg.push(make_model("resnet18", seed=1).state_dict(), "r", arch="resnet18")
    for key in [k for k in state if k.endswith("num_batches_tracked")]:
        del state[key]  # _metadata still says BatchNorm version 2: torch refuses
    with pytest.raises(ArchitectureMismatchError, match="20 missing keys"):
        reg.push(state, "r", arch="resnet18")
    with pytest.raises(ArchitectureMismatchError, match="20 missing keys"):
        reg.push(state, "r", arch="resnet18")
    assert [mv.ref for mv in reg.list()] == ["r:2", "r:1"]
