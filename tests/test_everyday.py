"""Everyday use: nothing the user typed is dropped, usage errors are usage errors, files
are never clobbered, and messages lead somewhere (the installed `registry` command and
the Python API side by side)."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import make_model, run_cli

from registry import (
    ArchitectureMismatchError,
    ArchitectureNotFoundError,
    ConflictError,
    InvalidArgumentError,
    OutputExistsError,
    Registry,
    VersionNotFoundError,
)
from registry.cli import cli

TESTS = str(Path(__file__).parent)


def ok(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, check=True, **kwargs)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """A registry error: exit 1, one `Error: ` line, nothing on stdout, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0][len("Error: "):]


def usage_error(result: subprocess.CompletedProcess[str]) -> str:
    """Bad usage: exit 2, click's usage line, nothing on stdout, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith("Usage: registry "), result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error: ")]
    return line[len("Error: "):]


@pytest.fixture
def weights(tmp_path: Path) -> dict[str, Path]:
    """base.pth (resnet18) and tuned.pth (its fc retrained for 10 classes), in tmp_path."""
    base = make_model("resnet18", seed=0)
    tuned = make_model("resnet18", seed=0, num_classes=10)
    torch.save(base.state_dict(), tmp_path / "base.pth")
    torch.save(tuned.state_dict(), tmp_path / "tuned.pth")
    return {"base": tmp_path / "base.pth", "tuned": tmp_path / "tuned.pth"}


# -- 1. nothing the user typed is silently dropped ----------------------------------------


def test_identical_push_gives_the_version_what_was_asked(home: Path, reg: Registry, weights):
    reg.push(weights["base"], arch="resnet18")
    reg.push(weights["tuned"], arch="resnet18")
    again = ok(
        "push", str(weights["tuned"]), "--arch", "resnet18", "--tag", "task=cifar10",
        "--description", "lr 1e-4", "--parent", "base:1",
    )
    assert again.stdout.strip() == "tuned:1"
    assert "no new version created" in again.stderr
    assert "added tag task=cifar10, description 'lr 1e-4', parent base:1" in again.stderr
    # The README's walkthrough ends with finding it by its tag, and its lineage.
    assert ok("list", "--tag", "task=cifar10").stdout.splitlines()[1].startswith("tuned:1 ")
    mv = reg.get("tuned:1")
    assert (mv.tags, mv.description) == ({"task": "cifar10"}, "lr 1e-4")
    assert [v.ref for v in reg.lineage("tuned:1")] == ["tuned:1", "base:1"]
    assert len(reg.list("tuned")) == 1

    # The Python API does the same, and reports it.
    pushed = reg.push(weights["tuned"], arch="resnet18", tags={"seed": 0})
    assert pushed.ref == "tuned:1" and pushed.pushed.created is False
    assert pushed.pushed.changed == ("tag seed=0",)
    assert reg.get("tuned:1").tags == {"task": "cifar10", "seed": "0"}
    same = json.loads(
        ok("push", str(weights["tuned"]), "--arch", "resnet18", "--tag", "seed=0", "--json").stdout
    )
    assert same["changed"] == [] and same["created"] is False


@pytest.mark.parametrize(
    "extra, says, python_fix",
    [
        (["--description", "lr 1e-3"], "its description is 'lr 1e-4', not 'lr 1e-3'", "describe()"),
        (["--tag", "task=imagenet"], "its tag task is 'cifar10', not 'imagenet'", "tag()"),
        (["--parent", "tuned:1"], "tuned:1 descends from it, so it cannot be its parent", None),
    ],
    ids=["description", "tag", "cycle"],
)
def test_identical_push_that_contradicts_changes_nothing(
    extra, says, python_fix, home: Path, reg: Registry, weights
):
    base = reg.push(weights["base"], arch="resnet18", description="lr 1e-4",
                    tags={"task": "cifar10"})
    reg.push(weights["tuned"], arch="resnet18", parent=base.ref)
    before = reg.get("base:1")
    # A tag that alone would be added is not added either: the push changes nothing.
    result = run_cli("push", str(weights["base"]), "--arch", "resnet18", "--tag", "new=1", *extra)
    message = error_line(result)
    assert message.startswith("identical weights are already stored as base:1, but ")
    assert says in message and "nothing was changed" in message
    if python_fix:
        assert f"`registry {python_fix[:-2]}`" in message and python_fix not in message
    after = reg.get("base:1")
    assert (after.tags, after.description, after.parent) == (
        before.tags, before.description, before.parent)

    kwargs = {"description": "lr 1e-3"} if "--description" in extra else (
        {"tags": {"task": "imagenet"}} if "--tag" in extra else {"parent": "tuned:1"})
    with pytest.raises(ConflictError) as info:
        reg.push(weights["base"], "base", **kwargs)
    assert isinstance(info.value, ValueError) and "`registry" not in str(info.value)
    if python_fix:
        assert python_fix in str(info.value)


def test_identical_push_with_another_architecture_is_a_conflict(home: Path, reg: Registry):
    sys.path.insert(0, TESTS)
    try:
        from archs_helper.models import TinyNet
    finally:
        sys.path.remove(TESTS)
    state = TinyNet(hidden=8).state_dict()
    reg.push(state, "tiny", arch="archs_helper.models:TinyNet", arch_kwargs={"hidden": 8})
    with pytest.raises(ConflictError, match=r"its architecture is archs_helper.models:TinyNet\("):
        reg.push(state, "tiny", arch="archs_helper.models:PluginNet", arch_kwargs={"hidden": 8})
    assert reg.get("tiny").arch == "archs_helper.models:TinyNet"


# -- 2. usage errors are usage errors ----------------------------------------------------


@pytest.mark.parametrize(
    "args, option, fragment",
    [
        (["list", "--since", "yesterday"], "'--since'", "'yesterday' is not a date"),
        (["list", "--before", "soon"], "'--before'", "'soon' is not a date"),
        (["list", "--tag", "x"], "'--tag'", "expected KEY=VALUE"),
        (["list", "Bad Name"], "'[NAME|GLOB]'", "invalid model name"),
        (["tag", "m:1", "badtag"], "'K=V...'", "expected KEY=VALUE"),
        (["untag", "m:1", "bad key"], "'KEY...'", "invalid tag key"),
        (["push", "{pth}", "--tag", "foo"], "'--tag'", "expected KEY=VALUE"),
        (["push", "{pth}", "--tag", "a=1", "--tag", "a=2"], "'--tag'", "given twice"),
        (["push", "{pth}", "--arch-arg", "num_classes"], "'--arch-arg'", "expected KEY=VALUE"),
        (["push", "{pth}", "--arch-arg", "x=1", "--arch-arg", "x=2"], "'--arch-arg'", "twice"),
        (["push", "{pth}", "--name", "my model"], "'--name'", "invalid model name"),
        (["push", "{pth}", "--parent", "base:0"], "'--parent'", "versions start at 1"),
        (["alias", "m:1", "3"], "'ALIAS'", "reserved"),
        (["show", "m:"], "'REF'", "empty version"),
        (["pull", "m:1", "--format", "safetensors", "-o", "x.pth"], "'--format'", "contradicts"),
        (["pull", "m:1", "--format", "pth", "-o", "x.safetensors"], "'--format'", "contradicts"),
        (["diff", "m:1", "m@sha256:zz"], "'REF_B'", "expected NAME@sha256:HEX"),
    ],
)
def test_bad_option_values_exit_2(args, option, fragment, home: Path, tmp_path: Path):
    pth = tmp_path / "m.pth"
    torch.save({"w": torch.zeros(2)}, pth)
    result = run_cli(*[a.format(pth=pth) for a in args], cwd=tmp_path)
    message = usage_error(result)
    assert message.startswith(f"Invalid value for {option}"), message
    assert fragment in message
    for python_spelling in ("force=True", "overwrite=", "arch_kwargs", "name=", "format="):
        assert python_spelling not in result.stderr
    assert not home.exists() or not any(home.rglob("*.pack"))  # nothing was done


def test_the_api_refuses_the_same_values(reg: Registry, weights):
    reg.push(weights["base"], arch="resnet18")
    cases = [
        (lambda: reg.list(since="yesterday"), "since='yesterday' is not a date"),
        (lambda: reg.count(before="soon"), "before='soon' is not a date"),
        (lambda: reg.list(tags="x"), "tags must be a mapping"),
        (lambda: reg.tag("base:1", "badtag"), "tags must be a mapping"),
        (lambda: reg.tag("base:1", {"bad key": 1}), "invalid tag key 'bad key'"),
        (lambda: reg.push(weights["base"], arch="resnet18", arch_kwargs={"1x": 1}),
         "invalid architecture argument name '1x'"),
        (lambda: reg.pull("base:1", "x.pth", format="safetensors"),
         "format='safetensors' contradicts the file name 'x.pth'"),
        (lambda: reg.remove("base:1", force=False) if reg.alias("base:1", "prod") else None,
         "force=True"),
    ]
    for call, fragment in cases:
        with pytest.raises(InvalidArgumentError) as info:
            call()
        text = str(info.value)
        assert fragment in text, text
        assert "--" not in text, text  # never a command-line flag to a Python user


# -- 3. files: never clobber, the user's folder and umask ---------------------------------


def test_pull_never_clobbers(home: Path, reg: Registry, weights, tmp_path: Path):
    reg.push(weights["base"], arch="resnet18")
    reg.push(weights["tuned"], "base", arch="resnet18")
    out = tmp_path / "out.pth"
    out.write_bytes(b"my own file")
    message = error_line(run_cli("pull", "base:1", "-o", str(out)))
    assert message == f"{out} exists; nothing was written (use --force to replace it)"
    assert out.read_bytes() == b"my own file"
    with pytest.raises(OutputExistsError) as info:
        reg.pull("base:1", out)
    assert isinstance(info.value, FileExistsError) and "overwrite=True" in str(info.value)
    assert out.read_bytes() == b"my own file"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # no temp

    ok("pull", "base:1", "-o", str(out), "--force")
    loaded = torch.load(out, weights_only=True)
    assert torch.equal(loaded["fc.weight"], torch.load(weights["base"])["fc.weight"])
    assert reg.pull("base:2", out, overwrite=True) == out
    assert torch.load(out, weights_only=True)["fc.weight"].shape == (10, 512)

    # The default name, in the current folder, is not clobbered either.
    ok("pull", "base:2", cwd=tmp_path)
    default = tmp_path / "base-v2.pth"
    default.write_bytes(b"edited")
    assert "base-v2.pth exists" in error_line(run_cli("pull", "base:2", cwd=tmp_path))
    assert default.read_bytes() == b"edited"

    # export is a file the registry writes for the user too.
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(b"keep")
    assert "b.tar exists" in error_line(run_cli("export", "base:1", "-o", str(bundle)))
    assert bundle.read_bytes() == b"keep"
    ok("export", "base:1", "-o", str(bundle), "--force")
    assert bundle.stat().st_size > 40_000_000


def test_pull_into_a_folder(home: Path, reg: Registry, weights, tmp_path: Path):
    reg.push(weights["base"], arch="resnet18")
    made = ok("pull", "base:1", "-o", "new/sub/", cwd=tmp_path).stdout.strip()
    assert Path(tmp_path, made) == tmp_path / "new" / "sub" / "base-v1.pth"
    existing = tmp_path / "existing"
    existing.mkdir()
    st = ok("pull", "base:1", "-o", str(existing), "--format", "safetensors").stdout.strip()
    assert Path(st) == existing / "base-v1.safetensors"
    from safetensors.torch import load_file

    assert torch.equal(load_file(st)["fc.weight"], torch.load(weights["base"])["fc.weight"])
    assert reg.pull("base:1", existing) == existing / "base-v1.pth"
    assert sorted(p.name for p in existing.iterdir()) == ["base-v1.pth", "base-v1.safetensors"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_files_for_the_user_get_the_umask_mode(umask: int, home: Path, reg: Registry, weights,
                                               tmp_path: Path):
    reg.push(weights["base"], arch="resnet18")
    script = textwrap.dedent(f"""
        import os, sys
        os.umask({umask})
        from registry import Registry
        reg = Registry(home=sys.argv[1])
        out = sys.argv[2]
        reg.pull("base:1", out + "/a.pth")
        reg.pull("base:1", out + "/a.safetensors")
        reg.export(["base:1"], out + "/a.tar")
    """)
    subprocess.run([sys.executable, "-c", script, str(home), str(tmp_path)], check=True)
    expected = 0o666 & ~umask
    for name in ("a.pth", "a.safetensors", "a.tar"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_quickstart_leaves_no_temporary_folder(tmp_path: Path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    quickstart = Path(__file__).parent.parent / "examples" / "quickstart.py"
    result = subprocess.run(
        [sys.executable, str(quickstart)], capture_output=True, text=True, timeout=600,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2] == "ok"
    assert "removed the temporary folder" in result.stdout.splitlines()[-1]
    assert list(scratch.iterdir()) == []


# -- 4. messages that lead somewhere ------------------------------------------------------


def test_not_found_messages(home: Path, reg: Registry, weights):
    reg.push(weights["base"], "ft", arch="resnet18")
    reg.push(weights["tuned"], "ft", arch="resnet18")
    reg.alias("ft:1", "production")
    assert error_line(run_cli("show", "ft:prodution")) == (
        "ft has no alias 'prodution'; did you mean ft:production?")
    assert "(its aliases: production)" in error_line(run_cli("show", "ft:staging"))
    reg.remove("ft:2")
    assert error_line(run_cli("show", "ft:2")) == "ft:2 was removed; the latest is ft:1"
    assert error_line(run_cli("show", "ft:9")) == "ft has no version 9; the latest is ft:1"
    with pytest.raises(VersionNotFoundError, match="ft:2 was removed"):
        reg.load_state_dict("ft:2")


@pytest.mark.parametrize("filename", ["my tiny.pth", "epoch=3-step=10.ckpt"])
def test_a_file_name_that_is_no_model_name_says_how_to_name_it(filename, home: Path,
                                                               reg: Registry, weights):
    path = weights["base"].with_name(filename)
    path.write_bytes(weights["base"].read_bytes())
    message = error_line(run_cli("push", str(path), "--arch", "resnet18"))
    assert f"the file name {filename!r} does not make a model name" in message
    assert message.endswith("name the model with --name")
    with pytest.raises(InvalidArgumentError, match="name the model with name=$"):
        reg.push(path, arch="resnet18")
    assert reg.push(path, "lit", arch="resnet18").ref == "lit:1"


MODULE = """
import torch.nn as nn
import registry

class Net(nn.Module):
    def __init__(self, hidden=4):
        super().__init__()
        self.fc = nn.Linear(3, hidden)

@registry.architecture("{name}")
class Registered(Net):
    pass
"""


def test_import_paths_resolve_from_the_current_folder(home: Path, tmp_path: Path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "mynets_cwd.py").write_text(MODULE.format(name="cwdnet"))
    subprocess.run(
        [sys.executable, "-c", "import torch, mynets_cwd; "
         "torch.save(mynets_cwd.Net().state_dict(), 'net.pth')"], cwd=project, check=True)
    env = {"PYTHONPATH": ""}
    pushed = ok("push", "net.pth", "--arch", "mynets_cwd:Net", cwd=project, env=env)
    assert pushed.stdout.strip() == "net:1"
    # pull needs no import; load from elsewhere does, and says where it looked
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    message = error_line(run_cli("push", str(project / "net.pth"), "--arch", "mynets_cwd:Net",
                                 "--name", "again", cwd=elsewhere, env=env))
    assert f"no 'mynets_cwd' in the current folder ({elsewhere}) nor on Python's path" in message
    assert "PYTHONPATH" in message


LOADER = """
import sys
from registry import Registry
try:
    model = Registry().load(sys.argv[1])
except Exception as exc:
    print(type(exc).__name__, exc)
else:
    print("loaded", type(model).__module__, type(model).__name__)
"""


def test_names_registered_in_code_load_in_another_process(home: Path, tmp_path: Path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "mynets_reg.py").write_text(MODULE.format(name="regnet-x"))
    push = ("import mynets_reg; from registry import Registry; "
            "print(Registry().push(mynets_reg.Registered(), name='rx').arch_module)")
    out = subprocess.run([sys.executable, "-c", push], cwd=project, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == "mynets_reg"
    assert "  registered by  module mynets_reg\n" in ok("show", "rx:1").stdout
    # Another process that never imports mynets_reg: the recorded module is imported.
    loaded = subprocess.run([sys.executable, "-c", LOADER, "rx:1"], cwd=project, check=True,
                            capture_output=True, text=True).stdout
    assert loaded.strip() == "loaded mynets_reg Registered"
    failed = subprocess.run([sys.executable, "-c", LOADER, "rx:1"], cwd=tmp_path, check=True,
                            capture_output=True, text=True).stdout
    assert failed.startswith("ArchitectureNotFoundError cannot import module 'mynets_reg' for "
                             "architecture 'regnet-x' (it registered the name at push)")
    assert "PYTHONPATH" in failed


def test_a_name_registered_by_a_script(home: Path, tmp_path: Path):
    script = tmp_path / "train.py"
    script.write_text(MODULE.format(name="scriptnet") + textwrap.dedent("""
        from registry import Registry
        mv = Registry().push(Registered(), name="sn")
        print(mv.arch_module)
        print(mv.pushed.notes[-1])
    """))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    assert out[0] == "__main__"
    assert out[1].startswith("'scriptnet' is registered by the running script (__main__)")
    failed = subprocess.run([sys.executable, "-c", LOADER, "sn:1"], cwd=tmp_path, check=True,
                            capture_output=True, text=True).stdout
    assert "was registered by the script that pushed the version (__main__)" in failed
    assert "@registry.architecture('scriptnet')" in failed


def test_weights_that_fit_another_architecture_say_which(home: Path, reg: Registry, weights):
    message = error_line(run_cli("push", str(weights["tuned"]), "--arch", "resnet34"))
    assert message.startswith("weights do not fit resnet34(): ")
    assert message.endswith("; they fit resnet18(num_classes=10) exactly")
    with pytest.raises(ArchitectureMismatchError, match=r"they fit resnet18\(\) exactly"):
        reg.push(weights["base"], arch="resnet50")


def test_rm_says_what_else_it_changes(home: Path, reg: Registry, weights):
    reg.push(weights["base"], "m", arch="resnet18")
    reg.push(weights["tuned"], "m", arch="resnet18", parent="m:1")
    reg.push(weights["tuned"], "other", arch="resnet18", parent="m:1")
    reg.alias("m:1", "production")

    refused = error_line(run_cli("rm", "m:1", "--yes"))
    assert "nothing was deleted" in refused and "--force" in refused
    declined = subprocess.run([run_cli.__globals__["REGISTRY_EXE"], "rm", "m:1", "--force"],
                              input="n\n", capture_output=True, text=True)
    assert ("delete m:1 (deletes m:production; leaves m:2, other:1 without a parent)?"
            in declined.stderr)
    assert reg.get("m:1").aliases == ("production",)

    done = ok("rm", "m:1", "--force", "--yes")
    assert done.stderr.startswith(
        "deleted m:1 and m:production; m:2, other:1 have no parent now; ")
    assert reg.get("m:2").parent is None
    as_json = json.loads(ok("rm", "m:2", "--yes", "--json").stdout)
    assert as_json["ref"] == "m:2" and as_json["aliases_deleted"] == []


def test_metadata_commands_say_what_they_changed(home: Path, reg: Registry, weights):
    reg.push(weights["base"], "m", arch="resnet18", tags={"stage": "dev"})
    reg.push(weights["tuned"], "m", arch="resnet18")
    assert ok("tag", "m:1", "stage=prod", "owner=ana").stderr == (
        "m:1: set stage: dev -> prod, owner=ana; its tags: owner=ana, stage=prod\n")
    assert ok("tag", "m:1", "stage=prod").stderr.startswith("m:1: no change;")
    assert ok("untag", "m:1", "owner").stderr == "m:1: removed owner=ana; its tags: stage=prod\n"
    assert ok("alias", "m:1", "production").stderr == "m:production -> m:1\n"
    assert ok("alias", "m:2", "production").stderr == "m:production -> m:2 (moved from m:1)\n"
    assert ok("describe", "m:2", "first").stderr == "m:2: description set\n"
    assert ok("describe", "m:2", "second").stderr == (
        "m:2: description replaced (it was 'first')\n")
    assert ok("describe", "m:2", "--clear").stderr == (
        "m:2: description cleared (it was 'second')\n")


def test_configuration_and_missing_files_are_one_line(home: Path, tmp_path: Path):
    a_file = tmp_path / "home-file"
    a_file.write_text("not a folder")
    message = error_line(run_cli("list", env={"REGISTRY_HOME": str(a_file)}))
    assert message == (f"REGISTRY_HOME {a_file} is a file: the registry needs a folder there")
    below = error_line(run_cli("list", env={"REGISTRY_HOME": str(a_file / "x")}))
    assert f"is under {a_file}, which is a file" in below
    with pytest.raises(ValueError, match="home= .* is a file"):
        Registry(home=a_file)
    missing = tmp_path / "nope.tar"
    assert error_line(run_cli("import", str(missing))) == f"no such file: {missing}"


def test_first_identification_says_so_once(home: Path, weights, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch):
    from registry import architectures, plugins

    monkeypatch.setenv("REGISTRY_CACHE_DIR", str(tmp_path / "fresh-cache"))
    monkeypatch.setattr(plugins, "torchvision_names", lambda: ("resnet18", "resnet34", "alexnet"))
    architectures._torchvision_signatures.cache_clear()
    try:
        first = CliRunner().invoke(cli, ["identify", str(weights["base"])])
        assert first.exit_code == 0, first.stderr
        assert first.stderr.startswith(
            "registry: computing the key/shape signatures of 3 torchvision architectures")
        assert "this happens once per torchvision release" in first.stderr
        assert first.stdout.splitlines()[1].split()[:2] == ["100%", "resnet18()"]
        architectures._torchvision_signatures.cache_clear()  # as a new process would
        second = CliRunner().invoke(cli, ["identify", str(weights["base"])])
        assert second.exit_code == 0 and "computing" not in second.stderr
    finally:
        architectures._torchvision_signatures.cache_clear()


# -- the same kinds of fault in import and in the history ---------------------------------


def test_import_gives_versions_already_here_what_the_bundle_has(home: Path, tmp_path: Path,
                                                                weights):
    source = Registry(home=tmp_path / "source")
    source.push(weights["base"], "m", arch="resnet18")
    source.push(weights["tuned"], "m", arch="resnet18", parent="m:1", tags={"task": "cifar10"},
                description="lr 1e-4")
    source.alias("m:2", "production")
    bundle = source.export(["m:2", "m:1"], tmp_path / "b.tar").path

    target = Registry(home=home)
    target.push(weights["base"], "m", arch="resnet18")
    target.push(weights["tuned"], "m", arch="resnet18", tags={"task": "imagenet"})
    result = ok("import", str(bundle))
    assert "note: m:2 is m:2 here; added description 'lr 1e-4', parent m:1, alias production" \
        in result.stderr
    assert "note: m:2 is m:2 here, which keeps its own: its tag task is 'imagenet', not " \
        "'cifar10'" in result.stderr
    mv = target.get("m:2")
    assert (mv.description, mv.parent, mv.aliases, mv.tags) == (
        "lr 1e-4", "m:1", ("production",), {"task": "imagenet"})
    (event,) = [e for e in target.log("m:2") if e.kind == "import"]
    assert event.after["already"] == "m:2" and event.after["aliases"] == ["production"]


def test_import_takes_the_bundles_version_numbers_in_order(home: Path, tmp_path: Path, weights):
    source = Registry(home=tmp_path / "source")
    source.push(weights["base"], "m", arch="resnet18")
    source.push(weights["tuned"], "m", arch="resnet18")
    bundle = source.export(["m:2", "m:1"], tmp_path / "b.tar").path  # refs in any order
    report = Registry(home=home).import_bundle(bundle)
    assert [(a, b) for a, b, _ in report.versions] == [("m:1", "m:1"), ("m:2", "m:2")]
    assert Registry(home=home).get("m:latest").ref == "m:2"


def test_import_says_which_aliases_it_moves(home: Path, tmp_path: Path, weights):
    source = Registry(home=tmp_path / "source")
    source.push(weights["tuned"], "m", arch="resnet18")
    source.alias("m:1", "production")
    bundle = source.export(["m:1"], tmp_path / "b.tar").path
    target = Registry(home=home)
    target.push(weights["base"], "m", arch="resnet18")
    target.alias("m:1", "production")
    result = ok("import", str(bundle))
    assert "note: moved m:production from m:1 to m:2" in result.stderr
    assert target.get("m:production").ref == "m:2"


def test_identical_push_changes_are_history(home: Path, reg: Registry, weights):
    reg.push(weights["base"], "m", arch="resnet18")
    os.environ["REGISTRY_USER"] = "bo"
    try:
        ok("push", str(weights["base"]), "--name", "m", "--arch", "resnet18", "--tag", "a=1",
           "--description", "first")
    finally:
        del os.environ["REGISTRY_USER"]
    newest = reg.log("m")[0]
    assert (newest.kind, newest.actor, newest.after) == (
        "push-update", "bo", {"tags": {"a": "1"}, "description": "first"})
    line = ok("log", "m").stdout.splitlines()[1]
    assert "bo@" in line and "identical push added tag a=1, description 'first'" in line
    reg.push(weights["tuned"], "m", arch="resnet18", parent="m:1")
    reg.remove("m:1")
    assert "; m:2 lost its parent" in ok("log", "m").stdout


# -- what a new user ran into, and its siblings ------------------------------------------


def test_an_unreachable_database_is_one_line_for_every_command(tmp_path: Path):
    env = {"REGISTRY_DATABASE_URL": "postgresql+psycopg://u@127.0.0.1:1/db"}
    for args in (["list"], ["show", "m:1"], ["log"], ["tag", "m:1", "a=1"]):
        message = error_line(run_cli(*args, env=env))
        assert message.startswith("cannot open the catalogue database: "), (args, message)


@pytest.mark.parametrize(
    "args",
    [
        ["push", "{pth}", "--description", "a", "--description", "b"],
        ["push", "{pth}", "--name", "a", "--name", "b"],
        ["push", "{pth}", "--arch", "resnet18", "--arch", "resnet34"],
        ["pull", "m:1", "-o", "a.pth", "--output", "b.pth"],
        ["list", "--limit", "1", "--limit", "2"],
        ["log", "--limit", "1", "--limit", "2"],
    ],
)
def test_an_option_that_takes_one_value_is_given_once(args, home: Path, tmp_path: Path):
    pth = tmp_path / "m.pth"
    torch.save({"w": torch.zeros(2)}, pth)
    message = usage_error(run_cli(*[a.format(pth=pth) for a in args], cwd=tmp_path))
    assert message.endswith("given more than once: give it once")
    assert list(tmp_path.iterdir()) == [pth]  # nothing written, no registry made


def test_python_spellings_of_constants_in_arch_args(home: Path, reg: Registry, weights):
    from registry.keyvalue import parse_arch_args

    assert parse_arch_args(["a=False", "b=True", "c=None", "d=false", "e=False2"]) == {
        "a": False, "b": True, "c": None, "d": False, "e": "False2"}
    ok("push", str(weights["base"]), "--arch", "resnet18", "--arch-arg",
       "zero_init_residual=False")
    assert reg.get("base:1").arch_kwargs == {"zero_init_residual": False}


def test_the_push_event_keeps_the_parent_it_had(home: Path, reg: Registry, weights):
    reg.push(weights["base"], "a", arch="resnet18")
    reg.push(weights["tuned"], "b", arch="resnet18")              # no parent at push
    reg.push(weights["tuned"], "b", arch="resnet18", parent="a:1")  # added later
    history = {e.kind: e for e in reg.log("b:1")}
    assert history["push"].after["parent"] is None
    assert history["push-update"].after == {"parent": "a:1"}
    reg.push(weights["tuned"], "c", arch="resnet18", parent="a:1")
    reg.remove("a:1")
    (pushed,) = [e for e in reg.log("c:1") if e.kind == "push"]
    assert pushed.after["parent"] == "a:1" and reg.get("c:1").parent is None
    assert "from a:1" in ok("log", "c:1").stdout


def test_files_and_folders_say_what_they_are(home: Path, reg: Registry, weights,
                                             tmp_path: Path):
    reg.push(weights["base"], "m", arch="resnet18")
    for target in ("outdir/", str(tmp_path)):
        message = error_line(run_cli("export", "m:1", "-o", target, cwd=tmp_path))
        assert "is a folder: give the bundle's file name" in message
    assert "is a folder, not a checkpoint file" in error_line(run_cli("push", ".", cwd=tmp_path))

    first = ok("pull", "m:1", "-o", "a/b/m.pth", cwd=tmp_path)
    assert first.stderr.startswith("created the folder a/b\nwrote m:1 to a/b/m.pth")
    again = ok("pull", "m:1", "-o", "a/b/m.pth", "--force", cwd=tmp_path)
    assert again.stderr.startswith("replaced a/b/m.pth with m:1")
    ok("export", "m:1", "-o", "b.tar", cwd=tmp_path)
    assert "replaced the file that was there" in ok(
        "export", "m:1", "-o", "b.tar", "--force", cwd=tmp_path).stderr


def test_rm_checks_before_it_asks(home: Path, reg: Registry, weights):
    from conftest import REGISTRY_EXE

    reg.push(weights["base"], "m", arch="resnet18")
    reg.alias("m:1", "production")
    asked = subprocess.run([REGISTRY_EXE, "rm", "m:1"], input="y\n", capture_output=True,
                           text=True)
    assert asked.returncode == 1 and "[y/N]" not in asked.stderr and "--force" in asked.stderr
    unanswered = subprocess.run([REGISTRY_EXE, "rm", "m:1", "--force"],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert unanswered.returncode == 1
    assert unanswered.stderr.rstrip().endswith(
        "Error: nothing deleted: no answer to the question (use --yes to delete without asking)")
    assert reg.get("m:1").aliases == ("production",)


def test_python_values_and_messages(home: Path, reg: Registry, weights, tmp_path: Path):
    reg.push(weights["base"], "m", arch="resnet18", tags={"stage": "dev"})
    assert reg.untag("m:1", "stage").tags == {}  # one key as a string
    for dtype in ("bf16", torch.int8):
        with pytest.raises(InvalidArgumentError, match="give a floating-point torch.dtype"):
            reg.load("m:1", dtype=dtype)
    with pytest.raises(ArchitectureNotFoundError) as info:
        reg.push(weights["base"], "x", arch="zzqq")
    assert "Registry().architectures()" in str(info.value) and "`registry" not in str(
        info.value)
    assert "run `registry archs`" in error_line(
        run_cli("push", str(weights["base"]), "--arch", "zzqq", "--name", "x"))
    with pytest.raises(InvalidArgumentError, match="an empty description says nothing"):
        reg.describe("m:1", " ")
    assert error_line(run_cli("describe", "m:1", "")).endswith("to remove one, use --clear")

    sys.path.insert(0, TESTS)
    try:
        from archs_helper.models import TinyNet
    finally:
        sys.path.remove(TESTS)
    with pytest.raises(ArchitectureMismatchError, match=r"pass arch_kwargs=\{\.\.\.\}"):
        reg.push(TinyNet(hidden=7), name="tiny")


def test_a_damaged_bundle_is_refused_even_where_its_tensors_are_stored(
    home: Path, reg: Registry, weights, tmp_path: Path
):
    import tarfile

    reg.push(weights["base"], "m", arch="resnet18")
    bundle = reg.export(["m:1"], tmp_path / "b.tar").path
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(bundle) as src, tarfile.open(damaged, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.startswith("blobs/") and member.size > 1000:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            dst.addfile(member, io.BytesIO(data))
    message = error_line(run_cli("import", str(damaged)))
    assert "does not match its digest: the bundle was damaged or tampered with" in message
    assert [e.kind for e in reg.log("m")] == ["push"]  # nothing happened


def test_reading_never_creates_a_registry(tmp_path: Path):
    typo = tmp_path / "typo" / "home"
    env = {"REGISTRY_HOME": str(typo)}
    assert run_cli("list", env=env).stderr == "no versions match\n"
    assert error_line(run_cli("show", "m:1", env=env)) == "no model named 'm' in the registry"
    assert not (tmp_path / "typo").exists()


def test_identify_fails_alike_with_json(home: Path, tmp_path: Path):
    odd = tmp_path / "odd.pth"
    torch.save({"nothing.like.a.model": torch.zeros(3)}, odd)
    assert error_line(run_cli("identify", str(odd))).startswith("no known architecture")
    as_json = run_cli("identify", str(odd), "--json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout) == []


def test_import_and_show_say_what_they_record(home: Path, reg: Registry, weights,
                                              tmp_path: Path):
    source = Registry(home=tmp_path / "source")
    source.push(weights["base"], "m", arch="resnet18", tags={"task": "cls"})
    source.alias("m:1", "production")
    bundle = source.export(["m:1"], tmp_path / "b.tar").path
    assert "m:1: imported as m:1 (@production task=cls)" in ok("import", str(bundle)).stderr
