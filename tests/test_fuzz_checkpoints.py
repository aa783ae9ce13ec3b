"""Fuzzing the reader of users' checkpoint files (``registry/checkpoints/``) through
``Registry.push``.

Real files of a small model (a tied weight, float16, bool and int64 buffers) are
mutated: ``.pth`` in the zip format and the legacy one (``_use_new_zipfile_serialization=
False``), and ``.safetensors``. Bytes are flipped or set (aimed at zip headers, the
pickle, storage counts and the safetensors header as often as anywhere), files are cut
short or spliced with another (of the same format or not), zip header fields and
pickle integers are overwritten with edge values, and safetensors header entries are
rewritten as JSON (offsets, shapes, dtypes, the header's length). Each file is pushed;
the only outcomes allowed:

- success with what torch itself (``torch.load(weights_only=True)``, without mmap) or
  safetensors reads from the mutated file: the same keys, dtypes, shapes and bytes
  (compared bit for bit, so a NaN a flip made is equal to itself); a file torch
  cannot read must not be accepted; and ``Registry.verify`` finds the version whole;
- a ``RegistryError``, after which nothing new is stored (no version, no pack), and a
  CheckpointError names the file on one line;
- never another exception, never a hang: each push, load and verify runs under
  ``fuzzing.bounded`` (a SIGALRM after CALL_TIMEOUT seconds, faulthandler after twice that).

The default run has a bounded number of examples per property; ``-m slow`` runs the
same properties with more (``test_*_long``).
"""

from __future__ import annotations

import io
import itertools
import json
import pickletools
import struct
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fuzzing import bounded, fuzz_settings
from hypothesis import event, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from safetensors.torch import load_file, save_file

from registry import Registry, register_architecture, unregister_architecture
from registry.errors import CheckpointError, RegistryError

ARCH = "fuzz_checkpoint_net"

FUZZ = fuzz_settings(150)
LONG = fuzz_settings(1000)


class FuzzNet(torch.nn.Module):
    """Small, with what a reader can get wrong: a weight tied to another (one storage for
    two keys), float16, bool and int64 buffers, a 0-d tensor."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 6)
        self.fc = torch.nn.Linear(6, 4)
        self.bn = torch.nn.BatchNorm1d(4)
        self.head = torch.nn.Linear(6, 10, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.linspace(0.5, 2.0, 3, dtype=torch.float16))
        self.register_buffer("mask", torch.tensor([True, False, True, True, False]))


def fuzz_state(seed: int) -> OrderedDict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = FuzzNet()
    model.bn.running_mean.uniform_()
    model.bn.num_batches_tracked.fill_(seed + 3)
    return model.state_dict()


# -- the seed files and where to aim in them -------------------------------------------------------


@dataclass
class Seed:
    fmt: str  # "zip", "legacy" or "safetensors"
    data: bytes
    regions: list[tuple[int, int]]  # spans worth aiming at (the whole file among them)
    fields: list[tuple[int, int]]  # (offset, width) of integers in headers and the pickle

    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"Seed({self.fmt}, {len(self.data)} bytes)"


def _pickle_fields(data: bytes, start: int, end: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Opcode boundaries and fixed-width integer arguments of the pickle at data[start:end]."""
    widths = {"BININT1": 1, "BININT2": 2, "BININT": 4, "BINPUT": 1, "BINGET": 1,
              "LONG_BINPUT": 4, "LONG_BINGET": 4, "LONG1": 1, "BINUNICODE": 4,
              "SHORT_BINUNICODE": 1, "BINBYTES": 4, "SHORT_BINBYTES": 1}  # fmt: skip
    stream = io.BytesIO(data[start:end])
    boundaries, fields = [], []
    for opcode, _, position in pickletools.genops(stream):
        boundaries.append(start + position)
        if opcode.name in widths:
            fields.append((start + position + 1, widths[opcode.name]))
    return boundaries, fields


def _zip_seed(data: bytes) -> Seed:
    regions, fields = [(0, len(data))], []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    for info in infos:
        h = info.header_offset
        n, e = struct.unpack("<HH", data[h + 26 : h + 30])
        start = h + 30 + n + e
        regions.append((h, start))
        fields += [(h + 6, 2), (h + 8, 2), (h + 18, 4), (h + 22, 4), (h + 26, 2), (h + 28, 2)]
        if info.filename.endswith("data.pkl"):
            regions.append((start, start + info.file_size))
            fields += _pickle_fields(data, start, start + info.file_size)[1]
        else:
            regions.append((start, start + min(16, info.file_size)))
    end = data.rindex(b"PK\x05\x06")
    (central,) = struct.unpack("<I", data[end + 16 : end + 20])
    regions += [(central, end), (end, len(data))]
    c = central
    while data[c : c + 4] == b"PK\x01\x02":
        fields += [(c + 8, 2), (c + 10, 2), (c + 20, 4), (c + 24, 4), (c + 28, 2), (c + 30, 2),
                   (c + 32, 2), (c + 34, 2), (c + 38, 4), (c + 42, 4)]  # fmt: skip
        n, e, k = struct.unpack("<HHH", data[c + 28 : c + 34])
        c += 46 + n + e + k
    fields += [(end + 8, 2), (end + 10, 2), (end + 12, 4), (end + 16, 4), (end + 20, 2)]
    return Seed("zip", data, regions, fields)


def _legacy_seed(data: bytes) -> Seed:
    regions, fields, start = [(0, len(data))], [], 0
    for _ in range(5):  # magic, protocol, system info, the object, the storage keys
        stream = io.BytesIO(data[start:])
        list(pickletools.genops(stream))
        end = start + stream.tell()
        regions.append((start, end))
        fields += _pickle_fields(data, start, end)[1]
        start = end
    while start + 8 <= len(data):  # each storage: its element count, then its bytes
        regions.append((start, start + 12))
        fields.append((start, 8))
        (count,) = struct.unpack("<q", data[start : start + 8])
        start += 8 + count * _legacy_element_size(count)
    return Seed("legacy", data, regions, fields)


def _legacy_element_size(count: int) -> int:
    """FuzzNet's storages, told apart by their element counts: float32 but for
    num_batches_tracked (1 int64), scale (3 float16) and mask (5 bool)."""
    return {1: 8, 3: 2, 5: 1}.get(count, 4)


def _safetensors_seed(data: bytes) -> Seed:
    (length,) = struct.unpack("<Q", data[:8])
    regions = [(0, len(data)), (0, 8), (8, 8 + length)]
    header = json.loads(data[8 : 8 + length])
    for key, entry in header.items():
        if key != "__metadata__":
            start = 8 + length + entry["data_offsets"][0]
            regions.append((start, start + 8))
    return Seed("safetensors", data, regions, [(0, 8)])


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Seed]]:
    folder = tmp_path_factory.mktemp("fuzz-seeds")
    made: dict[str, list[Seed]] = {"zip": [], "legacy": [], "safetensors": []}
    for seed in (1, 2):
        state = fuzz_state(seed)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        made["zip"].append(_zip_seed(buffer.getvalue()))
        buffer = io.BytesIO()
        torch.save(state, buffer, _use_new_zipfile_serialization=False)
        made["legacy"].append(_legacy_seed(buffer.getvalue()))
        path = folder / f"seed{seed}.safetensors"
        untied = OrderedDict((k, v.clone()) for k, v in state.items())  # safetensors refuses ties
        save_file(untied, path, metadata={"format": "pt", "seed": str(seed)})
        made["safetensors"].append(_safetensors_seed(path.read_bytes()))
    return made


# -- mutations ----------------------------------------------------------------------------------------


EDGE_VALUES = [0, 1, 2, 3, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF,
               2**62, 2**63 - 1, 2**64 - 1]  # fmt: skip
ST_DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "X1"]


def _position(draw: st.DrawFn, seed: Seed) -> int:
    start, end = draw(st.sampled_from(seed.regions))
    return draw(st.integers(start, max(start, min(end, len(seed.data)) - 1)))


def _field_value(draw: st.DrawFn, width: int, size: int) -> bytes:
    value = draw(st.one_of(st.sampled_from([*EDGE_VALUES, size, size - 1, size + 1]),
                           st.integers(0, 2 ** (8 * width) - 1)))  # fmt: skip
    return (value % 2 ** (8 * width)).to_bytes(width, "little")


def _rewrite_safetensors_header(draw: st.DrawFn, data: bytes) -> bytes:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    keys = [k for k in header if k != "__metadata__"]
    key = draw(st.sampled_from(keys))
    entry = header[key]
    change = draw(
        st.sampled_from(["offsets", "shape", "dtype", "overlap", "drop", "metadata", "value"])
    )
    big = st.one_of(st.sampled_from(EDGE_VALUES), st.integers(0, len(body) + 64))
    if change == "offsets":
        entry["data_offsets"] = [draw(big), draw(big)]
    elif change == "shape":
        entry["shape"] = draw(st.lists(big, max_size=4))
    elif change == "dtype":
        entry["dtype"] = draw(st.sampled_from(ST_DTYPES))
    elif change == "overlap":
        entry["data_offsets"] = list(header[draw(st.sampled_from(keys))]["data_offsets"])
    elif change == "drop":
        del header[key]
    elif change == "metadata":
        header["__metadata__"] = draw(st.sampled_from([{"format": 1}, {"a": None}, [], "x", {}]))
    else:
        header[key] = draw(st.sampled_from([None, 3, "x", [], {"dtype": "F32"}]))
    encoded = json.dumps(header).encode()
    declared = len(encoded) + draw(st.sampled_from([0, 0, 0, -1, 1, 8, -8]))
    return struct.pack("<Q", max(0, declared)) + encoded + body


@st.composite
def mutated(draw: st.DrawFn, seeds: dict[str, list[Seed]], fmt: str, splice: bool = False) -> bytes:
    seed = draw(st.sampled_from(seeds[fmt]))
    data = bytearray(seed.data)
    if splice:
        other = draw(st.sampled_from([s for group in seeds.values() for s in group]))
        cut = _position(draw, seed)
        resume = _position(draw, other)
        data = bytearray(seed.data[:cut] + other.data[resume:])
        note(f"spliced {seed} [:{cut}] + {other} [{resume}:]")
    kinds = ["flip", "set", "truncate", "field"] + (["header"] if fmt == "safetensors" else [])
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=3)):
        if not data:
            break
        if kind == "flip" or kind == "set":
            at = min(_position(draw, seed), len(data) - 1)
            value = draw(st.integers(1, 255))
            data[at] = data[at] ^ value if kind == "flip" else value
            note(f"{kind} byte {at} with {value:#x}")
        elif kind == "truncate":
            end = draw(st.integers(0, len(data) - 1))
            del data[end:]
            note(f"truncate to {end} bytes")
        elif kind == "field":
            at, width = draw(st.sampled_from(seed.fields))
            if at + width <= len(data):
                data[at : at + width] = _field_value(draw, width, len(data))
                note(f"field at {at} ({width} bytes) = {bytes(data[at : at + width]).hex()}")
        else:
            try:
                data = bytearray(_rewrite_safetensors_header(draw, bytes(data)))
            except (ValueError, KeyError, TypeError, struct.error):
                continue  # an earlier mutation left no header to rewrite
            note("rewrote a header entry")
    return bytes(data)


# -- the one property ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Path]]:
    """One SQLite + folder registry for every example (each push has a name of its own),
    whatever the environment says, and FuzzNet registered for the pushes."""
    home = tmp_path_factory.mktemp("fuzz-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("REGISTRY_DATABASE_URL", raising=False)
        mp.delenv("REGISTRY_STORAGE_URL", raising=False)
        register_architecture(ARCH, FuzzNet)
        try:
            with Registry(home=home) as reg:
                yield reg, home
        finally:
            unregister_architecture(ARCH)


_names = itertools.count()


def _stored(reg: Registry, home: Path) -> tuple[list[str], list[Path]]:
    return [mv.ref for mv in reg.list()], sorted((home / "objects").rglob("*.pack"))


def _reference(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    """What torch or safetensors itself reads, told by the first bytes as registry tells."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if data.startswith(b"PK\x03\x04") or data[:1] == b"\x80":
            return torch.load(path, map_location="cpu", weights_only=True)
        return load_file(path)


def _bits(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def _event(what: str) -> None:
    if currently_in_test_context():  # hypothesis counts outcomes (--hypothesis-show-statistics)
        event(what)


def push_and_check(reg: Registry, home: Path, folder: Path, data: bytes, suffix: str) -> str:
    """Push ``data`` as a file; assert the outcome is one of those allowed; say which."""
    path = folder / f"mutated{suffix}"
    path.write_bytes(data)
    before = _stored(reg, home)
    name = f"fuzz-{next(_names)}"
    with bounded():
        try:
            mv = reg.push(path, name, arch=ARCH)
        except RegistryError as error:
            assert _stored(reg, home) == before, "a refused push stored something"
            if isinstance(error, CheckpointError):
                assert str(path) in str(error) and "\n" not in str(error), str(error)
            _event(f"refused: {type(error).__name__}")
            return "refused"
        try:
            reference = _reference(path, data)
        except Exception as exc:
            raise AssertionError(
                f"registry accepted a file that torch/safetensors refuses: {type(exc).__name__}: "
                f"{str(exc)[:300]}"
            ) from exc
        loaded = reg.load_state_dict(mv.ref)
        report = reg.verify(mv.ref)
    assert isinstance(reference, dict) and list(loaded) == list(reference), (
        list(loaded),
        list(reference),
    )
    for key, tensor in reference.items():
        got = loaded[key]
        assert (got.dtype, tuple(got.shape)) == (tensor.dtype, tuple(tensor.shape)), key
        assert _bits(got) == _bits(tensor), f"{key}: stored bytes differ from torch's reading"
    assert report.ok, report
    _event("accepted, equal to torch's reading")
    return "accepted"


def test_unmutated_files_push_exactly(seeds, registry, tmp_path: Path):
    """The control: every seed file is accepted, equal to what torch reads."""
    reg, home = registry
    suffixes = {"zip": ".pth", "legacy": ".pth", "safetensors": ".safetensors"}
    for fmt, group in seeds.items():
        for seed in group:
            assert push_and_check(reg, home, tmp_path, seed.data, suffixes[fmt]) == "accepted"


def _property(fmt: str, splice: bool = False):
    suffix = ".safetensors" if fmt == "safetensors" else ".pth"

    def run(seeds, registry, tmp_path_factory, data: st.DataObject) -> None:
        reg, home = registry
        folder = tmp_path_factory.mktemp("example", numbered=True)
        push_and_check(reg, home, folder, data.draw(mutated(seeds, fmt, splice)), suffix)

    return run


@FUZZ
@given(data=st.data())
def test_mutated_zip_checkpoints(seeds, registry, tmp_path_factory, data):
    _property("zip")(seeds, registry, tmp_path_factory, data)


@FUZZ
@given(data=st.data())
def test_mutated_legacy_checkpoints(seeds, registry, tmp_path_factory, data):
    _property("legacy")(seeds, registry, tmp_path_factory, data)


@FUZZ
@given(data=st.data())
def test_mutated_safetensors(seeds, registry, tmp_path_factory, data):
    _property("safetensors")(seeds, registry, tmp_path_factory, data)


@settings(FUZZ, max_examples=60)
@given(data=st.data(), fmt=st.sampled_from(["zip", "legacy", "safetensors"]))
def test_spliced_checkpoints(seeds, registry, tmp_path_factory, data, fmt):
    _property(fmt, splice=True)(seeds, registry, tmp_path_factory, data)


@pytest.mark.slow
@LONG
@given(data=st.data(), fmt=st.sampled_from(["zip", "legacy", "safetensors"]))
def test_mutated_checkpoints_long(seeds, registry, tmp_path_factory, data, fmt):
    _property(fmt)(seeds, registry, tmp_path_factory, data)


@pytest.mark.slow
@settings(LONG, max_examples=400)
@given(data=st.data(), fmt=st.sampled_from(["zip", "legacy", "safetensors"]))
def test_spliced_checkpoints_long(seeds, registry, tmp_path_factory, data, fmt):
    _property(fmt, splice=True)(seeds, registry, tmp_path_factory, data)
