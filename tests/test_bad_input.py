"""Bad input: a one-line ``Error:`` and exit code 1 from the CLI, a precise exception
from the Python API, and nothing stored either way."""

from __future__ import annotations

import errno
import io
import json
import os
import random
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import make_model, run_cli

from registry import Registry
from registry.cli import cli
from registry.errors import (
    ArchitectureError,
    ArchitectureMismatchError,
    ArchitectureNotFoundError,
    CheckpointError,
    IntegrityError,
    InvalidArgumentError,
    InvalidReferenceError,
    MissingFileError,
    ModelNotFoundError,
    NotACheckpointError,
    UnsafeCheckpointError,
    VersionNotFoundError,
)
from registry.keyvalue import parse_arch_args, parse_tags

TESTS_DIR = Path(__file__).parent


# -- helpers -------------------------------------------------------------------------------


def assert_one_line_error(stderr: str, stdout: str = "") -> str:
    """The CLI's error contract: one ``Error: ...`` line on stderr, nothing on stdout."""
    assert "Traceback" not in stderr
    assert stderr.startswith("Error: "), stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert stdout == ""
    return stderr[len("Error: "):].strip()


def cli_error(*args: str) -> str:
    """Run the CLI in-process, expect exit code 1 and one error line; return the message."""
    result = CliRunner().invoke(cli, list(args), prog_name="registry")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}") \
            from result.exception
    assert result.exit_code == 1, (result.exit_code, result.stderr)
    return assert_one_line_error(result.stderr, result.stdout)


def cli_usage_error(*args: str) -> str:
    """Run the CLI in-process, expect click's usage error (exit code 2, the usage line, no
    traceback, nothing on stdout); return the message."""
    result = CliRunner().invoke(cli, list(args), prog_name="registry")
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.startswith("Usage: registry "), result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error: ")]
    return line[len("Error: "):]


def pack_files(home: Path) -> list[Path]:
    return sorted((home / "objects").rglob("*.pack"))


def assert_nothing_stored(home: Path, reg: Registry) -> None:
    assert reg.list() == []
    assert pack_files(home) == []


def push_args(path: Path | str, *extra: str, arch: str = "resnet18") -> list[str]:
    return ["push", str(path), "--arch", arch, *extra]


# -- files that are not checkpoints ----------------------------------------------------


def _random_bytes(path: Path) -> None:
    data = random.Random(0).randbytes(4096)
    assert data[:1] != b"\x80" and not data.startswith(b"PK")  # not sniffed as a pickle or zip
    path.write_bytes(data)


def _text(path: Path) -> None:
    path.write_text("epoch,loss\n1,0.93\n2,0.71\n")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated_zip(path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(1000.0)}, buffer)
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2])


def _not_a_dict(path: Path) -> None:
    torch.save([torch.zeros(3), torch.ones(3)], path)


def _empty_dict(path: Path) -> None:
    torch.save({}, path)


def _int_keys(path: Path) -> None:
    torch.save({0: torch.zeros(3)}, path)


def _bad_safetensors(path: Path) -> None:
    path.write_bytes((64).to_bytes(8, "little") + b'{"w": not json')


BAD_FILES = {
    "random-bytes": (_random_bytes, NotACheckpointError, "is not a PyTorch checkpoint (.pth) or a safetensors file"),
    "text": (_text, NotACheckpointError, "is not a PyTorch checkpoint (.pth) or a safetensors file"),
    "empty": (_empty, NotACheckpointError, "is not a PyTorch checkpoint (.pth) or a safetensors file"),
    "truncated-zip": (_truncated_zip, NotACheckpointError, "as a PyTorch checkpoint"),
    "list": (_not_a_dict, NotACheckpointError, "holds a list, not a state dict"),
    "empty-dict": (_empty_dict, NotACheckpointError, "holds an empty dict"),
    "int-keys": (_int_keys, NotACheckpointError, "is not a state dict"),
    "bad-safetensors": (_bad_safetensors, NotACheckpointError, "as a safetensors file"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_not_a_checkpoint(kind: str, home: Path, reg: Registry, tmp_path: Path):
    make, error, fragment = BAD_FILES[kind]
    path = tmp_path / ("bad.safetensors" if kind == "bad-safetensors" else "bad.pth")
    make(path)

    message = cli_error(*push_args(path))
    assert fragment in message and str(path) in message

    with pytest.raises(error) as info:
        reg.push(path, arch="resnet18")
    assert fragment in str(info.value) and str(path) in str(info.value)
    assert str(info.value) in message  # the CLI prints the API's message
    assert_nothing_stored(home, reg)


def test_missing_file(home: Path, reg: Registry, tmp_path: Path):
    missing = tmp_path / "nope" / "model.pth"
    message = cli_error(*push_args(missing))
    assert message == f"no such file: {missing}"
    with pytest.raises(FileNotFoundError, match="no such file") as info:
        reg.push(missing, arch="resnet18")
    # the error tree's promise: a registry error that is also the matching built-in
    assert isinstance(info.value, MissingFileError) and isinstance(info.value, LookupError)
    assert info.value.filename == str(missing) and info.value.errno == errno.ENOENT
    assert str(info.value) == f"no such file: {missing}"
    with pytest.raises(FileNotFoundError, match="no such file"):
        reg.identify(missing)
    with pytest.raises(FileNotFoundError, match="no such file"):
        reg.import_bundle(tmp_path / "nope.tar")
    assert cli_error("import", str(tmp_path / "nope.tar")) == f"no such file: {tmp_path / 'nope.tar'}"
    assert_nothing_stored(home, reg)


def test_directory_via_api(home: Path, reg: Registry, tmp_path: Path):
    folder = tmp_path / "weights.pth"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        reg.push(folder, arch="resnet18")
    assert_nothing_stored(home, reg)


def test_directory_via_cli(home: Path, reg: Registry, tmp_path: Path):
    folder = tmp_path / "weights.pth"
    folder.mkdir()
    message = cli_error(*push_args(folder))
    assert "is a folder" in message
    assert_nothing_stored(home, reg)


@pytest.mark.parametrize("data", [b"\x80", b"\x80\x02."], ids=["one-byte", "stop-on-empty-stack"])
def test_corrupt_legacy_pickle(data: bytes, home: Path, reg: Registry, tmp_path: Path):
    path = tmp_path / "legacy.pth"
    path.write_bytes(data)
    with pytest.raises(NotACheckpointError):
        reg.push(path, arch="resnet18")
    assert "as a PyTorch checkpoint" in cli_error(*push_args(path))
    assert_nothing_stored(home, reg)


# -- pickles that weights_only refuses ----------------------------------------------------


def _leave_marker(path: str) -> None:
    Path(path).write_text("code from the checkpoint ran")


class SetstateTrap:
    """Unpickling this runs __setstate__, which leaves a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __setstate__(self, state: dict) -> None:
        _leave_marker(state["marker"])


class ReduceTrap:
    """Unpickling this calls _leave_marker through __reduce__."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (_leave_marker, (self.marker,))


def _trap_checkpoint(path: Path, trap: object, state: dict[str, torch.Tensor]) -> None:
    torch.save({**state, "trap": trap}, path)


@pytest.mark.parametrize(
    "trap_class, global_name",
    [(SetstateTrap, "SetstateTrap"), (ReduceTrap, "_leave_marker")],
    ids=["setstate", "reduce"],
)
def test_unsafe_pickle_is_refused_and_never_runs(trap_class, global_name, home: Path, reg: Registry,
                                                 tmp_path: Path, resnet18_state):
    marker = tmp_path / "marker"
    path = tmp_path / "trap.pth"
    _trap_checkpoint(path, trap_class(str(marker)), resnet18_state)
    qualified = f"{__name__}.{global_name}"

    with pytest.raises(UnsafeCheckpointError) as info:
        reg.push(path, arch="resnet18")
    text = str(info.value)
    assert "refused" in text and qualified in text and "weights_only" in text
    assert not marker.exists()

    message = cli_error(*push_args(path))
    assert message.startswith(f"refused to load {path}") and qualified in message
    assert not marker.exists()
    assert_nothing_stored(home, reg)

    # Control: the trap is real; an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code from the checkpoint ran"


def test_unsafe_pickle_installed_command(home: Path, reg: Registry, tmp_path: Path):
    """The real command: one line, no traceback, and the trap's code (importable here via
    PYTHONPATH, so an unsafe load would run it) never runs."""
    marker = tmp_path / "marker"
    path = tmp_path / "trap.pth"
    torch.save({"fc.bias": torch.zeros(1000), "trap": SetstateTrap(str(marker))}, path)
    result = run_cli(*push_args(path), env={"PYTHONPATH": str(TESTS_DIR)})
    assert result.returncode == 1
    message = assert_one_line_error(result.stderr, result.stdout)
    assert "refused" in message and f"{__name__}.SetstateTrap" in message
    assert not marker.exists()
    assert_nothing_stored(home, reg)


# -- architectures --------------------------------------------------------------------------


def test_unknown_architecture(home: Path, reg: Registry, resnet18_pth: Path):
    message = cli_error(*push_args(resnet18_pth, arch="resnet19"))
    assert "unknown architecture 'resnet19'" in message and "did you mean" in message
    assert "resnet18" in message
    with pytest.raises(ArchitectureNotFoundError, match="resnet18"):
        reg.push(resnet18_pth, arch="resnet19")
    with pytest.raises(ArchitectureNotFoundError, match=r"Registry\(\).architectures\(\) lists"):
        reg.push(resnet18_pth, arch="zzzzzzzz")  # Python advice to a Python user
    assert "run `registry archs`" in cli_error(*push_args(resnet18_pth, arch="zzzzzzzz"))
    with pytest.raises(InvalidArgumentError, match="must name an architecture"):
        reg.push(resnet18_pth, arch="")
    assert_nothing_stored(home, reg)


def test_weights_for_another_architecture(home: Path, reg: Registry, resnet18_pth: Path,
                                          resnet18_state):
    # What torch itself reports: the 16 BatchNorm layers resnet18's _metadata does not
    # cover get their num_batches_tracked from BatchNorm's own upgrade path.
    expected_missing = make_model("resnet34").load_state_dict(resnet18_state, strict=False)
    expected_missing = expected_missing.missing_keys
    assert len(expected_missing) > 5

    message = cli_error(*push_args(resnet18_pth, arch="resnet34"))
    assert message.startswith("weights do not fit resnet34()")
    assert f"{len(expected_missing)} missing keys" in message
    assert expected_missing[0] in message
    assert f"and {len(expected_missing) - 5} more" in message

    with pytest.raises(ArchitectureMismatchError) as info:
        reg.push(resnet18_pth, arch="resnet34")
    assert info.value.missing == expected_missing
    assert info.value.unexpected == [] and info.value.mismatched == []
    assert str(info.value) == message
    assert_nothing_stored(home, reg)


def test_head_size_mismatch_suggests_num_classes(home: Path, reg: Registry, tmp_path: Path):
    """A head size other than the one asked for is refused, with the size the weights have.

    (With no num_classes given at all, the registry infers it: see test_architectures.)
    """
    state = make_model("resnet18", num_classes=10).state_dict()
    path = tmp_path / "cifar.pth"
    torch.save(state, path)

    message = cli_error(*push_args(path), "--arch-arg", "num_classes=5")
    assert "2 mis-shaped keys" in message
    assert "fc.weight: weights [10, 512] vs model [5, 512]" in message
    assert "num_classes=10" in message

    with pytest.raises(ArchitectureMismatchError) as info:
        reg.push(state, "cifar", arch="resnet18", arch_kwargs={"num_classes": 5})
    assert [k for k, _, _ in info.value.mismatched] == ["fc.weight", "fc.bias"]
    assert info.value.missing == [] and info.value.unexpected == []
    # The Python user is not told about a CLI flag; the size that fits is named.
    assert "the head fits num_classes=10" in str(info.value)
    assert "--arch-arg" not in str(info.value)
    assert_nothing_stored(home, reg)


# -- --arch-arg, --tag, --name ------------------------------------------------------------


@pytest.mark.parametrize(
    "item, fragment",
    [
        ("num_classes", "expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("1x=3", "'1x' is not a Python argument name"),
        ("num_classes=NaN", "not JSON-serialisable"),
        ("weights=DEFAULT", "set by the registry"),
    ],
)
def test_malformed_arch_arg(item: str, fragment: str, home: Path, reg: Registry, resnet18_pth: Path):
    message = cli_usage_error(*push_args(resnet18_pth, "--arch-arg", item))
    assert message.startswith("Invalid value for '--arch-arg'") and fragment in message
    with pytest.raises(InvalidArgumentError, match=fragment.replace("(", r"\(")):
        parse_arch_args([item])
    assert_nothing_stored(home, reg)


def test_arch_arg_values_the_builder_refuses(home: Path, reg: Registry, resnet18_pth: Path):
    message = cli_error(*push_args(resnet18_pth, "--arch-arg", "bogus=1"))
    assert message.startswith("cannot build resnet18(bogus=1)") and "bogus" in message
    assert "cannot build resnet18(num_classes=-1)" in cli_error(
        *push_args(resnet18_pth, "--arch-arg", "num_classes=-1"))

    with pytest.raises(ArchitectureError, match="unexpected keyword argument 'bogus'"):
        reg.push(resnet18_pth, arch="resnet18", arch_kwargs={"bogus": 1})
    with pytest.raises(InvalidArgumentError, match="invalid architecture argument name '1x'"):
        reg.push(resnet18_pth, arch="resnet18", arch_kwargs={"1x": 3})
    with pytest.raises(InvalidArgumentError, match="not JSON-serialisable"):
        reg.push(resnet18_pth, arch="resnet18", arch_kwargs={"num_classes": object()})
    assert_nothing_stored(home, reg)


@pytest.mark.parametrize(
    "item, fragment",
    [
        ("novalue", "invalid tag 'novalue': expected KEY=VALUE"),
        ("=v", "expected KEY=VALUE"),
        ("a b=1", "invalid tag key 'a b'"),
        ("k=" + "x" * 5000, "longer than 4096 characters"),
    ],
    ids=["no-equals", "no-key", "space-in-key", "too-long"],
)
def test_malformed_tag(item: str, fragment: str, home: Path, reg: Registry, resnet18_pth: Path):
    message = cli_usage_error(*push_args(resnet18_pth, "--tag", item))
    assert message.startswith("Invalid value for '--tag'") and fragment in message
    with pytest.raises(InvalidArgumentError) as info:
        parse_tags([item])
    assert fragment in str(info.value)
    assert_nothing_stored(home, reg)


def test_malformed_tag_via_api_and_list(home: Path, reg: Registry, resnet18_pth: Path):
    with pytest.raises(InvalidArgumentError, match="invalid tag key 'a b'"):
        reg.push(resnet18_pth, arch="resnet18", tags={"a b": "1"})
    with pytest.raises(InvalidArgumentError, match="invalid tag key"):
        reg.list(tags={"": "x"})
    assert "expected KEY=VALUE" in cli_usage_error("list", "--tag", "novalue")
    assert_nothing_stored(home, reg)


@pytest.mark.parametrize("name", ["a b", "../x", "/abs", "x/", ".hidden", "a" * 129])
def test_invalid_model_name(name: str, home: Path, reg: Registry, resnet18_pth: Path,
                            resnet18_state):
    message = cli_usage_error(*push_args(resnet18_pth, "--name", name))
    assert message.startswith("Invalid value for '--name'") and "model name" in message
    with pytest.raises(InvalidArgumentError, match="model name"):
        reg.push(resnet18_pth, name, arch="resnet18")
    with pytest.raises(InvalidArgumentError, match="model name"):
        reg.push(resnet18_state, name, arch="resnet18")
    assert_nothing_stored(home, reg)


# -- state dicts from Python -----------------------------------------------------------------


def test_state_dict_with_non_tensor_value(home: Path, reg: Registry, resnet18_state):
    bad = OrderedDict(resnet18_state)
    bad["fc.bias"] = 3
    bad["note"] = "hello"
    with pytest.raises(NotACheckpointError) as info:
        reg.push(bad, "model", arch="resnet18")
    text = str(info.value)
    assert "2 of its 123 entries are not tensors" in text
    assert "'fc.bias' (int)" in text and "'note' (str)" in text
    with pytest.raises(InvalidArgumentError, match="name= is required"):
        reg.push(dict(resnet18_state), arch="resnet18")
    with pytest.raises(InvalidArgumentError, match="cannot push a list"):
        reg.push([torch.zeros(1)], "model", arch="resnet18")
    assert_nothing_stored(home, reg)


def test_wrapped_state_dict_is_accepted(home: Path, reg: Registry, tmp_path: Path, resnet18_state):
    """Positive check: a training checkpoint with the state dict under 'state_dict' works."""
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": resnet18_state, "epoch": 7, "best_acc": 0.91}, path)
    result = CliRunner().invoke(cli, push_args(path, "--json"), prog_name="registry")
    assert result.exit_code == 0, result.stderr
    assert "note: using the state dict stored under the 'state_dict' key" in result.stderr
    data = json.loads(result.stdout)
    assert data["ref"] == "wrapped:1" and data["created"] is True
    assert data["notes"] == ["using the state dict stored under the 'state_dict' key"]

    plain = reg.push(resnet18_state, "plain", arch="resnet18")
    assert data["digest"] == f"sha256:{plain.digest}"
    again = reg.push(path, arch="resnet18")
    assert again.ref == "wrapped:1" and again.pushed.created is False
    assert [mv.ref for mv in reg.list()] == ["plain:1", "wrapped:1"]


# -- references ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref, error, fragment",
    [
        ("nosuch", ModelNotFoundError, "no model named 'nosuch'"),
        ("modle:1", ModelNotFoundError, "did you mean model?"),
        ("model:9", VersionNotFoundError, "model has no version 9; the latest is model:1"),
        ("model:prod", VersionNotFoundError, "model has no alias 'prod'"),
        ("model@sha256:ffffffff", VersionNotFoundError, "no version with digest sha256:ffffffff"),
        ("model:", InvalidReferenceError, "'model:'"),
        ("model:0", InvalidReferenceError, "versions start at 1"),
        ("Bad Name", InvalidReferenceError, "invalid reference 'Bad Name'"),
        ("model@sha256:zz", InvalidReferenceError, "expected NAME@sha256:HEX"),
        ("model@md5:abcd", InvalidReferenceError, "expected NAME@sha256:HEX"),
        ("model@sha256:abc", InvalidReferenceError, "too short"),
        ("../etc", InvalidReferenceError, "invalid reference '../etc'"),
        ("/etc/passwd", InvalidReferenceError, "invalid model name"),
    ],
)
def test_unknown_or_malformed_reference(ref: str, error: type, fragment: str, home: Path,
                                        reg: Registry, tmp_path: Path, resnet18_state,
                                        monkeypatch: pytest.MonkeyPatch):
    reg.push(resnet18_state, "model", arch="resnet18")
    if ref.startswith("model@sha256:ffff"):
        assert not reg.get("model").digest.startswith("ffffffff")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    # a REF that cannot be one is bad usage (exit 2); one that names nothing stored, exit 1
    check = cli_usage_error if error is InvalidReferenceError else cli_error
    assert fragment in check("show", ref)
    assert fragment in check("pull", ref)
    assert fragment in check("pull", ref, "-o", str(work / "out.pth"))
    for call in (reg.get, reg.load, reg.load_state_dict, reg.pull):
        with pytest.raises(error) as info:
            call(ref)
        assert fragment in str(info.value)
    assert list(work.iterdir()) == []  # no pull wrote anything
    assert [mv.ref for mv in reg.list()] == ["model:1"]


def test_unknown_name_in_list(home: Path, reg: Registry):
    assert "invalid model name" in cli_usage_error("list", "Bad Name")
    with pytest.raises(InvalidArgumentError):
        reg.list("../x")


def test_empty_version_message(home: Path, reg: Registry):
    with pytest.raises(InvalidReferenceError, match="empty version"):
        reg.get("model:")


# -- a corrupt tensor store ------------------------------------------------------------------


def _corrupt_largest_blob(home: Path) -> str:
    """Flip one byte in the middle of the pack's largest blob; return that blob's digest."""
    (pack,) = pack_files(home)
    data = pack.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    digest, entry = max(
        ((k, v) for k, v in header.items() if not k.startswith("__")),
        key=lambda kv: kv[1]["data_offsets"][1] - kv[1]["data_offsets"][0],
    )
    start, end = entry["data_offsets"]
    position = 8 + header_len + (start + end) // 2
    mode = pack.stat().st_mode
    pack.chmod(0o644)
    with open(pack, "r+b") as f:
        f.seek(position)
        byte = f.read(1)
        f.seek(position)
        f.write(bytes([byte[0] ^ 0xFF]))
    pack.chmod(mode)
    return digest


def test_corrupt_store(home: Path, reg: Registry, tmp_path: Path, resnet18_state,
                       monkeypatch: pytest.MonkeyPatch):
    mv = reg.push(resnet18_state, "model", arch="resnet18")
    digest = _corrupt_largest_blob(home)
    names = [t.name for t in reg.get("model:1").tensors if t.digest == digest]
    assert len(names) == 1
    (name,) = names

    calls = (
        reg.load,
        reg.load_state_dict,
        reg.pull,
        lambda ref: reg.load(ref, verify="sha256"),
        lambda ref: reg.load_state_dict(ref, verify="sha256"),
    )
    for call in calls:  # checksums (the default) and full sha256 both catch it
        with pytest.raises(IntegrityError) as info:
            call("model:1")
        assert name in str(info.value) and "corrupt" in str(info.value)
    # The check is what catches it: unverified, the flipped tensor differs from the original.
    unverified = reg.load_state_dict("model:1", verify=False)
    assert not torch.equal(unverified[name], resnet18_state[name])
    del unverified

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for args in (["pull", "model:1"], ["pull", "model:1", "--format", "safetensors"],
                 ["pull", "model:1", "-o", str(work / "out.pth")]):
        message = cli_error(*args)
        assert message.startswith("model:1: stored bytes of 1 tensor do not match")
        assert name in message
    assert list(work.iterdir()) == []  # neither the output nor a temporary file
    assert [v.ref for v in reg.list()] == ["model:1"] and reg.get("model:1").digest == mv.digest


def test_corrupt_store_installed_command(home: Path, reg: Registry, tmp_path: Path, resnet18_state):
    reg.push(resnet18_state, "model", arch="resnet18")
    digest = _corrupt_largest_blob(home)
    (name,) = [t.name for t in reg.get("model:1").tensors if t.digest == digest]
    work = tmp_path / "work"
    work.mkdir()
    result = run_cli("pull", "model:1", "-o", "out.pth", cwd=work)
    assert result.returncode == 1
    message = assert_one_line_error(result.stderr, result.stdout)
    assert name in message and "corrupt" in message
    assert os.listdir(work) == []
