"""Architectures beyond torchvision names: import paths, registered names, plugins, timm,
modules pushed as objects, num_classes inference, identification, and load options."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from archs_helper import models
from conftest import assert_same_state, make_model, run_cli

import registry
from registry import Registry, architectures, plugins
from registry.errors import (
    ArchitectureMismatchError,
    ArchitectureNotFoundError,
    RegistryError,
)

TESTS = str(Path(__file__).resolve().parent)


def same_outputs(original: torch.nn.Module, loaded: torch.nn.Module, shape=(2, 8)) -> None:
    torch.manual_seed(123)
    x = torch.randn(*shape)
    original.eval()
    with torch.no_grad():
        assert torch.equal(original(x), loaded(x))


@pytest.fixture
def arch_name():
    """A fresh architecture name, unregistered afterwards (registrations are global)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    plugins.unregister_architecture(name)


# -- import paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        ("subprocess:run", {"args": ["touch", "MARKER"]}),
        ("os:system", {"command": "touch MARKER"}),
        ("builtins:exec", {"source": "open('MARKER', 'w')"}),
        ("archs_helper.models:NOT_A_BUILDER", {}),
    ],
)
def test_a_stored_import_path_cannot_run_arbitrary_code(
    arch: str, kwargs: dict, reg: Registry, home: Path, tmp_path: Path, monkeypatch
):
    """A catalogue row (or an imported bundle) naming a standard-library function, or
    anything that is not an nn.Module class or a Python function, as its architecture:
    load refuses it before calling anything, and so does push."""
    import sqlite3

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(models, "NOT_A_BUILDER", print, raising=False)
    kwargs = json.loads(json.dumps(kwargs).replace("MARKER", str(tmp_path / "ran")))
    torch.manual_seed(0)
    mv = reg.push(models.TinyNet(8).state_dict(), "m", arch="archs_helper.models:TinyNet",
                  arch_kwargs={"hidden": 8})  # fmt: skip
    with sqlite3.connect(home / "registry.db") as db:  # what a hostile writer could store
        db.execute("UPDATE versions SET arch = ?, arch_kwargs = ?", (arch, json.dumps(kwargs)))
    with pytest.raises(ArchitectureNotFoundError, match="standard library|not an nn.Module"):
        reg.load(mv.ref)
    with pytest.raises(ArchitectureNotFoundError, match="standard library|not an nn.Module"):
        reg.push(models.TinyNet(8).state_dict(), "n", arch=arch, arch_kwargs=kwargs)
    assert not (tmp_path / "ran").exists()
    assert reg.load_state_dict(mv.ref)  # the weights themselves are still there


def test_a_stored_registering_module_in_the_standard_library_is_not_imported(
    reg: Registry, home: Path, monkeypatch
):
    """A version whose recorded registering module (a catalogue row, or a bundle) names a
    standard-library module: load resolves the name without importing it."""
    import sqlite3

    monkeypatch.delitem(sys.modules, "this", raising=False)
    mv = reg.push(make_model("resnet18").state_dict(), "m", arch="resnet18")
    with sqlite3.connect(home / "registry.db") as db:
        db.execute("UPDATE versions SET arch_module = 'this'")  # prints the Zen on import
    assert isinstance(reg.load(mv.ref), torch.nn.Module)
    assert "this" not in sys.modules


def test_push_and_load_by_import_path(reg: Registry):
    torch.manual_seed(0)
    model = models.TinyNet(hidden=64).eval()
    mv = reg.push(
        model.state_dict(), "tiny", arch="archs_helper.models:TinyNet", arch_kwargs={"hidden": 64}
    )
    got = reg.get(mv.ref)
    assert got.arch == "archs_helper.models:TinyNet"
    assert got.arch_kwargs == {"hidden": 64}
    loaded = reg.load(mv.ref)
    assert type(loaded) is models.TinyNet
    same_outputs(model, loaded)
    made = models.tiny_factory(hidden=5).eval()  # a factory function works as well
    fn = reg.push(made, "fn", arch="archs_helper.models:tiny_factory", arch_kwargs={"hidden": 5})
    same_outputs(made, reg.load(fn.ref))


def test_import_path_refuses_wrong_shapes_and_unknown_modules(reg: Registry):
    state = models.TinyNet(hidden=64).state_dict()
    with pytest.raises(ArchitectureMismatchError):
        reg.push(state, "tiny", arch="archs_helper.models:TinyNet", arch_kwargs={"hidden": 32})
    with pytest.raises(ArchitectureNotFoundError):
        reg.push(state, "tiny", arch="no_such_module_x9q:TinyNet", arch_kwargs={"hidden": 64})
    with pytest.raises(ArchitectureNotFoundError):
        reg.push(state, "tiny", arch="archs_helper.models:NoSuchClass")
    assert reg.list() == []


def test_load_when_the_class_cannot_be_imported_any_more(
    reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    module = f"gone_{uuid.uuid4().hex[:8]}"
    source = tmp_path / f"{module}.py"
    source.write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, hidden=4):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(8, hidden)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module(module)
    state = mod.Net(hidden=64).state_dict()
    mv = reg.push(state, "gone", arch=f"{module}:Net", arch_kwargs={"hidden": 64})
    source.unlink()
    del sys.modules[module]
    importlib.invalidate_caches()
    with pytest.raises(ArchitectureNotFoundError) as caught:
        reg.load(mv.ref)
    assert isinstance(caught.value, RegistryError)
    message = str(caught.value)
    assert module in message
    assert "hidden=64" in message or '"hidden": 64' in message, message
    assert_same_state(reg.load_state_dict(mv.ref), state)  # the weights stay readable


def test_cli_push_by_import_path(home: Path, reg: Registry, tmp_path: Path):
    torch.manual_seed(1)
    model = models.TinyNet(hidden=64).eval()
    path = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), path)
    result = run_cli(
        "push", str(path), "--arch", "archs_helper.models:TinyNet", "--arch-arg", "hidden=64",
        env={"PYTHONPATH": TESTS}, check=True,
    )  # fmt: skip
    ref = result.stdout.strip().splitlines()[-1]
    assert ref == "tiny:1"
    got = reg.get(ref)
    assert (got.arch, got.arch_kwargs) == ("archs_helper.models:TinyNet", {"hidden": 64})
    same_outputs(model, reg.load(ref))


# -- registered in code ---------------------------------------------------------------


def test_decorator_registers_a_class(reg: Registry, arch_name: str):
    @registry.architecture(arch_name)
    class Registered(torch.nn.Module):
        def __init__(self, hidden=5):
            super().__init__()
            self.fc = torch.nn.Linear(8, hidden)

        def forward(self, x):
            return self.fc(x)

    torch.manual_seed(2)
    model = Registered(hidden=7).eval()
    mv = reg.push(model.state_dict(), "r", arch=arch_name, arch_kwargs={"hidden": 7})
    assert reg.get(mv.ref).arch == arch_name
    same_outputs(model, reg.load(mv.ref))
    # a module object of a registered class is recorded under its registered name
    again = reg.push(Registered(hidden=5), name="r2")
    assert (again.arch, again.arch_kwargs) == (arch_name, {})
    assert type(reg.load(again.ref)) is Registered


def test_register_a_factory_and_list_it(reg: Registry, arch_name: str):
    registry.register_architecture(arch_name, models.tiny_factory)
    registry.register_architecture(arch_name, models.tiny_factory)  # same builder: fine
    with pytest.raises(RegistryError):
        registry.register_architecture(arch_name, models.TinyNet)
    torch.manual_seed(3)
    model = models.tiny_factory(hidden=6, out=4).eval()
    mv = reg.push(model.state_dict(), "f", arch=arch_name, arch_kwargs={"hidden": 6, "out": 4})
    same_outputs(model, reg.load(mv.ref))
    found = {tuple(pair)[0]: tuple(pair)[1] for pair in reg.architectures()}
    assert "registered" in found[arch_name] and "archs_helper.models" in found[arch_name]
    assert found["resnet18"] == "torchvision"
    plugins.unregister_architecture(arch_name)
    assert arch_name not in {tuple(pair)[0] for pair in reg.architectures()}
    with pytest.raises(ArchitectureNotFoundError):
        reg.load(mv.ref)


# -- plugins (entry points of a real distribution) -------------------------------------


@pytest.fixture
def plugin_dist(tmp_path: Path) -> Path:
    """A real installed distribution (a dist-info folder on sys.path) with entry points."""
    site = tmp_path / "site"
    info = site / "tinyplugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[registry.architectures]\n"
        "tinyplug = archs_helper.models:PluginNet\n"
        "tinyplugfn = archs_helper.models:tiny_factory\n"
        "tinybroken = archs_helper.models:NoSuchThing\n"
    )
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    plugins.refresh_plugins()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        importlib.invalidate_caches()
        plugins.refresh_plugins()


def test_plugin_entry_point(reg: Registry, plugin_dist: Path):
    torch.manual_seed(4)
    model = models.PluginNet().eval()
    mv = reg.push(model.state_dict(), "p", arch="tinyplug")
    assert reg.get(mv.ref).arch == "tinyplug"
    loaded = reg.load(mv.ref)
    assert type(loaded) is models.PluginNet
    same_outputs(model, loaded)
    found = {tuple(pair)[0]: tuple(pair)[1] for pair in reg.architectures()}
    assert "plugin" in found["tinyplug"]
    factory_made = models.tiny_factory(hidden=3).eval()
    fn = reg.push(factory_made.state_dict(), "pf", arch="tinyplugfn", arch_kwargs={"hidden": 3})
    same_outputs(factory_made, reg.load(fn.ref))
    with pytest.raises(ArchitectureNotFoundError, match="tinybroken"):
        reg.push(model.state_dict(), "pb", arch="tinybroken")

    result = run_cli("archs", env={"PYTHONPATH": os.pathsep.join([str(plugin_dist), TESTS])})
    assert result.returncode == 0, result.stderr
    rows = [line.split(None, 1) for line in result.stdout.splitlines()]
    assert rows[0][0] == "ARCH" and "SOURCE" in rows[0][1]
    sources = {row[0]: row[1] for row in rows[1:] if len(row) == 2}
    assert "plugin" in sources["tinyplug"]
    assert sources["resnet18"].strip() == "torchvision"


# -- pushing an nn.Module --------------------------------------------------------------


@pytest.mark.parametrize(
    "cls", [models.ConfigNet, models.DataclassNet, models.ToDictNet, models.HparamsNet]
)
def test_push_a_module_records_how_to_rebuild_it(reg: Registry, cls):
    torch.manual_seed(5)
    model = cls(hidden=16, out=2).eval()
    mv = reg.push(model, name="m")
    assert mv.arch == f"archs_helper.models:{cls.__qualname__}"
    assert mv.arch_kwargs == {"hidden": 16, "out": 2}
    loaded = reg.load(mv.ref)
    assert type(loaded) is cls
    same_outputs(model, loaded)


def test_push_a_module_with_explicit_arch_kwargs(reg: Registry):
    torch.manual_seed(6)
    model = models.NeedsArgs(width=5).eval()
    mv = reg.push(model, name="m", arch_kwargs={"width": 5})
    assert (mv.arch, mv.arch_kwargs) == ("archs_helper.models:NeedsArgs", {"width": 5})
    same_outputs(model, reg.load(mv.ref))
    plain = reg.push(models.TinyNet(), name="plain")  # all arguments have defaults
    assert (plain.arch, plain.arch_kwargs) == ("archs_helper.models:TinyNet", {})


def test_push_a_module_that_cannot_be_rebuilt_is_refused(reg: Registry):
    with pytest.raises(RegistryError, match="arch_kwargs"):
        reg.push(models.NeedsArgs(width=5), name="m")

    class Local(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)

    with pytest.raises(RegistryError):
        reg.push(Local(), name="m")
    assert reg.list() == []


# -- timm ------------------------------------------------------------------------------


def test_timm_model(reg: Registry):
    timm = pytest.importorskip("timm")
    torch.manual_seed(7)
    model = timm.create_model("resnet10t", pretrained=False).eval()
    mv = reg.push(model.state_dict(), "t", arch="timm:resnet10t")
    assert (reg.get(mv.ref).arch, reg.get(mv.ref).arch_kwargs) == ("timm:resnet10t", {})
    loaded = reg.load(mv.ref)
    same_outputs(model, loaded, shape=(1, 3, 64, 64))


# -- num_classes inference -------------------------------------------------------------


def test_num_classes_is_inferred_from_the_head(reg: Registry):
    state = make_model("resnet18", num_classes=10).state_dict()
    mv = reg.push(state, "ten", arch="resnet18")
    assert mv.arch_kwargs == {"num_classes": 10}
    assert any("num_classes" in note for note in mv.pushed.notes), mv.pushed.notes
    assert_same_state(reg.load(mv.ref).state_dict(), state)
    with pytest.raises(ArchitectureMismatchError):
        reg.push(make_model("resnet34").state_dict(), "wrong", arch="resnet18")
    assert [v.ref for v in reg.list()] == ["ten:1"]


def test_cli_push_notes_the_inferred_num_classes(home: Path, reg: Registry, tmp_path: Path):
    path = tmp_path / "ten.pth"
    torch.save(make_model("resnet18", num_classes=10).state_dict(), path)
    result = run_cli("push", str(path), "--arch", "resnet18", check=True)
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert any("num_classes=10" in line for line in notes), result.stderr
    assert reg.get("ten:1").arch_kwargs == {"num_classes": 10}


# -- identification --------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, kwargs",
    [
        ("resnet18", {}),
        ("mobilenet_v3_small", {}),
        ("squeezenet1_1", {}),
        ("efficientnet_b0", {}),
        ("resnet18", {"num_classes": 10}),
    ],
)
def test_identify_torchvision_state_dicts(reg: Registry, arch: str, kwargs: dict):
    matches = reg.identify(make_model(arch, **kwargs).state_dict())
    assert matches, "no match at all"
    best = matches[0]
    assert (best.name, best.score, best.arch_kwargs) == (arch, 1.0, kwargs)
    assert all(m.score <= best.score for m in matches)
    assert all(m.score < 1.0 for m in matches[1:] if m.name == arch)


def test_identify_a_path_and_push_without_arch(reg: Registry, resnet18_pth: Path):
    assert reg.identify(resnet18_pth)[0].name == "resnet18"
    mv = reg.push(resnet18_pth, name="auto")
    assert (mv.arch, mv.arch_kwargs) == ("resnet18", {})
    ten = reg.push(make_model("resnet18", num_classes=10).state_dict(), name="ten")
    assert (ten.arch, ten.arch_kwargs) == ("resnet18", {"num_classes": 10})


def test_push_without_arch_refuses_weights_that_match_nothing(reg: Registry):
    torch.manual_seed(8)
    state = {"made.up.weight": torch.randn(7, 13), "other_thing": torch.randn(11)}
    assert all(m.score < 1.0 for m in reg.identify(state))
    with pytest.raises(RegistryError, match="(?i)fit|match|closest|candidate"):
        reg.push(state, name="nothing")
    assert reg.list() == []


def test_cli_identify_and_push_without_arch(home: Path, reg: Registry, resnet18_pth: Path):
    first = run_cli("identify", str(resnet18_pth), check=True)  # may build the disk cache
    rows = [line.split() for line in first.stdout.splitlines() if line.strip()]
    data = [row for row in rows if not row[0].isupper()]
    assert any(c == "resnet18" or c.startswith("resnet18(") for c in data[0]), first.stdout
    assert not any(c.startswith("resnet18") for row in data[1:] for c in row)
    assert any(cell in ("1.0", "1.00", "1.000", "1.0000", "1", "100%") for cell in data[0])

    start = time.monotonic()
    second = run_cli("identify", str(resnet18_pth), "--json", check=True)
    elapsed = time.monotonic() - start
    listed = json.loads(second.stdout)
    if isinstance(listed, dict):
        listed = listed.get("matches", listed)
    assert listed[0]["name"] == "resnet18"
    assert float(listed[0]["score"]) == 1.0
    assert elapsed < 10, f"a second identify took {elapsed:.1f} s"

    pushed = run_cli("push", str(resnet18_pth), "--name", "auto", check=True)
    assert pushed.stdout.strip().splitlines()[-1] == "auto:1"
    assert reg.get("auto:1").arch == "resnet18"


# -- load options ----------------------------------------------------------------------


def test_load_with_dtype_and_device(reg: Registry, resnet18_state):
    mv = reg.push(resnet18_state, "m", arch="resnet18")
    half = reg.load(mv.ref, dtype=torch.bfloat16)
    for key, value in half.state_dict().items():
        if key.endswith("num_batches_tracked"):
            assert value.dtype == torch.int64, key
        else:
            assert value.dtype == torch.bfloat16, key
            assert torch.equal(value, resnet18_state[key].to(torch.bfloat16)), key
    for device in ("cpu", torch.device("cpu")):
        loaded = reg.load(mv.ref, device=device)
        assert all(p.device.type == "cpu" for p in loaded.parameters())
        assert_same_state(loaded.state_dict(), resnet18_state)


def test_load_into_a_module_the_caller_built(reg: Registry, resnet18_state):
    mv = reg.push(resnet18_state, "m", arch="resnet18")
    mine = make_model("resnet18", seed=99)
    returned = reg.load_into(mine, mv.ref)
    assert returned is mine
    assert_same_state(mine.state_dict(), resnet18_state)
    with pytest.raises(ArchitectureMismatchError):
        reg.load_into(make_model("resnet34"), mv.ref)


def test_load_with_strict_false_after_the_architecture_changed(reg: Registry, arch_name: str):
    def old(hidden=4):
        return torch.nn.Sequential(torch.nn.Linear(8, hidden))

    def new(hidden=4):
        return torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.Linear(hidden, 2))

    registry.register_architecture(arch_name, old)
    state = old().state_dict()
    mv = reg.push(state, "evolving", arch=arch_name)
    plugins.unregister_architecture(arch_name)
    registry.register_architecture(arch_name, new)
    with pytest.raises(ArchitectureMismatchError):
        reg.load(mv.ref)
    loaded = reg.load(mv.ref, strict=False)
    assert torch.equal(loaded[0].weight, state["0.weight"])
    assert not loaded[1].weight.is_meta  # the new layer is really initialised


def test_identify_uses_the_current_registration(reg: Registry, arch_name: str):
    def first():
        return torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 4))

    def second():
        return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 5))

    partial = {"0.weight": torch.zeros(5, 3), "0.bias": torch.zeros(5), "x": torch.zeros(1)}
    registry.register_architecture(arch_name, first)
    assert arch_name not in [m.name for m in reg.identify(partial, limit=50)]
    plugins.unregister_architecture(arch_name)
    registry.register_architecture(arch_name, second)
    scores = {m.name: m.score for m in reg.identify(partial, limit=50)}
    assert scores.get(arch_name) == pytest.approx(2 / 5)  # 2 shared of 5 (key, shape) pairs


def test_nothing_shadows_a_torchvision_architecture(reg: Registry, plugin_dist: Path):
    with pytest.raises(RegistryError, match="torchvision"):
        registry.register_architecture("resnet18", models.TinyNet)
    entry_points = plugin_dist / "tinyplugin-0.1.dist-info" / "entry_points.txt"
    entry_points.write_text("[registry.architectures]\nresnet18 = archs_helper.models:TinyNet\n")
    plugins.refresh_plugins()
    assert architectures.resolve("resnet18").source == "torchvision"
    assert [n for n, _ in reg.architectures()].count("resnet18") == 1


def test_a_torch_building_block_is_refused_or_identified(reg: Registry):
    block = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with pytest.raises(RegistryError, match="arch="):
        reg.push(block, name="seq")
    torchvision_model = make_model("squeezenet1_1")  # a torchvision class: identified instead
    mv = reg.push(torchvision_model, name="sq")
    assert mv.arch == "squeezenet1_1" and any("identified" in n for n in mv.pushed.notes)
    assert [v.ref for v in reg.list()] == ["sq:1"]
