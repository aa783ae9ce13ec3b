"""Fuzzing the readers of untrusted bytes: bundles (``registry export``'s tar files, read
by ``pipelines/bundle_file.py``) and the packs of a folder store (``storage/packs.py``).

Real bundles and packs are mutated (bytes flipped or set, truncated, spans deleted,
inserted, copied from elsewhere in the file or from another bundle, tar header fields
rewritten with their checksum fixed or not, the manifest edited as JSON with its
digests recomputed or not) and fed to ``Registry.import_bundle``, or left in the store
for ``load``, ``load_state_dict``, ``pull``, ``export`` and ``verify``. The only
outcomes allowed:

- success with the right data: an imported version's tensors are bit for bit what was
  exported under its digest, and the registry verifies clean afterwards; a version read
  from a damaged store gives bit for bit what was pushed;
- a ``RegistryError``: any other exception fails the test (hypothesis then shrinks it);
- never a hang: each call runs under ``fuzzing.bounded`` (a SIGALRM of CALL_TIMEOUT
  seconds that fails the test, and faulthandler after twice that, should a loop in C
  never let the alarm through);
- never silence: a version whose stored bytes changed fails ``load`` and is reported
  by ``verify``, exactly the damaged tensors.

The default run takes ~15 s on 2 cores; the ``slow`` tests (``test_*_long``) run the
same properties with 200-400 examples each (under 2 minutes).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import struct
import tarfile
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_model
from fuzzing import bounded, fuzz_settings
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from registry import Registry
from registry.errors import IntegrityError, RegistryError
from registry.pipelines.bundle_file import Bundle, in_lineage_order
from registry.sharing import Shared, manifest_terms
from registry.storage import manifest_digest
from registry.storage.packs import read_index
from registry.tensors import raw_bytes

ARCH = "squeezenet1_1"
KWARGS = {"num_classes": 2}
HEAD = ("classifier.1.weight", "classifier.1.bias")

FUZZ = fuzz_settings(60)
LONG = fuzz_settings(400)


# -- the source registry, bundles and packs (built once) ------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _folder_backend() -> Iterator[None]:
    """Registries here are SQLite + folder, whatever the environment says."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("REGISTRY_DATABASE_URL", raising=False)
        mp.delenv("REGISTRY_STORAGE_URL", raising=False)
        yield


class Source:
    """A registry with base:1 and its fine-tune tuned:1, a bundle of both, a bundle of
    an unrelated version (for splices), and what each digest's state dict is."""

    def __init__(self, home: Path, bundle: bytes, foreign: bytes, states, refs):
        self.home, self.bundle, self.foreign = home, bundle, foreign
        self.states: dict[str, OrderedDict] = states  # version digest -> state dict
        self.refs: dict[str, str] = refs  # ref -> version digest

    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"Source({self.home})"


def _regions(data: bytes) -> list[tuple[int, int]]:
    """Spans of a bundle worth aiming at: each header, the manifest, the first and last
    bytes of each blob, the end-of-archive blocks, the whole file."""
    spans = [(0, len(data))]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    for m in members:
        spans.append((m.offset, m.offset_data))
        if m.name == "manifest.json":
            spans.append((m.offset_data, m.offset_data + m.size))
        elif m.size:
            spans.append((m.offset_data, m.offset_data + min(64, m.size)))
            spans.append((m.offset_data + max(0, m.size - 64), m.offset_data + m.size))
    end = members[-1].offset_data + members[-1].size
    spans.append((end, len(data)))
    return [(a, b) for a, b in spans if b > a]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    root = tmp_path_factory.mktemp("fuzz-source")
    base = make_model(ARCH, 1, **KWARGS).state_dict()
    tuned = OrderedDict(base, **{key: base[key] + 0.25 for key in HEAD})
    other = make_model(ARCH, 2, **KWARGS).state_dict()
    with Registry(home=root / "home") as reg:
        b = reg.push(base, "base", arch=ARCH, arch_kwargs=KWARGS, tags={"stage": "prod"},
                     description="the base")  # fmt: skip
        reg.alias("base:1", "prod")
        t = reg.push(tuned, "tuned", arch=ARCH, arch_kwargs=KWARGS, parent="base:1")
        o = reg.push(other, "other", arch=ARCH, arch_kwargs=KWARGS)
        reg.export(["base:1", "tuned:1"], root / "bundle.tar")
        reg.export(["other:1"], root / "foreign.tar")  # other:1 has a pack of its own too
    return Source(
        home=root / "home",
        bundle=(root / "bundle.tar").read_bytes(),
        foreign=(root / "foreign.tar").read_bytes(),
        states={b.digest: base, t.digest: tuned, o.digest: other},
        refs={"base:1": b.digest, "tuned:1": t.digest, "other:1": o.digest},
    )


# -- running a call with the only outcomes allowed ------------------------------------------


def attempt(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    """(True, result) or (False, the RegistryError); any other exception propagates."""
    with bounded():
        try:
            return True, call(*args, **kwargs)
        except RegistryError as exc:
            assert str(exc).strip(), "a RegistryError without a message"
            return False, exc


def outcome(label: str) -> None:
    """Count an example's outcome (``--hypothesis-show-statistics`` prints the counts)."""
    if currently_in_test_context():
        event(label)


@contextmanager
def scratch() -> Iterator[Path]:
    """A folder of one example (hypothesis runs many per test, so not tmp_path)."""
    folder = Path(tempfile.mkdtemp(prefix="registry-fuzz-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def same_bytes(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """The same keys in the same order, each with the same dtype, shape and bytes (bytes,
    not torch.equal: NaN != NaN, and comparing bytes is what "bit for bit" means)."""
    assert list(state) == list(expected)
    for key, want in expected.items():
        got = state[key]
        assert (got.dtype, got.shape) == (want.dtype, want.shape), key
        assert bytes(raw_bytes(got)[1]) == bytes(raw_bytes(want)[1]), key


# -- mutations of a file --------------------------------------------------------------------


def _fix_checksum(data: bytearray, header: int) -> None:
    block = data[header : header + 512]
    if len(block) < 512:
        return
    block[148:156] = b" " * 8
    data[header + 148 : header + 156] = b"%06o\0 " % (sum(block) & 0o777777)


#: Header fields (offset, length) of a tar block, and values worth writing there.
_FIELDS = {
    "name": (0, 100),
    "mode": (100, 8),
    "size": (124, 12),
    "checksum": (148, 8),
    "type": (156, 1),
    "linkname": (157, 100),
    "magic": (257, 8),
    "prefix": (345, 155),
}
_FIELD_VALUES = {
    "name": [b"../evil", b"/tmp/evil", b"manifest.json", b"blobs/" + b"0" * 64,
             b"blobs/../../evil", b"manifest.json/", b"\xff\xfe", b""],
    "mode": [b"0000777\0", b"\xff" * 8],
    "size": [b"00000000000\0", b"77777777777\0", b"\x80" + b"\0" * 10 + b"\x01",
             b"\xff" * 12, b"-0000000001\0", b"9999\0", b"00000001000\0", b"00000000001\0",
             b"\x80" + b"\xff" * 11],
    "checksum": [b"0000000\0", b"\xff" * 8, b"       \0"],
    "type": [b"0", b"\0", b"1", b"2", b"3", b"5", b"6", b"7", b"x", b"g", b"L", b"K", b"S",
             b"V", b"M", b"D"],
    "linkname": [b"/etc/passwd", b"manifest.json"],
    "magic": [b"ustar\x0000", b"ustar  \0", b"\0" * 8, b"USTAR\x0000"],
    "prefix": [b"..", b"/tmp", b"blobs", b"\xff"],
}  # fmt: skip


def _headers(data: bytes) -> list[int]:
    """Offsets of the tar header blocks of an unmutated bundle."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [m.offset for m in tar.getmembers()]


_BYTE_KINDS = ["flip", "set", "truncate", "delete", "insert", "copy", "foreign", "field",
               "duplicate-member", "drop-block"]  # fmt: skip


@st.composite
def byte_mutation(draw: st.DrawFn, data: bytes, foreign: bytes) -> list[tuple]:
    """A recipe of one to three mutations of ``data``, aimed at the spans that matter
    (small to print: :func:`mutate_bytes` applies it)."""
    regions = _regions(data)
    headers = _headers(data)
    ops: list[tuple] = []
    for _ in range(draw(st.integers(1, 3))):
        start, end = draw(st.sampled_from(regions))
        at = draw(st.integers(start, end - 1))
        kind = draw(st.sampled_from(_BYTE_KINDS))
        if kind == "flip":
            ops.append((kind, at, draw(st.integers(1, 255))))
        elif kind == "set":
            ops.append(
                (
                    kind,
                    at,
                    draw(st.sampled_from([0, 0x20, 0x30, 0x37, 0x38, 0x7F, 0x80, 0xFF, 0x22])),
                )
            )
        elif kind in ("truncate", "drop-block"):
            ops.append((kind, at))
        elif kind == "delete":
            ops.append((kind, at, draw(st.sampled_from([1, 7, 64, 511, 512, 1024, 4096]))))
        elif kind == "insert":
            ops.append((kind, at, draw(st.binary(min_size=1, max_size=600))))
        elif kind == "copy":
            ops.append(
                (
                    kind,
                    at,
                    draw(st.integers(0, len(data) - 1)),
                    draw(st.sampled_from([1, 16, 512, 2048])),
                )
            )
        elif kind == "foreign":
            ops.append(
                (
                    kind,
                    at,
                    draw(st.integers(0, len(foreign) - 1)),
                    draw(st.sampled_from([64, 512, 4096, 1 << 20])),
                )
            )
        elif kind == "field":
            field = draw(st.sampled_from(sorted(_FIELDS)))
            value = draw(st.sampled_from(_FIELD_VALUES[field]))
            ops.append((kind, draw(st.sampled_from(headers)), field, value, draw(st.booleans())))
        else:  # duplicate-member
            ops.append((kind, draw(st.sampled_from(headers))))
    return ops


def mutate_bytes(data: bytes, foreign: bytes, ops: list[tuple]) -> bytes:
    """Apply a :func:`byte_mutation` recipe (offsets beyond the shortened file clamp)."""
    out = bytearray(data)
    headers = _headers(data)
    for kind, at, *args in ops:
        at = min(at, max(0, len(out) - 1))
        if kind == "flip" and out:
            out[at] ^= args[0]
        elif kind == "set" and out:
            out[at] = args[0]
        elif kind == "truncate":
            del out[at:]
        elif kind == "delete":
            del out[at : at + args[0]]
        elif kind == "insert":
            out[at:at] = args[0]
        elif kind == "copy":
            out[at : at + args[1]] = out[args[0] : args[0] + args[1]]
        elif kind == "foreign":
            chunk = foreign[args[0] : args[0] + args[1]]
            out[at : at + len(chunk)] = chunk
        elif kind == "field":
            field, value, fix = args
            offset, length = _FIELDS[field]
            if at + offset + length <= len(out):
                out[at + offset : at + offset + length] = value.ljust(length, b"\0")[:length]
                if fix:
                    _fix_checksum(out, at)
        elif kind == "duplicate-member":
            following = [h for h in headers if h > at] + [len(data)]
            out[at:at] = data[at : min(following)]
        elif kind == "drop-block":  # shifts the rest of the archive
            del out[at - at % 512 : at - at % 512 + 512]
    return bytes(out)


# -- mutations of the manifest, as JSON ------------------------------------------------------


def _members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def fix_digests(manifest: Any) -> None:
    """Recompute each version's digest from its (possibly edited) tensor table, so an
    edit gets past the digest check to the checks behind it; malformed tables are left."""
    for version in manifest.get("versions") or [] if isinstance(manifest, dict) else []:
        try:
            tensors = version["tensors"]
            shared = [
                None if len(t) < 6 or t[5] is None else Shared(t[5][0], t[5][1], tuple(t[5][2]))
                for t in tensors
            ]
            terms = manifest_terms([t[0] for t in tensors], shared)
            version["digest"] = manifest_digest(
                (t[0], t[1], t[2], t[3], term) for t, term in zip(tensors, terms)
            )
        except Exception:  # noqa: BLE001 - a table no digest can be computed for stays as is
            continue


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(
        ["", "base", "prod", "../evil", "a\x00b", "\x1b[31m", "line\nbreak", "\ud800", "3",
         "latest", "float32", "x" * 300, "2026-01-01", "0001-01-01T00:00:00+14:00",
         "9999-12-31T23:59:59-14:00", "base:1", "tuned:1", "base@sha256:00"]
    )
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)  # fmt: skip

#: Fields whose value names code that ``load`` imports (an import path, a module): the
#: fuzzer leaves them alone rather than have random text import arbitrary modules.
_CODE_FIELDS = {"arch", "arch_module"}


@st.composite
def manifest_mutation(draw: st.DrawFn, data: bytes) -> tuple[list[tuple], bool]:
    """A recipe (edits, fix digests?) for the bundle's manifest: a value replaced, a key
    deleted, a list item duplicated or swapped, a number moved; :func:`mutate_manifest`
    applies it and writes a valid tar around the result."""
    manifest = json.loads(_members(data)[0][1])
    paths = list(_paths(manifest))
    fields = [p for p in paths if len(p) == 3 and p[0] == "versions"]  # a version's own
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(fields) | st.sampled_from(paths))
        kind = draw(st.sampled_from(["replace", "delete", "duplicate", "swap", "number"]))
        if kind == "replace":
            ops.append((kind, path, draw(_json_values)))
        elif kind == "swap":
            ops.append((kind, path, draw(st.integers(0, 200))))
        elif kind == "number":
            ops.append((kind, path, draw(st.sampled_from([-1, 1, -(2**40), 2**31, 2**63, 0]))))
        else:
            ops.append((kind, path, None))
    return ops, draw(st.booleans())


def mutate_manifest(data: bytes, recipe: tuple[list[tuple], bool]) -> bytes:
    """Apply a :func:`manifest_mutation` recipe (an edit whose path is gone is skipped)."""
    members = _members(data)
    manifest = json.loads(members[0][1])
    ops, fix = recipe
    for kind, path, arg in ops:
        try:
            parent, key = _locate(manifest, path)
            if kind == "replace":
                parent[key] = copy.deepcopy(arg)
            elif kind == "delete":
                del parent[key]
            elif kind == "duplicate" and isinstance(parent, list):
                parent.insert(key, copy.deepcopy(parent[key]))
            elif kind == "swap" and isinstance(parent, list) and parent:
                other = arg % len(parent)
                parent[key], parent[other] = parent[other], parent[key]
            elif kind == "number" and type(parent[key]) is int:
                parent[key] = -parent[key] if arg == 0 else parent[key] + arg
        except (LookupError, TypeError):
            continue
    if fix:
        fix_digests(manifest)
    return _tar([("manifest.json", json.dumps(manifest).encode()), *members[1:]])


def _paths(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Paths into a JSON value (keys and indexes), except under _CODE_FIELDS; of a long
    list or object (the tensor table, the blob sizes, the module metadata) only the
    first two children are gone into, so every field has its fair chance."""
    items = list(
        value.items() if isinstance(value, dict) else enumerate(value)
        if isinstance(value, list) else ()
    )  # fmt: skip
    for i, (key, child) in enumerate(items):
        if key in _CODE_FIELDS:
            continue
        yield (*path, key)
        if i < 2 or len(items) <= 8:
            yield from _paths(child, (*path, key))


def _locate(value: Any, path: tuple) -> tuple[Any, Any]:
    for key in path[:-1]:
        value = value[key]
    return value, path[-1]


# -- bundles --------------------------------------------------------------------------------


def check_import(source: Source, bundle: bytes, *, exact: bool) -> None:
    """Import ``bundle`` into a new registry: a RegistryError, or versions that verify
    clean and whose tensors are what the bundle's blobs hold; with ``exact`` (byte
    mutations, which cannot recompute a digest), each imported version is one of the
    exported ones, bit for bit."""
    with scratch() as folder:
        path = folder / "bundle.tar"
        path.write_bytes(bundle)
        before = set(os.listdir(folder))
        with Registry(home=folder / "home") as reg:
            ok, result = attempt(reg.import_bundle, path)
            outcome("imported" if ok else f"refused: {type(result).__name__}")
            outside = set(os.listdir(folder)) - before - {"home"}
            assert not outside, f"import created {outside} beside the bundle"
            if not ok:
                assert reg.list() == [], "a refused bundle left versions behind"
                return
            versions = reg.list(limit=None)
            assert {t for _, t, _ in result.versions} == {v.ref for v in versions}
            ok_verify, report = attempt(reg.verify)
            assert ok_verify and report.ok, f"an imported bundle does not verify: {report}"
            for version in versions:
                check_version(reg, reg.get(version.ref), source if exact else None)


def check_version(reg: Registry, version: Any, source: Source | None) -> None:
    """A stored version reads back as its record says, bytes hashing to their digests
    (and, given ``source``, equal to what was exported under that digest)."""
    ok, state = attempt(reg.load_state_dict, version.ref, verify="sha256")
    if source is not None:
        assert ok, f"{version.ref} imported but does not load: {state}"
        assert version.digest in source.states, "an import made a digest never exported"
        same_bytes(state, source.states[version.digest])
    elif ok:
        assert list(state) == [t.name for t in version.tensors]
        for t in version.tensors:
            data = bytes(raw_bytes(state[t.name])[1])
            assert len(data) == t.nbytes and hashlib.sha256(data).hexdigest() == t.digest, t.name
    loaded, module = attempt(reg.load, version.ref)
    if loaded and source is not None:
        same_bytes(module.state_dict(), source.states[version.digest])


def test_unmutated_bundle_imports_exactly(source: Source):
    """The control: the properties below hold for the bundle as exported, and the
    registry's own reader (not tarfile) accepts what tarfile writes in other dialects."""
    check_import(source, source.bundle, exact=True)
    members = _members(source.bundle)
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
            for name, body in members:
                info = tarfile.TarInfo(name)
                info.size = len(body)
                if fmt == tarfile.PAX_FORMAT:  # pax records, as for a member of 8 GiB
                    info.pax_headers = {"size": str(len(body)), "comment": "kept"}
                tar.addfile(info, io.BytesIO(body))
        check_import(source, out.getvalue(), exact=True)
    # A bundle that lost its end-of-archive blocks still holds every member whole.
    end = max(m.offset_data + m.size for m in tarfile.open(fileobj=io.BytesIO(source.bundle)))
    check_import(source, source.bundle[: end + (-end % 512)], exact=True)


@FUZZ
@given(data=st.data())
def test_byte_mutated_bundles(source: Source, data: st.DataObject):
    recipe = data.draw(byte_mutation(source.bundle, source.foreign))
    check_import(source, mutate_bytes(source.bundle, source.foreign, recipe), exact=True)


@FUZZ
@given(data=st.data())
def test_manifest_mutated_bundles(source: Source, data: st.DataObject):
    recipe = data.draw(manifest_mutation(source.bundle))
    check_import(source, mutate_manifest(source.bundle, recipe), exact=False)


@pytest.mark.slow
@LONG
@given(data=st.data())
def test_byte_mutated_bundles_long(source: Source, data: st.DataObject):
    recipe = data.draw(byte_mutation(source.bundle, source.foreign))
    check_import(source, mutate_bytes(source.bundle, source.foreign, recipe), exact=True)


@pytest.mark.slow
@LONG
@given(data=st.data())
def test_manifest_mutated_bundles_long(source: Source, data: st.DataObject):
    recipe = data.draw(manifest_mutation(source.bundle))
    check_import(source, mutate_manifest(source.bundle, recipe), exact=False)


def _pax_record(key: bytes, value: bytes) -> bytes:
    """``LENGTH KEY=VALUE\\n``, LENGTH counting its own digits."""
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def _header_block(name: bytes, size_field: bytes, kind: bytes = b"0") -> bytes:
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000444\0"
    block[124:136] = size_field
    block[156:157] = kind
    block[257:265] = b"ustar\x0000"
    data = bytearray(block)
    _fix_checksum(data, 0)
    return bytes(data)


@pytest.mark.parametrize(
    "case",
    ["negative-size", "size-loops-back", "huge-size", "pax-negative", "pax-sparse",
     "pax-huge-number", "fifo", "folder", "empty", "deep-json", "long-number", "nan"],
)  # fmt: skip
def test_crafted_bundles_are_refused_quickly(case: str, source: Source, tmp_path: Path):
    """Archives that have made tar readers loop, recurse or allocate without bound
    (negative sizes, CVE-2025-8194's backward seek, pax records with huge numbers), a
    path that is no file, JSON nested past the recursion limit or with numbers Python
    refuses to parse: each is one RegistryError, well inside CALL_TIMEOUT."""
    path = tmp_path / "crafted.tar"
    manifest = _members(source.bundle)[0][1]
    if case == "negative-size":
        path.write_bytes(_header_block(b"manifest.json", b"\xff" * 12) + bytes(1024))
    elif case == "size-loops-back":  # base-256 size that wraps the offset back to 0
        wrap = (1 << 88) - 512
        head = _header_block(b"manifest.json", b"\x80" + wrap.to_bytes(11, "big"))
        path.write_bytes(head + bytes(1024))
    elif case == "huge-size":
        path.write_bytes(_header_block(b"manifest.json", b"77777777777\0") + bytes(1024))
    elif case.startswith("pax"):
        value = {"pax-negative": b"-1024", "pax-sparse": b"", "pax-huge-number": b"9" * 5000}
        key = b"GNU.sparse.map" if case == "pax-sparse" else b"size"
        line = _pax_record(key, value[case] or b"0,10")
        pax = _header_block(b"././@PaxHeader", b"%011o\0" % len(line), b"x")
        body = line.ljust(-(-len(line) // 512) * 512, b"\0")
        entry = _header_block(b"manifest.json", b"00000000010\0")
        path.write_bytes(pax + body + entry + bytes(1536))
    elif case == "fifo":
        os.mkfifo(path)
    elif case == "folder":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    else:
        text = {
            "deep-json": b"[" * 100_000 + b"]" * 100_000,
            "long-number": manifest.replace(b'"version": 2', b'"version": ' + b"9" * 5000),
            "nan": manifest.replace(b'"param_count": ', b'"param_count": NaN, "x": '),
        }[case]
        path.write_bytes(_tar([("manifest.json", text), *_members(source.bundle)[1:]]))
    with Registry(home=tmp_path / "home") as reg, bounded(20):
        with pytest.raises(RegistryError) as info:
            reg.import_bundle(path)
        assert reg.list() == []
    assert "\n" not in str(info.value) and len(str(info.value)) < 500


def test_a_long_lineage_and_a_cycle_keep_their_order():
    """in_lineage_order is iterative (a chain of 5000 parents once overflowed the stack)
    and places each version once, parents first, whatever cycle a bundle declares."""

    def version(name: str, number: int, parent: str | None) -> Any:
        return type("V", (), {"name": name, "version": number, "parent": parent,
                              "ref": f"{name}:{number}"})()  # fmt: skip

    chain = [version("m", i, f"m:{i + 1}" if i < 5000 else None) for i in range(1, 5001)]
    ordered = in_lineage_order(chain)
    assert [v.version for v in ordered] == list(range(5000, 0, -1))
    cycle = [version("a", 1, "b:1"), version("b", 1, "a:1"), version("c", 1, "c:1")]
    assert sorted(v.ref for v in in_lineage_order(cycle)) == ["a:1", "b:1", "c:1"]


# -- packs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    pack: str  # path relative to the store
    offset: int
    nbytes: int
    digest: str


def _store_blobs(home: Path) -> list[Blob]:
    store = home / "objects"
    blobs = []
    for path in sorted(store.glob("packs/*/*.pack")):
        data = path.read_bytes()
        for digest, (offset, nbytes) in read_index(data, len(data)).items():
            blobs.append(Blob(str(path.relative_to(store)), offset, nbytes, digest))
    return blobs


_PACK_KINDS = ["flip", "zero", "truncate", "delete", "insert", "append", "splice",
               "other-pack", "swap-blobs", "remove"]  # fmt: skip


@st.composite
def pack_mutation(draw: st.DrawFn, packs: dict[str, int], blobs: list[Blob]) -> list[tuple]:
    """A recipe of one or two mutations of the packs (``packs``: path -> size), aimed at
    the header, blobs and the padding before them; :func:`mutate_packs` applies it."""
    names = sorted(packs)
    ops = []
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.sampled_from(names))
        inside = [b for b in blobs if b.pack == name and b.nbytes]
        aims = [(0, min(packs[name], 512)), (0, packs[name])]
        aims += [(b.offset, b.offset + b.nbytes) for b in inside]
        aims += [(b.offset - 64, b.offset) for b in inside if b.offset >= 64]  # padding
        start, end = draw(st.sampled_from(aims))
        at = draw(st.integers(start, max(start, end - 1)))
        kind = draw(st.sampled_from(_PACK_KINDS))
        if kind == "flip":
            ops.append((kind, name, at, draw(st.integers(1, 255))))
        elif kind in ("zero", "delete"):
            ops.append((kind, name, at, draw(st.sampled_from([1, 8, 64, 4096]))))
        elif kind in ("insert", "append"):
            ops.append((kind, name, at, draw(st.binary(min_size=1, max_size=128))))
        elif kind == "splice":
            ops.append(
                (kind, name, at, (draw(st.sampled_from(names)), draw(st.integers(0, 1 << 22))))
            )
        elif kind == "other-pack":
            ops.append((kind, name, at, draw(st.sampled_from(names))))
        elif kind == "swap-blobs" and len(inside) > 1:
            pair = draw(st.lists(st.sampled_from(inside), min_size=2, max_size=2, unique=True))
            ops.append((kind, name, at, tuple(pair)))
        else:
            ops.append((kind, name, at, None))
    return ops


def mutate_packs(packs: dict[str, bytes], ops: list[tuple]) -> dict[str, bytes | None]:
    """Apply a :func:`pack_mutation` recipe: new contents per pack, None for a deleted one."""
    out: dict[str, bytes | None] = {}
    for kind, name, at, arg in ops:
        current = out.get(name, packs[name])
        if current is None:
            continue
        data = bytearray(current)
        at = min(at, len(data))
        if kind == "flip" and at < len(data):
            data[at] ^= arg
        elif kind == "zero":
            data[at : at + arg] = bytes(len(data[at : at + arg]))
        elif kind == "truncate":
            del data[at:]
        elif kind == "delete":
            del data[at : at + arg]
        elif kind == "insert":
            data[at:at] = arg
        elif kind == "append":
            data += arg
        elif kind == "splice":
            source, offset = arg
            chunk = packs[source][offset % len(packs[source]) :][:4096]
            data[at : at + len(chunk)] = chunk
        elif kind == "other-pack":
            data = bytearray(packs[arg])
        elif kind == "swap-blobs" and arg is not None:
            a, b = arg
            n = min(a.nbytes, b.nbytes)
            first, second = (
                bytes(data[a.offset : a.offset + n]),
                bytes(data[b.offset : b.offset + n]),
            )
            data[a.offset : a.offset + n], data[b.offset : b.offset + n] = second, first
        elif kind == "remove":
            out[name] = None
            continue
        out[name] = bytes(data)
    return out


def _damaged_digests(
    blobs: list[Blob], packs: dict[str, bytes], mutated: dict[str, Any]
) -> set[str]:
    """Digests whose bytes are no longer at their place (changed, cut off, or gone)."""
    damaged = set()
    for b in blobs:
        if b.pack not in mutated:
            continue
        now = mutated[b.pack]
        if (
            now is None
            or now[b.offset : b.offset + b.nbytes] != packs[b.pack][b.offset : b.offset + b.nbytes]
        ):
            damaged.add(b.digest)
    return damaged


def _reads(reg: Registry, ref: str, mode: Any, out: Path) -> dict[str, Callable[[], Any]]:
    """Every way to read ``ref``, each giving a state dict (export: its report)."""
    target = out / f"{ref.replace(':', '-')}.pth"
    return {
        "load_state_dict": lambda: reg.load_state_dict(ref, verify=mode),
        "load": lambda: reg.load(ref, verify=mode).state_dict(),
        "pull": lambda: torch.load(reg.pull(ref, target, overwrite=True), weights_only=True),
        "export": lambda: reg.export([ref], out / "x.tar", overwrite=True),
    }


def check_verify(reg: Registry, ref: str | None, damaged: set[str], mutated: dict) -> None:
    """verify (of ``ref``, or of everything) reports exactly the ``damaged`` digests."""
    ok, report = attempt(reg.verify, ref)
    assert ok, f"verify raised {report!r} instead of reporting the damage"
    found = {p.digest for p in report.corrupt + report.missing}
    assert found == damaged, (sorted(found), sorted(damaged))


def check_damaged_store(source: Source, draw: Callable[..., Any], mutate: bool = True) -> None:
    """Mutate the packs of a copy of the source registry, then read every version (in
    one or two of the four ways, drawn): each read succeeds exactly when none of the
    version's tensors lost a byte, and then gives bit for bit what was pushed; verify,
    of each version and of everything, names exactly the damaged tensors."""
    with scratch() as folder:
        home = folder / "home"
        shutil.copytree(source.home, home)
        store = home / "objects"
        blobs = _store_blobs(home)
        packs = {b.pack: (store / b.pack).read_bytes() for b in blobs}
        sizes = {name: len(data) for name, data in packs.items()}
        mutated = mutate_packs(packs, draw(pack_mutation(sizes, blobs))) if mutate else {}
        for pack, content in mutated.items():
            target = store / pack
            target.chmod(0o644)
            if content is None:
                target.unlink()
            else:
                target.write_bytes(content)
        damaged = _damaged_digests(blobs, packs, mutated)
        outcome("tensors damaged" if damaged else "no tensor damaged")
        out = folder / "out"
        out.mkdir()
        with Registry(home=home) as reg:
            for ref, digest in sorted(source.refs.items()):
                uses = {t.digest for t in reg.get(ref).tensors}
                broken = uses & damaged
                expected = source.states[digest]
                mode = draw(st.sampled_from([True, "sha256"]))
                calls = _reads(reg, ref, mode, out)
                # Two of the four ways per version and example (pull and export fsync
                # what they write, which is most of an example's time).
                chosen = st.lists(
                    st.sampled_from(sorted(calls)), min_size=1, max_size=2, unique=True
                )
                for call in draw(chosen):
                    ok, result = attempt(calls[call])
                    assert ok == (not broken), (
                        f"{call}({ref}) {'succeeded' if ok else 'failed'} with "
                        f"{len(broken)} damaged tensors: {result}"
                    )
                    if ok and call != "export":
                        same_bytes(result, expected)
                    if not ok and call == "pull":
                        assert not (out / f"{ref.replace(':', '-')}.pth").exists()
                check_verify(reg, ref, broken, mutated)
            check_verify(reg, None, damaged, mutated)
        leftovers = (
            {p.name for p in out.iterdir()}
            - {f"{r.replace(':', '-')}.pth" for r in source.refs}
            - {"x.tar"}
        )
        assert not leftovers, f"a failed read left {leftovers} behind"


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_mutated_packs_are_caught_or_read_exactly(source: Source, data: st.DataObject):
    check_damaged_store(source, data.draw)


@pytest.mark.slow
@settings(LONG, max_examples=200)
@given(data=st.data())
def test_mutated_packs_are_caught_or_read_exactly_long(source: Source, data: st.DataObject):
    check_damaged_store(source, data.draw)


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_pack_header_reader_is_strict(source: Source, data: st.DataObject):
    """read_index on a mutated pack header: an index whose every entry lies inside the
    pack, or an IntegrityError; never another exception."""
    (pack, *_) = sorted((source.home / "objects").glob("packs/*/*.pack"))
    whole = pack.read_bytes()
    (length,) = struct.unpack("<Q", whole[:8])
    header = bytearray(whole[: 8 + length + 64])
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "length", "text"]))
        at = data.draw(st.integers(0, len(header) - 1)) if header else 0
        if kind == "flip" and header:
            header[at] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del header[at:]
        elif kind == "insert":
            header[at:at] = data.draw(st.sampled_from([b"{", b"]", b'"', b"-1", b"1e999", b"\xff"]))
        elif kind == "length" and len(header) >= 8:
            header[:8] = struct.pack(
                "<Q", data.draw(st.sampled_from([0, 1, length - 1, 2**63, len(header)]))
            )
        elif kind == "text":
            text = header[8:].replace(b"U8", data.draw(st.sampled_from([b"F32", b"U9", b"U8 "])), 1)
            header[8:] = text
    size = data.draw(st.sampled_from([len(whole), len(whole) // 2, 0]))
    with bounded(20):
        try:
            index = read_index(bytes(header), size)
        except IntegrityError:
            return
    for offset, nbytes in index.values():
        assert 0 <= offset and 0 <= nbytes and offset + nbytes <= size


@settings(FUZZ, max_examples=3)
@given(data=st.data())
def test_unmutated_store_reads_exactly(source: Source, data: st.DataObject):
    """The control for the pack properties: nothing mutated, everything reads exactly."""
    check_damaged_store(source, data.draw, mutate=False)


def test_bundle_reader_closes_its_file(source: Source, tmp_path: Path):
    """A refused bundle leaves no file open (the import may be retried or the file removed)."""
    path = tmp_path / "bad.tar"
    path.write_bytes(source.bundle[:1000])
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(IntegrityError):
            Bundle(path)
    assert len(os.listdir("/proc/self/fd")) == before
