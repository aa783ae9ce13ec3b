"""Hostile and broken checkpoint files, made here, refused in one line with nothing stored.

Hostile: pickles whose ``__reduce__`` (or an INST opcode) would run code, plain, nested
in a dict, in a zip-format or legacy ``.pth``, inside a storage's persistent id; zip
entries named outside the archive, named twice, overlapping, marked as folders; zip
bombs; tensors that repeat their storage (stride 0) or view it hundreds of times; an
allocation of a petabyte; dicts nested 10 000 deep or in themselves; safetensors
headers with overlapping or out-of-range offsets, a length past the file, a huge shape.
Each is refused by ``Registry.push`` and by the ``registry push`` command (exit 1, one
``Error:`` line naming the file), a marker file proves no payload ran (and an unsafe
load of the same file proves the payload is live), and nothing is stored.

Broken: the issue's input (resnet18 cut to 19 KB, which raised a bare ``OSError:
[Errno 22] Invalid argument``) and its kind: every format cut at every boundary of its
layout, a damaged zip directory, a missing or short storage record, a tensor larger
than its storage, a legacy file cut inside a GLOBAL (once called unsafe), a FIFO (once
a hang), a socket, a device, links that loop or lead nowhere, a file the user may not
read, a read that fails with EIO. Each is a CheckpointError naming the file and what
is wrong with it.

(test_bad_input.py covers random bytes, text, an empty dict, int keys, a list, bad
safetensors JSON, a folder, a missing file and the two trap classes of its own.)
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import shlex
import socket
import stat
import struct
import subprocess
import sys
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import make_model, run_cli
from safetensors.torch import save_file

from registry import Registry
from registry.cli import cli
from registry.errors import (
    CheckpointError,
    MissingFileError,
    NotACheckpointError,
    RegistryError,
    UnsafeCheckpointError,
)

ARCH = "resnet18"  # never reached: every file here is refused while it is read


# -- what every refusal must look like --------------------------------------------------------


def assert_one_line_error(stderr: str, stdout: str = "") -> str:
    assert "Traceback" not in stderr
    assert stderr.startswith("Error: "), stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert stdout == ""
    return stderr[len("Error: ") :].strip()


def assert_nothing_stored(home: Path, reg: Registry) -> None:
    assert reg.list() == []
    assert sorted((home / "objects").rglob("*.pack")) == []


def refuse_via_api(reg: Registry, path: Path, error: type[Exception], *fragments: str) -> str:
    """Registry.push refuses ``path`` with ``error``: one line, naming the file."""
    with pytest.raises(error) as info:
        reg.push(path, "hostile", arch=ARCH)
    text = str(info.value)
    assert isinstance(info.value, RegistryError)
    assert "\n" not in text and str(path) in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


def refuse_via_cli_in_process(path: Path) -> str:
    result = CliRunner().invoke(
        cli, ["push", str(path), "--name", "hostile", "--arch", ARCH], prog_name="registry"
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}")
    assert result.exit_code == 1, (result.exit_code, result.stderr)
    return assert_one_line_error(result.stderr, result.stdout)


def refuse_via_installed_command(path: Path, home: Path) -> str:
    result = run_cli(
        "push", str(path), "--name", "hostile", "--arch", ARCH, env={"REGISTRY_HOME": str(home)}
    )
    assert result.returncode == 1, (result.returncode, result.stderr)
    return assert_one_line_error(result.stderr, result.stdout)


# -- crafting files ------------------------------------------------------------------------------


def tiny_state(seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        [
            ("fc.weight", torch.randn(4, 3, generator=g)),
            ("fc.bias", torch.randn(4, generator=g)),
            ("bn.num_batches_tracked", torch.tensor(7)),
        ]
    )


def zip_records(path: Path) -> dict[str, bytes]:
    """A zip-format torch.save file's records, by name under its archive folder."""
    with zipfile.ZipFile(path) as archive:
        return {info.filename.split("/", 1)[1]: archive.read(info) for info in archive.infolist()}


def write_torch_zip(path: Path, records: dict[str, bytes]) -> Path:
    """Records written by torch's own writer (stored, 64-byte aligned), as torch.save does."""
    writer = torch._C.PyTorchFileWriter(str(path))
    for name, data in records.items():
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    return path


def write_python_zip(path: Path, entries: list[tuple[str, bytes, int]]) -> Path:
    """Entries (full name, bytes, compression) written by Python's zipfile."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data, compression in entries:
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


class Storage:
    """A storage in a crafted data.pkl: pickled as torch.save's persistent id."""

    def __init__(self, key: str, numel: int, storage_class: object = torch.FloatStorage):
        self.key, self.numel, self.storage_class = key, numel, storage_class


class Tensor:
    """A tensor in a crafted data.pkl: torch's _rebuild_tensor_v2 of a Storage."""

    def __init__(self, storage: Storage, offset: int, size: tuple, stride: tuple):
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _CraftPickler(pickle.Pickler):
    def persistent_id(self, obj: object):
        if isinstance(obj, Storage):
            return ("storage", obj.storage_class, obj.key, "cpu", obj.numel)
        return None


def crafted_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    _CraftPickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def crafted_zip(path: Path, obj: object, data: dict[str, bytes]) -> Path:
    """A zip-format .pth whose data.pkl pickles ``obj`` and whose storages are ``data``."""
    return write_torch_zip(
        path, {"data.pkl": crafted_pickle(obj), **{f"data/{k}": v for k, v in data.items()}}
    )


class Exec:
    """Unpickling this runs ``exec(code)``: the payload of a hostile pickle."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


class System:
    """Unpickling this runs ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def writes_marker(marker: Path) -> Exec:
    return Exec(f"open({str(marker)!r}, 'w').write('code from the checkpoint ran')")


def touches_marker(marker: Path) -> System:
    return System(f"touch {shlex.quote(str(marker))}")


def unsafe_torch_load(path: Path) -> None:
    torch.load(path, weights_only=False)


def unsafe_pickle_load(path: Path) -> None:
    pickle.loads(path.read_bytes())


# -- the hostile corpus ---------------------------------------------------------------------------


@dataclass
class Hostile:
    make: Callable[[Path, Path], Path]  # (folder, marker) -> the file
    error: type[Exception]
    fragments: tuple[str, ...]
    #: An unsafe load that runs the payload, proving the trap is live (None: no payload).
    control: Callable[[Path], None] | None = None


def _plain_pickle_exec(folder: Path, marker: Path) -> Path:
    path = folder / "plain.pth"
    path.write_bytes(pickle.dumps(writes_marker(marker), protocol=2))
    return path


def _plain_pickle_system(folder: Path, marker: Path) -> Path:
    path = folder / "system.pth"
    path.write_bytes(pickle.dumps({"fc.weight": touches_marker(marker)}, protocol=2))
    return path


def _plain_pickle_protocol_0(folder: Path, marker: Path) -> Path:
    path = folder / "protocol0.pth"
    path.write_bytes(pickle.dumps(touches_marker(marker), protocol=0))
    return path


def _inst_opcode(folder: Path, marker: Path) -> Path:
    """PROTO 2, then INST: the opcode that calls os.system without a REDUCE."""
    path = folder / "inst.pth"
    command = f"touch {shlex.quote(str(marker))}".encode()
    path.write_bytes(b"\x80\x02(S'" + command + b"'\nios\nsystem\n.")
    return path


def _nested_in_dict(folder: Path, marker: Path) -> Path:
    path = folder / "nested.pth"
    state = {**tiny_state(), "extra": {"deeper": [writes_marker(marker)]}}
    torch.save({"epoch": 3, "state_dict": state}, path)
    return path


def _zip_top_level(folder: Path, marker: Path) -> Path:
    path = folder / "toplevel.pth"
    torch.save(writes_marker(marker), path)
    return path


def _legacy_nested(folder: Path, marker: Path) -> Path:
    path = folder / "legacy.pth"
    torch.save(
        {**tiny_state(), "x": writes_marker(marker)}, path, _use_new_zipfile_serialization=False
    )
    return path


def _in_persistent_id(folder: Path, marker: Path) -> Path:
    """The payload inside a storage's persistent id, where torch's own tuple goes."""

    class TrappedStorage(Storage):
        pass

    class Pickler(_CraftPickler):
        def persistent_id(self, obj):
            if isinstance(obj, TrappedStorage):
                return ("storage", torch.FloatStorage, obj.key, touches_marker(marker), obj.numel)
            return None

    buffer = io.BytesIO()
    storage = TrappedStorage("0", 4)
    Pickler(buffer, protocol=2).dump({"w": Tensor(storage, 0, (4,), (1,))})
    return write_torch_zip(folder / "pid.pth", {"data.pkl": buffer.getvalue(), "data/0": bytes(16)})


def _torch_save_records(folder: Path) -> dict[str, bytes]:
    source = folder / "archive.pth"
    torch.save(tiny_state(), source)
    records = zip_records(source)
    source.unlink()
    return records


def _entries(folder: Path, extra: list[tuple[str, bytes, int]]) -> list[tuple[str, bytes, int]]:
    records = _torch_save_records(folder)
    return [(f"archive/{n}", d, zipfile.ZIP_STORED) for n, d in records.items()] + extra


def _traversal(name: str) -> Callable[[Path, Path], Path]:
    def make(folder: Path, marker: Path) -> Path:
        return write_python_zip(folder / "archive.pth", _entries(folder, [(name, b"x", 0)]))

    return make


def _duplicate_names(folder: Path, marker: Path) -> Path:
    entries = _entries(folder, [])
    first_storage = next(e for e in entries if e[0] == "archive/data/0")
    with pytest.warns(UserWarning, match="Duplicate name"):
        return write_python_zip(
            folder / "archive.pth",
            [*entries, (first_storage[0], bytes(len(first_storage[1])), 0)],
        )


def _zip_bomb_storage(folder: Path, marker: Path) -> Path:
    """data/0 inflates to 64 MiB of zeros from ~64 kB, and the pickle declares exactly
    that: torch.load without mmap would inflate it all."""
    numel = 16 << 20
    path = folder / "bomb.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            zipfile.ZipInfo("bomb/data.pkl"),
            crafted_pickle({"w": Tensor(Storage("0", numel), 0, (numel,), (1,))}),
        )
        info = zipfile.ZipInfo("bomb/data/0")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as out:
            chunk = bytes(1 << 20)
            for _ in range(numel * 4 // len(chunk)):
                out.write(chunk)
    return path


def _zip_bomb_pickle(folder: Path, marker: Path) -> Path:
    """data.pkl itself deflated: a state dict beside 64 MiB of zeros in one bytes value."""
    source = folder / "source.pth"
    torch.save({**tiny_state(), "pad": bytes(64 << 20)}, source)
    with zipfile.ZipFile(source) as archive:
        entries = [(i.filename, archive.read(i), zipfile.ZIP_DEFLATED) for i in archive.infolist()]
    source.unlink()
    return write_python_zip(folder / "bombpkl.pth", entries)


def _overlapping_entries(folder: Path, marker: Path) -> Path:
    """Two central-directory entries for one local entry (the overlap of 'better' zip bombs)."""
    path = folder / "overlap.pth"
    torch.save({"a": torch.arange(4.0), "b": torch.arange(4.0) + 10}, path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        first = archive.getinfo("overlap/data/0").header_offset
    central = _central_entry(data, "overlap/data/1")
    data[central + 42 : central + 46] = struct.pack("<I", first)
    path.write_bytes(bytes(data))
    return path


def _central_entry(data: bytes | bytearray, name: str) -> int:
    """The offset of ``name``'s central-directory header."""
    at = data.rindex(b"PK\x05\x06")
    (start,) = struct.unpack("<I", data[at + 16 : at + 20])
    while data[start : start + 4] == b"PK\x01\x02":
        n, e, c = struct.unpack("<HHH", data[start + 28 : start + 34])
        if data[start + 46 : start + 46 + n] == name.encode():
            return start
        start += 46 + n + e + c
    raise AssertionError(f"no central entry {name}")


def _folder_attribute(folder: Path, marker: Path) -> Path:
    """data/0 marked as a folder (MS-DOS attribute 0x10): torch reads it as zeros without
    mmap, its real bytes with mmap; neither is the tensor."""
    path = folder / "dirattr.pth"
    torch.save({"a": torch.arange(4.0) + 1}, path)
    data = bytearray(path.read_bytes())
    central = _central_entry(data, "dirattr/data/0")
    data[central + 38] |= 0x10
    path.write_bytes(bytes(data))
    return path


def _stride_zero(folder: Path, marker: Path) -> Path:
    """4 bytes seen as 2**33 floats (stride 0): 32 GiB once laid out."""
    tensor = Tensor(Storage("0", 1), 0, (2**33,), (0,))
    return crafted_zip(folder / "stride0.pth", {"w": tensor}, {"0": bytes(4)})


def _many_views(folder: Path, marker: Path) -> Path:
    """One 1 MiB storage seen by 300 keys, each transposed (a copy each when laid out)."""
    storage = Storage("0", 512 * 512)
    views = {f"layer{i}.weight": Tensor(storage, 0, (512, 512), (1, 512)) for i in range(300)}
    return crafted_zip(folder / "views.pth", views, {"0": bytes(4 * 512 * 512)})


def _petabyte_bytearray(folder: Path, marker: Path) -> Path:
    class Allocate:
        def __reduce__(self):
            return (bytearray, (1 << 50,))

    path = folder / "alloc.pth"
    torch.save({**tiny_state(), "buffer": Allocate()}, path)
    return path


def _deep_nesting(folder: Path, marker: Path) -> Path:
    depth = 10_000  # ten times Python's recursion limit
    deep = b"\x80\x02" + (b"}X\x01\x00\x00\x00x") * depth + b"}" + b"s" * depth + b"."
    return write_torch_zip(folder / "deep.pth", {"data.pkl": deep})


def _self_cycle(folder: Path, marker: Path) -> Path:
    cycle = {}
    cycle["self"] = cycle
    path = folder / "cycle.pth"
    torch.save(cycle, path)
    return path


def _non_tensor_values(folder: Path, marker: Path) -> Path:
    path = folder / "values.pth"
    torch.save({"fc.weight": 1.5, "fc.bias": "zeros", "bn.running_mean": None}, path)
    return path


def _safetensors(
    header: dict, data: bytes, length: int | None = None
) -> Callable[[Path, Path], Path]:
    def make(folder: Path, marker: Path) -> Path:
        encoded = json.dumps(header).encode()
        path = folder / "hostile.safetensors"
        size = len(encoded) if length is None else length
        path.write_bytes(struct.pack("<Q", size) + encoded + data)
        return path

    return make


def _f32(shape: list[int], start: int, end: int) -> dict:
    return {"dtype": "F32", "shape": shape, "data_offsets": [start, end]}


HOSTILE: dict[str, Hostile] = {
    # pickles that would run code
    "plain-pickle-exec": Hostile(_plain_pickle_exec, UnsafeCheckpointError, ("the global exec",), unsafe_pickle_load),
    "plain-pickle-os-system": Hostile(_plain_pickle_system, UnsafeCheckpointError, ("posix.system",), unsafe_pickle_load),
    "plain-pickle-protocol-0": Hostile(_plain_pickle_protocol_0, NotACheckpointError, ("is not a PyTorch checkpoint",), unsafe_pickle_load),
    "inst-opcode": Hostile(_inst_opcode, UnsafeCheckpointError, ("pickle opcode STRING",), unsafe_pickle_load),
    "nested-in-dict-zip": Hostile(_nested_in_dict, UnsafeCheckpointError, ("the global exec",), unsafe_torch_load),
    "zip-top-level": Hostile(_zip_top_level, UnsafeCheckpointError, ("the global exec",), unsafe_torch_load),
    "legacy-nested": Hostile(_legacy_nested, UnsafeCheckpointError, ("the global exec",), unsafe_torch_load),
    "in-persistent-id": Hostile(_in_persistent_id, UnsafeCheckpointError, ("posix.system",), unsafe_torch_load),
    # zip archives
    "traversal-dotdot": Hostile(_traversal("../../evil.py"), UnsafeCheckpointError, ("'../../evil.py' names a path outside",)),
    "traversal-inside-folder": Hostile(_traversal("archive/../../../tmp/evil"), UnsafeCheckpointError, ("names a path outside",)),
    "traversal-absolute": Hostile(_traversal("/etc/cron.d/evil"), UnsafeCheckpointError, ("names a path outside",)),
    "traversal-backslash": Hostile(_traversal("archive\\..\\..\\evil"), UnsafeCheckpointError, ("names a path outside",)),
    "traversal-drive": Hostile(_traversal("C:/Windows/evil"), UnsafeCheckpointError, ("names a path outside",)),
    "duplicate-names": Hostile(_duplicate_names, UnsafeCheckpointError, ("two zip entries are named 'archive/data/0'",)),
    "zip-bomb-storage": Hostile(_zip_bomb_storage, UnsafeCheckpointError, ("'bomb/data/0' is compressed", "67.1 MB", "zip bomb")),
    "zip-bomb-pickle": Hostile(_zip_bomb_pickle, UnsafeCheckpointError, ("is compressed", "zip bomb")),
    "overlapping-entries": Hostile(_overlapping_entries, NotACheckpointError, ("'overlap/data/1' has a local header naming another entry",)),
    "entry-marked-folder": Hostile(_folder_attribute, NotACheckpointError, ("'dirattr/data/0' is marked as a folder",)),
    # memory and recursion
    "stride-zero": Hostile(_stride_zero, UnsafeCheckpointError, ("34.4 GB once laid out", "stride of 0")),
    "many-views": Hostile(_many_views, UnsafeCheckpointError, ("300 tensors need 314.6 MB",)),
    "petabyte-bytearray": Hostile(_petabyte_bytearray, NotACheckpointError, ("more memory than there is",)),
    "nested-10000-deep": Hostile(_deep_nesting, NotACheckpointError, ("is not a state dict", "'x' (dict)")),
    "dict-in-itself": Hostile(_self_cycle, NotACheckpointError, ("is not a state dict", "'self' (dict)")),
    "non-tensor-values": Hostile(_non_tensor_values, NotACheckpointError, ("3 of its 3 entries are not tensors", "'fc.weight' (float)", "'fc.bias' (str)", "(NoneType)")),
    # safetensors headers
    "st-overlapping-offsets": Hostile(_safetensors({"a": _f32([2], 0, 8), "b": _f32([2], 4, 12)}, bytes(12)), NotACheckpointError, ("invalid offset for tensor `b`",)),
    "st-offsets-past-data": Hostile(_safetensors({"a": _f32([4], 0, 16)}, bytes(8)), NotACheckpointError, ("cut short: its tensors end at byte",)),
    "st-offsets-past-u64": Hostile(_safetensors({"a": _f32([2], 2**64 - 8, 2**64 - 1)}, bytes(8)), NotACheckpointError, ("as a safetensors file",)),
    "st-header-longer-than-file": Hostile(_safetensors({"a": _f32([2], 0, 8)}, bytes(8), length=5000), NotACheckpointError, ("its header declares 5000 bytes",)),
    "st-header-100-mb": Hostile(_safetensors({"a": _f32([2], 0, 8)}, bytes(8), length=99_999_999), NotACheckpointError, ("its header declares 99999999 bytes",)),
    "st-huge-shape": Hostile(_safetensors({"a": _f32([2**40, 2**30], 0, 8)}, bytes(8)), NotACheckpointError, ("overflow",)),
    "st-shape-not-its-bytes": Hostile(_safetensors({"a": _f32([3], 0, 8)}, bytes(8)), NotACheckpointError, ("invalid shape",)),
    "st-hole-between-tensors": Hostile(_safetensors({"a": _f32([2], 8, 16)}, bytes(16)), NotACheckpointError, ("invalid offset",)),
    "st-unknown-dtype": Hostile(_safetensors({"a": {"dtype": "X99", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)), NotACheckpointError, ("unknown variant `X99`",)),
    "st-non-tensor-entry": Hostile(_safetensors({"a": "hello"}, bytes(8)), NotACheckpointError, ("as a safetensors file",)),
    "st-negative-shape": Hostile(_safetensors({"a": _f32([-2], 0, 8)}, bytes(8)), NotACheckpointError, ("as a safetensors file",)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_file_is_refused_and_runs_nothing(
    case: str, home: Path, reg: Registry, tmp_path: Path
):
    hostile = HOSTILE[case]
    marker = tmp_path / "marker"
    folder = tmp_path / "files"
    folder.mkdir()
    path = hostile.make(folder, marker)
    before = sorted(p.name for p in folder.iterdir())

    api = refuse_via_api(reg, path, hostile.error, *hostile.fragments)
    message = refuse_via_cli_in_process(path)
    assert message == api  # the CLI prints the API's message
    assert not marker.exists()
    assert_nothing_stored(home, reg)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing extracted beside it
    assert not (tmp_path / "evil.py").exists() and not (tmp_path.parent / "evil.py").exists()

    if hostile.control is not None:  # the trap is live: an unsafe load runs it
        try:
            hostile.control(path)
        except Exception:  # the payload runs before whatever fails after it
            pass
        assert marker.exists()


#: One case of each kind through the installed command in the default run; all under -m slow.
INSTALLED = ["plain-pickle-os-system", "traversal-dotdot", "zip-bomb-storage", "stride-zero",
             "st-overlapping-offsets"]  # fmt: skip


def _installed_command_refuses(cases: list[str], tmp_path: Path) -> None:
    made = {}
    for case in cases:
        folder = tmp_path / case
        folder.mkdir()
        made[case] = HOSTILE[case].make(folder, folder / "marker"), folder / "home"
    with ThreadPoolExecutor(max_workers=2) as pool:
        messages = dict(
            zip(cases, pool.map(lambda c: refuse_via_installed_command(*made[c]), cases))
        )
    for case in cases:
        path, case_home = made[case]
        assert str(path) in messages[case], messages[case]
        assert all(f in messages[case] for f in HOSTILE[case].fragments), messages[case]
        assert not (path.parent / "marker").exists()
        with Registry(home=case_home) as reg:
            assert_nothing_stored(case_home, reg)


def test_hostile_files_through_the_installed_command(tmp_path: Path):
    _installed_command_refuses(INSTALLED, tmp_path)


@pytest.mark.slow
def test_every_hostile_file_through_the_installed_command(tmp_path: Path):
    _installed_command_refuses(sorted(HOSTILE), tmp_path)


def test_a_rezipped_checkpoint_stored_uncompressed_is_read(
    home: Path, reg: Registry, tmp_path: Path
):
    """The control of the zip cases: Python's zipfile rewriting torch.save's records,
    unaligned but stored, is read, so the refusals above are about what they say."""
    state = make_model("squeezenet1_1", num_classes=3).state_dict()
    source = tmp_path / "source.pth"
    torch.save(state, source)
    with zipfile.ZipFile(source) as archive:
        entries = [(i.filename, archive.read(i), zipfile.ZIP_STORED) for i in archive.infolist()]
    path = write_python_zip(tmp_path / "rezipped.pth", entries)
    mv = reg.push(path, arch="squeezenet1_1")
    loaded = reg.load_state_dict(mv.ref)
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


# -- the input and its kind: files cut short ----------------------------------------------


def test_resnet18_cut_to_19_kb_names_the_file(home: Path, reg: Registry, resnet18_pth: Path):
    """The reported input: a bare ``OSError: [Errno 22] Invalid argument`` before."""
    path = resnet18_pth.with_name("resnet18-cut.pth")
    path.write_bytes(resnet18_pth.read_bytes()[: 19 * 1024])
    text = refuse_via_api(reg, path, NotACheckpointError, "cut short", "19456 bytes")
    assert text.startswith(f"cannot read {path} as a PyTorch checkpoint: the file is cut short")
    message = refuse_via_installed_command(path, home)
    assert message == text and "Invalid argument" not in message
    assert_nothing_stored(home, reg)


def _zip_boundaries(data: bytes) -> list[int]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    points = []
    for info in infos:
        n, e = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
        start = info.header_offset + 30 + n + e
        points += [info.header_offset, info.header_offset + 4, info.header_offset + 30, start,
                   start + info.file_size // 2, start + info.file_size]  # fmt: skip
    end = data.rindex(b"PK\x05\x06")
    (central,) = struct.unpack("<I", data[end + 16 : end + 20])
    points += [central, central + 46, (central + end) // 2, end, end + 4, end + 21]
    return points


def _legacy_boundaries(data: bytes) -> list[int]:
    stream = io.BytesIO(data)
    points = []
    for _ in range(5):  # magic, protocol, system info, the object, the storage keys
        start = stream.tell()
        ops = list(pickletools.genops(stream))
        points += [start + 1, ops[len(ops) // 2][2], stream.tell() - 1, stream.tell()]
    offset = stream.tell()
    while offset < len(data):
        (count,) = struct.unpack("<q", data[offset : offset + 8])
        nbytes = count * (8 if count == 1 else 4)  # tiny_state: float32s, and one int64
        points += [offset + 4, offset + 8, offset + 8 + nbytes // 2]
        offset += 8 + nbytes
    return points


def _safetensors_boundaries(data: bytes) -> list[int]:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    points = [9, 8 + length // 2, 8 + length - 1, 8 + length]
    for key, entry in header.items():
        if key != "__metadata__":
            start, end = entry["data_offsets"]
            points += [
                8 + length + start + 1,
                8 + length + (start + end) // 2,
                8 + length + end - 1,
            ]
    return points


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
def test_cut_at_every_boundary_of_the_layout(fmt: str, home: Path, reg: Registry, tmp_path: Path):
    whole = tmp_path / f"whole.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    if fmt == "safetensors":
        save_file(tiny_state(), whole, metadata={"format": "pt"})
        points = _safetensors_boundaries(whole.read_bytes())
    else:
        torch.save(tiny_state(), whole, _use_new_zipfile_serialization=fmt == "zip")
        boundaries = _zip_boundaries if fmt == "zip" else _legacy_boundaries
        points = boundaries(whole.read_bytes())
    data = whole.read_bytes()
    cuts = sorted({p + d for p in points for d in (-1, 0, 1)} & set(range(16, len(data))))
    assert len(cuts) > 25
    path = whole.with_name(f"cut{whole.suffix}")
    for cut in cuts:
        path.write_bytes(data[:cut])
        refuse_via_api(reg, path, NotACheckpointError, "cut short")
    # Below 16 bytes: a pickle's first byte, a zip's first 4, a safetensors file's first 9
    # say what the file is; with fewer, the file is too short to be anything.
    enough = {"legacy": 1, "zip": 4, "safetensors": 9}[fmt]
    for cut in (0, 1, 3, 8, 15):
        path.write_bytes(data[:cut])
        fragment = "cut short" if cut >= enough else f"it has only {cut} byte"
        refuse_via_api(
            reg, path, NotACheckpointError, "it is empty (0 bytes)" if not cut else fragment
        )
    assert_nothing_stored(home, reg)


# -- the kind: damaged zip directories and storages -------------------------------------------------


def _small_zip(tmp_path: Path) -> tuple[Path, bytearray]:
    path = tmp_path / "small.pth"
    torch.save(tiny_state(), path)
    return path, bytearray(path.read_bytes())


def test_damaged_zip_directory(home: Path, reg: Registry, tmp_path: Path):
    path, data = _small_zip(tmp_path)
    end = data.rindex(b"PK\x05\x06")

    no_end = bytearray(data)
    no_end[end : end + 4] = b"XXXX"
    path.write_bytes(no_end)
    refuse_via_api(
        reg, path, NotACheckpointError, "the zip directory that ends a torch.save file is missing"
    )

    (central,) = struct.unpack("<I", data[end + 16 : end + 20])
    bad_central = bytearray(data)
    bad_central[central : central + 4] = b"PK\x09\x09"
    path.write_bytes(bad_central)
    refuse_via_api(reg, path, NotACheckpointError, "its zip directory is damaged")

    past_end = bytearray(data)
    entry = _central_entry(data, "small/data/1")
    past_end[entry + 42 : entry + 46] = struct.pack("<I", len(data) + 4096)
    path.write_bytes(past_end)
    refuse_via_api(reg, path, NotACheckpointError, "'small/data/1' has no local header")

    longer = bytearray(data)
    entry = _central_entry(data, "small/data/0")
    longer[entry + 20 : entry + 28] = struct.pack("<II", 1 << 30, 1 << 30)  # both sizes
    path.write_bytes(longer)
    refuse_via_api(
        reg, path, NotACheckpointError, "'small/data/0' (1073741824 bytes", "runs past the end"
    )
    assert_nothing_stored(home, reg)


def test_missing_storage_record(home: Path, reg: Registry, tmp_path: Path):
    path, _ = _small_zip(tmp_path)
    records = zip_records(path)
    del records["data/1"]
    write_torch_zip(path, records)
    with pytest.raises(RuntimeError, match="data/1"):  # torch agrees it is broken
        torch.load(path, weights_only=True)
    refuse_via_api(
        reg, path, NotACheckpointError, "names the storage 'small/data/1', which the archive lacks"
    )
    assert_nothing_stored(home, reg)


def test_storage_record_shorter_than_the_pickle_declares(home: Path, reg: Registry, tmp_path: Path):
    """torch's mmap reader takes the declared size at its word and reads past the record
    into whatever follows; torch.load without mmap refuses. So does registry."""
    storage = Storage("0", 8)
    path = crafted_zip(tmp_path / "short.pth", {"w": Tensor(storage, 0, (8,), (1,))},
                       {"0": struct.pack("<4f", 1, 2, 3, 4)})  # fmt: skip
    over_read = torch.load(path, weights_only=True, mmap=True)["w"]
    assert over_read.shape == (8,) and over_read[:4].tolist() == [1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="record size"):
        torch.load(path, weights_only=True)
    refuse_via_api(
        reg, path, NotACheckpointError, "'short/data/0' holds 16 bytes, but the pickle declares 32"
    )
    assert_nothing_stored(home, reg)


@pytest.mark.parametrize(
    "size", [(5,), (2**40,), (2**62, 2**62)], ids=["one-more", "2**40", "overflow"]
)
def test_tensor_larger_than_its_storage(size: tuple, home: Path, reg: Registry, tmp_path: Path):
    stride = (1,) if len(size) == 1 else (size[1], 1)
    path = crafted_zip(tmp_path / "large.pth", {"w": Tensor(Storage("0", 4), 0, size, stride)},
                       {"0": bytes(16)})  # fmt: skip
    refuse_via_api(reg, path, NotACheckpointError, "as a PyTorch checkpoint")
    assert_nothing_stored(home, reg)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated
def test_torchscript_archive(home: Path, reg: Registry, tmp_path: Path):
    path = tmp_path / "scripted.pth"
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), path)
    refuse_via_api(
        reg, path, NotACheckpointError, "a TorchScript archive (torch.jit.save), not a state dict"
    )
    assert_nothing_stored(home, reg)


# -- the kind: legacy (pre-1.6) files ---------------------------------------------------------------


def _legacy(tmp_path: Path) -> tuple[Path, bytes, list[tuple[int, int]]]:
    """A legacy file, and each of its five pickles' (start, end)."""
    path = tmp_path / "legacy.pth"
    torch.save(tiny_state(), path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    stream, spans = io.BytesIO(data), []
    for _ in range(5):
        start = stream.tell()
        list(pickletools.genops(stream))
        spans.append((start, stream.tell()))
    return path, data, spans


def test_legacy_cut_inside_a_global_is_damage_not_an_unsafe_pickle(
    home: Path, reg: Registry, tmp_path: Path
):
    """Cut inside 'collections\\nOrderedDict\\n', weights_only saw the global
    'collections.' and the file was called unsafe."""
    path, data, spans = _legacy(tmp_path)
    start, end = spans[3]
    at = data.index(b"collections\nOrderedDict", start, end)
    for cut in (at + len(b"collections\n"), at + len(b"collections\nOrdered")):
        path.write_bytes(data[:cut])
        refuse_via_api(reg, path, NotACheckpointError, "its pickle is cut short")
    assert_nothing_stored(home, reg)


def test_legacy_storage_list_names_an_undeclared_storage(home: Path, reg: Registry, tmp_path: Path):
    """torch raised a bare AssertionError here."""
    path, data, spans = _legacy(tmp_path)
    start, end = spans[4]
    keys = pickle.loads(data[start:end])
    assert isinstance(keys, list) and len(keys) == 3
    path.write_bytes(data[:start] + pickle.dumps(["404", *keys[1:]], protocol=2) + data[end:])
    with pytest.raises(AssertionError):
        torch.load(path, weights_only=True)
    refuse_via_api(reg, path, NotACheckpointError, "lists the storage '404', which no tensor")
    assert_nothing_stored(home, reg)


def test_legacy_storage_declared_but_not_held(home: Path, reg: Registry, tmp_path: Path):
    """The converse, found by the long fuzz run (tests/data/legacy-storage-not-held.pth,
    its input): a one-byte mutation of a tied weight's storage key in the pickle, so
    embed.weight's storage has no bytes in the file and torch.load hands back memory it
    never filled. Refused, never stored as it happened to be."""
    path = tmp_path / "weights.pth"
    path.write_bytes((Path(__file__).parent / "data" / "legacy-storage-not-held.pth").read_bytes())
    assert "embed.weight" in torch.load(path, weights_only=True)  # torch reads it anyway
    refuse_via_api(reg, path, NotACheckpointError, "'84262807048320', whose bytes the file")
    assert_nothing_stored(home, reg)


def test_legacy_storage_of_the_wrong_length(home: Path, reg: Registry, tmp_path: Path):
    path, data, spans = _legacy(tmp_path)
    offset = spans[4][1]
    damaged = bytearray(data)
    damaged[offset : offset + 8] = struct.pack("<q", 1 << 40)
    path.write_bytes(bytes(damaged))
    refuse_via_api(reg, path, NotACheckpointError, "holds 1099511627776 elements of")
    assert_nothing_stored(home, reg)


# -- the kind: paths that are not readable files ------------------------------------------------------


def test_a_fifo_is_refused_without_blocking(home: Path, reg: Registry, tmp_path: Path):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def push() -> None:
        try:
            reg.push(fifo, arch=ARCH)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=push, daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():  # opening it for reading blocks until a writer comes: be one
        with open(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), "wb"):
            pass
        worker.join(10)
        pytest.fail("Registry.push blocked on a FIFO")
    (error,) = outcome
    assert isinstance(error, CheckpointError)
    assert str(error) == f"{fifo} is a named pipe (FIFO), not a checkpoint file"
    link = tmp_path / "link.pth"
    link.symlink_to(fifo)
    refuse_via_api(reg, link, CheckpointError, "is a named pipe (FIFO)")
    assert refuse_via_cli_in_process(fifo) == str(error)
    assert_nothing_stored(home, reg)


def test_sockets_devices_and_links(
    home: Path, reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    server = socket.socket(socket.AF_UNIX)
    server.bind("s.pth")
    try:
        refuse_via_api(
            reg, tmp_path / "s.pth", CheckpointError, "is a socket, not a checkpoint file"
        )
    finally:
        server.close()
    refuse_via_api(
        reg, Path("/dev/null"), CheckpointError, "is a character device, not a checkpoint file"
    )
    loop = tmp_path / "loop.pth"
    loop.symlink_to(loop)
    refuse_via_api(reg, loop, CheckpointError, "cannot read", "Too many levels of symbolic links")
    dangling = tmp_path / "dangling.pth"
    dangling.symlink_to(tmp_path / "gone.pth")
    with pytest.raises(MissingFileError, match="no such file"):
        reg.push(dangling, arch=ARCH)
    with pytest.raises(CheckpointError, match="embedded null byte"):
        reg.push(str(tmp_path / "nul\0.pth"), arch=ARCH)
    assert_nothing_stored(home, reg)


def test_a_read_that_fails_names_the_file_and_the_error(home: Path, reg: Registry):
    """/proc/self/mem is a regular file whose first page is not mapped: EIO on read."""
    mem = Path("/proc/self/mem")
    if not mem.exists():
        pytest.skip("no /proc/self/mem here")
    text = refuse_via_api(
        reg, mem, CheckpointError, "cannot read /proc/self/mem: Input/output error"
    )
    assert refuse_via_cli_in_process(mem) == text
    assert_nothing_stored(home, reg)


_PUSH = r"""
import sys
from click.testing import CliRunner
from registry import Registry
from registry.cli import cli
from registry.errors import CheckpointError
path, home = sys.argv[1], sys.argv[2]
try:
    Registry(home=home).push(path, arch="resnet18")
except CheckpointError as error:
    print(f"api: {error}")
result = CliRunner().invoke(cli, ["push", path, "--arch", "resnet18"], env={"REGISTRY_HOME": home})
print(f"cli: {result.exit_code} {result.stderr}", end="")
"""


def _without_dac_override() -> None:
    """In a child before exec: root without the capabilities that let it read any file."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_file_the_user_may_not_read(home: Path, reg: Registry, tmp_path: Path):
    """Mode 000. Root reads anything, so as root the pushes run in processes without
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, where the mode holds (one process for the
    API and the CLI in-process: the command is the same code)."""
    path = tmp_path / "private.pth"
    torch.save(tiny_state(), path)
    path.chmod(0)
    expected = f"cannot read {path}: Permission denied"
    if os.geteuid() != 0:
        if os.access(path, os.R_OK):
            pytest.skip("this user reads files whatever their mode")
        refuse_via_api(reg, path, CheckpointError, expected)
        assert refuse_via_installed_command(path, home) == expected
    else:
        probe = subprocess.run(["cat", str(path)], preexec_fn=_without_dac_override,
                               capture_output=True, text=True)  # fmt: skip
        if probe.returncode == 0 or "Permission denied" not in probe.stderr:
            pytest.skip(f"capabilities cannot be dropped here: {probe.stderr.strip()}")
        run = subprocess.run(
            [sys.executable, "-c", _PUSH, str(path), str(home)],
            capture_output=True, text=True, timeout=300, preexec_fn=_without_dac_override,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert run.stdout == f"api: {expected}\ncli: 1 Error: {expected}\n"
    assert_nothing_stored(home, reg)
    assert stat.S_IMODE(path.stat().st_mode) == 0
