"""Fidelity, as a property: a model comes back exactly as it went in, by torch's own rules.

Random state dicts (float32, float16, bfloat16, int8, bool and complex64 tensors; 0-d and
empty ones; NaN, inf, -0.0 and NaN payloads; non-contiguous views; tied keys that are one
storage; keys with equal values in separate storages; with and without ``_metadata``) are
pushed, then read back with ``load_state_dict``, pulled to ``.pth`` and ``.safetensors``,
and loaded into a module. What comes back has the source's keys in order, dtypes, shapes,
bits, sharing pattern and metadata.

The control tests at the end prove the helpers and the property itself on torch's own
format (``torch.save`` / ``torch.load(weights_only=True)``), so a failure above is the
registry's, not the test's.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from archs_helper.models import StateBag
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load, load_file, save
from torch import nn

from registry import Registry

ARCH = "archs_helper.models:StateBag"
PARAM_DTYPES = ["float32", "float16", "bfloat16", "complex64"]
ALL_DTYPES = [*PARAM_DTYPES, "int8", "bool"]

#: Examples per property. A registry example costs ~15 ms on a tmpfs, ~100 ms on a disk.
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,  # no saved examples in the work tree: every run starts afresh
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],  # no
    # explain phase: on a failure it ran for longer than all the rest together
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CONTROL_SETTINGS = settings(SETTINGS, max_examples=150)

# -- values ---------------------------------------------------------------------------------

#: Bit patterns written over some elements: -0.0, +inf, -inf, quiet NaN, NaNs with a
#: payload or the sign bit set, the smallest subnormal. Unsigned; made signed below.
_SPECIAL_BITS = {
    torch.float32: (
        torch.int32,
        32,
        [0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7FC00001, 0xFFC00123, 0x00000001],
    ),
    torch.float16: (torch.int16, 16, [0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7E01, 0xFE21, 0x0001]),
    torch.bfloat16: (torch.int16, 16, [0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x7FC1, 0xFFC3, 0x0001]),
}


def _signed(value: int, width: int) -> int:
    return value - (1 << width) if value >= 1 << (width - 1) else value


def random_values(
    dtype: torch.dtype, shape: list[int], gen: torch.Generator, specials: bool
) -> torch.Tensor:
    """A contiguous tensor of seeded random values; some special floats if ``specials``."""
    size = tuple(shape)
    if dtype == torch.bool:
        return torch.randint(0, 2, size, generator=gen).to(torch.bool)
    if dtype == torch.int8:
        return torch.randint(-128, 128, size, generator=gen, dtype=torch.int8)
    if dtype.is_complex:
        values = torch.randn(size, generator=gen, dtype=torch.complex64).to(dtype)
    else:
        values = torch.randn(size, generator=gen, dtype=torch.float32).to(dtype)
    if specials and values.numel():
        floats = torch.view_as_real(values) if dtype.is_complex else values
        int_dtype, width, patterns = _SPECIAL_BITS[floats.dtype]
        flat = floats.view(int_dtype).reshape(-1)  # a view: writes land in `values`
        count = max(1, flat.numel() // 3)
        where = torch.randint(0, flat.numel(), (count,), generator=gen)
        which = torch.randint(0, len(patterns), (count,), generator=gen)
        table = torch.tensor([_signed(p, width) for p in patterns], dtype=int_dtype)
        flat[where] = table[which]
    return values


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bytes in C order (NaNs compare equal to themselves bit for bit)."""
    flat = torch.empty(t.numel(), dtype=t.dtype)  # 1-d, stride 1, whatever t's strides
    flat.copy_(t.detach().reshape(-1))
    return flat.view(torch.uint8)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    x, y = bits(a), bits(b)
    return x.shape == y.shape and torch.equal(x, y)


def scramble_(t: torch.Tensor) -> None:
    """Change every element of ``t`` in place (whatever its bits were)."""
    with torch.no_grad():
        if t.dtype == torch.bool:
            t.logical_not_()
        elif not (t.is_floating_point() or t.is_complex()):
            t.add_(1)  # int8 wraps: always a change
        else:
            t.copy_(torch.where(t == 1, 2, 1).to(t.dtype))  # NaN, -0.0, inf -> 1; 1 -> 2


# -- sharing --------------------------------------------------------------------------------


def storage_id(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def memory_range(t: torch.Tensor) -> tuple[int, int]:
    """The bytes the tensor's elements occupy: first element to just past the last."""
    last = sum((size - 1) * step for size, step in zip(t.shape, t.stride()))
    return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()


def sharing_pattern(state: Mapping[str, torch.Tensor]) -> tuple[list[list[str]], dict[str, Any]]:
    """The partition of the non-empty keys by storage, and where each key of a group of
    two or more sits in its storage: (byte offset, strides, dtype, shape)."""
    groups: dict[int, list[str]] = {}
    for key, t in state.items():
        if t.numel() == 0:
            continue  # empty tensors hold nothing to share
        groups.setdefault(storage_id(t), []).append(key)
    partition = sorted(groups.values())
    places = {
        key: (
            state[key].storage_offset() * state[key].element_size(),
            tuple(state[key].stride()),
            state[key].dtype,
            tuple(state[key].shape),
        )
        for members in partition
        if len(members) >= 2
        for key in members
    }
    return partition, places


def assert_same_tensors(
    got: Mapping[str, torch.Tensor], src: Mapping[str, torch.Tensor], *, ordered: bool = True
) -> None:
    if ordered:
        assert list(got) == list(src), "keys or their order differ"
    else:
        assert sorted(got) == sorted(src), "keys differ"
    for key, t in src.items():
        assert got[key].dtype == t.dtype, f"{key}: dtype {got[key].dtype} != {t.dtype}"
        assert got[key].shape == t.shape, f"{key}: shape {list(got[key].shape)} != {list(t.shape)}"
        assert same_bits(got[key], t), f"{key}: bits differ"


def assert_same_sharing(got: Mapping[str, torch.Tensor], src: Mapping[str, torch.Tensor]) -> None:
    got_partition, got_places = sharing_pattern(got)
    src_partition, src_places = sharing_pattern(src)
    assert got_partition == src_partition, (
        f"storage sharing differs: got {got_partition}, source {src_partition}"
    )
    assert got_places == src_places, "places of keys in their shared storage differ"


def separate_pairs(src: Mapping[str, torch.Tensor]) -> list[tuple[str, str]]:
    """Pairs of non-empty keys that are separate storages in the source."""
    keys = [k for k, t in src.items() if t.numel()]
    return [
        (a, b)
        for i, a in enumerate(keys)
        for b in keys[i + 1 :]
        if storage_id(src[a]) != storage_id(src[b])
    ]


def assert_no_overlap(got: Mapping[str, torch.Tensor], src: Mapping[str, torch.Tensor]) -> None:
    """Keys that were separate storages (and are not empty) are separate storages whose
    elements share no memory (two storages can be made over one buffer)."""
    for a, b in separate_pairs(src):
        (a0, a1), (b0, b1) = memory_range(got[a]), memory_range(got[b])
        assert storage_id(got[a]) != storage_id(got[b]), f"{a} and {b} came back one storage"
        assert a1 <= b0 or b1 <= a0, f"{a} and {b} came back sharing memory"


def assert_independent(got: Mapping[str, torch.Tensor], src: Mapping[str, torch.Tensor]) -> None:
    """Writing to a key changes no key that was a separate storage in the source."""
    done: set[int] = set()
    for key, t in src.items():
        if t.numel() == 0 or storage_id(t) in done:
            continue
        done.add(storage_id(t))
        others = [k for k, o in src.items() if o.numel() and storage_id(o) != storage_id(t)]
        before = {k: bits(got[k]).clone() for k in [key, *others]}
        scramble_(got[key])
        assert not torch.equal(bits(got[key]), before[key]), f"{key}: the write did not land"
        changed = [k for k in others if not torch.equal(bits(got[k]), before[k])]
        assert not changed, f"writing to {key} changed {changed}, separate storages in the source"


def metadata_of(state: Any) -> Any:
    return getattr(state, "_metadata", None)


def assert_same_metadata(got: Any, src: Any) -> None:
    expected = metadata_of(src)
    found = metadata_of(got)
    if expected is None:
        assert found is None, f"metadata appeared from nowhere: {found!r}"
        return
    assert found is not None, "_metadata was dropped"
    assert list(found.items()) == list(expected.items()), f"_metadata {found!r} != {expected!r}"


# -- the source state dicts -----------------------------------------------------------------


@dataclass
class Case:
    state: dict[str, torch.Tensor]  # an OrderedDict with _metadata, or a plain dict
    entries: list[list[Any]]  # StateBag(entries) has exactly these keys, dtypes and shapes
    origin: dict[str, Any]  # key -> the storage it was made in (what sharing must be)


def _tree(draw: Any, prefix: str, depth: int) -> list[tuple[str, str]]:
    """(key, kind) of a random module tree in state_dict() order: parameters, buffers,
    then submodules. Names w*/b*/m* keep leaves and containers apart."""
    slots = [(f"{prefix}w{i}", "param") for i in range(draw(st.integers(0, 3)))]
    slots += [(f"{prefix}b{i}", "buffer") for i in range(draw(st.integers(0, 3)))]
    for i in range(draw(st.integers(0, 2)) if depth < 2 else 0):
        slots += _tree(draw, f"{prefix}m{i}.", depth + 1)
    return slots


shapes = st.lists(st.integers(0, 4), max_size=3)
sides = st.integers(1, 4)


@st.composite
def bag_specs(draw: Any) -> dict[str, Any]:
    """A StateBag: random tree, dtypes and shapes; some entries tied to an earlier one (one
    tensor under two names), some with an earlier entry's values in their own storage."""
    slots = _tree(draw, "", 0) or [("b0", "buffer")]  # containers exist only for keys
    entries: list[list[Any]] = []
    fills: list[Any] = []  # "random", None (tied) or the key whose values to copy
    for key, kind in slots:
        mode = draw(st.sampled_from(["new", "new", "tie", "equal"]))
        same_kind = [e for e in entries if e[3] == kind]
        if mode == "tie" and same_kind:
            target = draw(st.sampled_from(same_kind))
            entries.append([key, target[1], list(target[2]), kind, target[0]])
            fills.append(None)
            continue
        fitting = [e for e in entries if kind == "buffer" or e[1] in PARAM_DTYPES]
        if mode == "equal" and fitting:
            target = draw(st.sampled_from(fitting))
            entries.append([key, target[1], list(target[2]), kind, None])
            fills.append(target[0])
            continue
        dtype = draw(st.sampled_from(PARAM_DTYPES if kind == "param" else ALL_DTYPES))
        entries.append([key, dtype, draw(shapes), kind, None])
        fills.append("random")
    return {
        "style": "bag",
        "entries": entries,
        "fills": fills,
        "seed": draw(st.integers(0, 2**31 - 1)),
        "specials": draw(st.booleans()),
        "metadata": draw(st.sampled_from([True, True, False])),
    }


def build_bag(spec: dict[str, Any]) -> Case:
    entries = spec["entries"]
    bag = StateBag(entries)
    gen = torch.Generator().manual_seed(spec["seed"])

    def tensor(key: str) -> torch.Tensor:
        kind = next(e[3] for e in entries if e[0] == key)
        return bag.get_parameter(key) if kind == "param" else bag.get_buffer(key)

    origin: dict[str, Any] = {}
    with torch.no_grad():
        for (key, _dtype, shape, _kind, tie), fill in zip(entries, spec["fills"]):
            origin[key] = origin[tie] if tie is not None else key
            t = tensor(key)
            if fill == "random":
                t.copy_(random_values(t.dtype, shape, gen, spec["specials"]))
            elif fill is not None:
                t.copy_(tensor(fill))
    state = bag.state_dict()
    return Case(state if spec["metadata"] else dict(state), entries, origin)


# No reinterpreting views (base.view(torch.int32)): torch.save refuses one storage seen as
# two dtypes, so torch's own rules say nothing about them.
VIEWS = ["whole", "t", "cols2", "row0", "rest", "scalar", "flat", "empty", "diag"]


def apply_view(base: torch.Tensor, view: str) -> torch.Tensor:
    """A view of the 2-d ``base`` (always a new tensor object, one storage with it)."""
    return {
        "whole": lambda: base.view(base.shape),
        "t": lambda: base.t(),
        "cols2": lambda: base[:, ::2],
        "row0": lambda: base[0],
        "rest": lambda: base[1:],
        "scalar": lambda: base[-1, -1],
        "flat": lambda: base.view(-1),
        "empty": lambda: base[:0],
        "diag": lambda: base.diagonal(),
    }[view]()


@st.composite
def view_specs(draw: Any) -> dict[str, Any]:
    """A hand-made state dict: views (often non-contiguous) of one or two base tensors,
    the same tensor under two keys, clones (equal values, own storage), fresh tensors."""
    bases = [
        {"dtype": draw(st.sampled_from(ALL_DTYPES)), "shape": [draw(sides), draw(sides)]}
        for _ in range(draw(st.integers(1, 2)))
    ]
    items: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(2, 8))):
        how = draw(st.sampled_from(["view", "view", "view", "same", "clone", "fresh"]))
        if how in ("same", "clone") and items:
            source: list[Any] = [how, draw(st.integers(0, len(items) - 1))]
        elif how == "fresh":
            source = ["fresh", draw(st.sampled_from(ALL_DTYPES)), draw(shapes)]
        else:
            source = ["view", draw(st.integers(0, len(bases) - 1)), draw(st.sampled_from(VIEWS))]
        items.append({"source": source, "sub": draw(st.booleans()), "param": draw(st.booleans())})
    return {
        "style": "views",
        "bases": bases,
        "items": items,
        "seed": draw(st.integers(0, 2**31 - 1)),
        "specials": draw(st.booleans()),
        "metadata": draw(st.sampled_from([True, True, False])),
    }


def build_views(spec: dict[str, Any]) -> Case:
    gen = torch.Generator().manual_seed(spec["seed"])
    bases = [
        random_values(getattr(torch, b["dtype"]), b["shape"], gen, spec["specials"])
        for b in spec["bases"]
    ]
    made: list[tuple[torch.Tensor, str, Any, bool]] = []  # tensor, kind, origin, in "sub"
    for n, item in enumerate(spec["items"]):
        how, *args = item["source"]
        if how == "same":
            tensor, kind, origin, _sub = made[args[0]]
        else:
            if how == "view":
                tensor, origin = apply_view(bases[args[0]], args[1]), ("base", args[0])
            elif how == "clone":
                tensor, origin = made[args[0]][0].clone(), ("item", n)
            else:
                dtype = getattr(torch, args[0])
                tensor, origin = random_values(dtype, args[1], gen, spec["specials"]), ("item", n)
            floating = tensor.is_floating_point() or tensor.is_complex()
            kind = "param" if item["param"] and floating else "buffer"
        made.append((tensor, kind, origin, item["sub"]))
    # state_dict() order of a StateBag: the root's parameters, its buffers, then "sub"'s.
    order = sorted(range(len(made)), key=lambda i: (made[i][3], made[i][1] == "buffer"))
    keys = {
        i: f"{'sub.' if made[i][3] else ''}{'w' if made[i][1] == 'param' else 'b'}{i}"
        for i in order
    }
    state: dict[str, torch.Tensor] = OrderedDict()
    entries: list[list[Any]] = []
    first_key: dict[int, str] = {}  # id(tensor) -> its first key: later keys are tied to it
    origin: dict[str, Any] = {}
    for i in order:
        tensor, kind, source, _sub = made[i]
        key = keys[i]
        tie = first_key.setdefault(id(tensor), key)
        entries.append(
            [key, str(tensor.dtype).removeprefix("torch."), list(tensor.shape), kind,
             None if tie == key else tie]
        )  # fmt: skip
        state[key] = tensor
        origin[key] = source
    if spec["metadata"]:
        with torch.device("meta"):
            state._metadata = StateBag(entries).state_dict()._metadata  # type: ignore[attr-defined]
    else:
        state = dict(state)
    return Case(state, entries, origin)


def build(spec: dict[str, Any]) -> Case:
    case = build_bag(spec) if spec["style"] == "bag" else build_views(spec)
    note(f"entries={case.entries!r}")
    return case


cases = st.one_of(bag_specs(), view_specs())


# -- the registry ---------------------------------------------------------------------------


@contextmanager
def _plain_environment() -> Iterator[None]:
    """Explicit homes only: no database or store named by the environment."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("REGISTRY_DATABASE_URL", raising=False)
        mp.delenv("REGISTRY_STORAGE_URL", raising=False)
        yield


@pytest.fixture(scope="module")
def empty_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry home with its catalogue created, copied for each example (creating the
    catalogue is most of the cost of a fresh registry)."""
    home = tmp_path_factory.mktemp("roundtrip") / "home"
    with _plain_environment():
        reg = Registry(home=home)
        reg.upgrade_database()  # reading would not create it
        reg.close()
    return home


#: Registries of the examples live in memory where there is a tmpfs: pushes fsync, and on a
#: disk that is most of an example's time.
_FAST_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@contextmanager
def pushed(case: Case, empty_home: Path) -> Iterator[tuple[Registry, str, Path]]:
    """A fresh registry holding ``case.state`` as bag:1, and a folder to pull into."""
    with tempfile.TemporaryDirectory(dir=_FAST_TMP) as tmp, _plain_environment():
        shutil.copytree(empty_home, Path(tmp) / "home")
        reg = Registry(home=Path(tmp) / "home")
        try:
            mv = reg.push(case.state, name="bag", arch=ARCH, arch_kwargs={"entries": case.entries})
            yield reg, mv.ref, Path(tmp)
        finally:
            reg.close()


@SETTINGS
@given(spec=cases)
def test_load_state_dict_gives_back_the_source(spec, empty_home):
    case = build(spec)
    with pushed(case, empty_home) as (reg, ref, _tmp):
        got = reg.load_state_dict(ref)
        assert_same_tensors(got, case.state)
        assert_same_sharing(got, case.state)
        assert_no_overlap(got, case.state)
        assert_same_metadata(got, case.state)
        assert_independent(reg.load_state_dict(ref), case.state)


@SETTINGS
@given(spec=cases)
def test_pulled_pth_gives_back_the_source(spec, empty_home):
    case = build(spec)
    with pushed(case, empty_home) as (reg, ref, tmp):
        path = reg.pull(ref, tmp / "out.pth")
        got = torch.load(path, weights_only=True)
        assert_same_tensors(got, case.state)
        assert_same_sharing(got, case.state)
        assert_no_overlap(got, case.state)
        assert_same_metadata(got, case.state)
        assert_independent(got, case.state)


@SETTINGS
@given(spec=cases)
def test_pulled_safetensors_gives_back_the_source(spec, empty_home):
    case = build(spec)
    with pushed(case, empty_home) as (reg, ref, tmp):
        path = reg.pull(ref, tmp / "out.safetensors")
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
            opened = {key: f.get_tensor(key) for key in f.keys()}
        assert header.get("format") == "pt", f"safetensors header metadata {header!r}"
        assert_same_tensors(opened, case.state, ordered=False)
        assert_same_tensors(load_file(str(path)), case.state, ordered=False)


@SETTINGS
@given(spec=cases)
def test_loaded_module_holds_the_source(spec, empty_home):
    case = build(spec)
    with pushed(case, empty_home) as (reg, ref, _tmp):
        module = reg.load(ref)
        assert isinstance(module, StateBag)
        assert not any(m.training for m in module.modules()), "not in eval mode"
        state = module.state_dict()
        assert_same_tensors(state, case.state)
        params = dict(module.named_parameters(remove_duplicate=False))
        buffers = dict(module.named_buffers(remove_duplicate=False))
        assert sorted([*params, *buffers]) == sorted(case.state)
        for key, _dtype, _shape, kind, tie in case.entries:
            if kind == "param":
                assert key in params, f"{key} is not a parameter"
                assert isinstance(params[key], nn.Parameter) and params[key].requires_grad, key
                if tie is not None:
                    assert params[key] is params[tie], f"{key} is no longer tied to {tie}"
            else:
                assert key in buffers and not isinstance(buffers[key], nn.Parameter), key
                if tie is not None:
                    assert buffers[key] is buffers[tie], f"{key} is no longer tied to {tie}"
        assert_no_overlap(state, case.state)
        assert_independent(state, case.state)


# -- controls: the helpers and the property on torch's own format --------------------------


@CONTROL_SETTINGS
@given(spec=cases)
def test_control_sources_are_what_the_generator_meant(spec):
    """The sharing helper sees exactly the storages the generator made; a StateBag of the
    entries has the source's keys, dtypes, shapes and metadata."""
    case = build(spec)
    partition, places = sharing_pattern(case.state)
    expected: dict[Any, list[str]] = {}
    for key, t in case.state.items():
        if t.numel():
            expected.setdefault(case.origin[key], []).append(key)
    assert partition == sorted(expected.values())
    assert sorted(places) == sorted(k for g in partition if len(g) > 1 for k in g)
    assert sharing_pattern(case.state) == (partition, places)
    assert_same_tensors(case.state, case.state)
    with torch.device("meta"):
        bag = StateBag(case.entries)
    skeleton = bag.state_dict()
    assert list(skeleton) == list(case.state)
    for key, t in case.state.items():
        assert (skeleton[key].dtype, skeleton[key].shape) == (t.dtype, t.shape), key
    if metadata_of(case.state) is not None:
        assert_same_metadata(skeleton, case.state)
    # The bag loads these very tensors as torch would (what `load` relies on).
    real = StateBag(case.entries)
    real.load_state_dict(case.state, assign=True)
    assert_same_tensors(real.state_dict(), case.state)


@CONTROL_SETTINGS
@given(spec=cases)
def test_control_torch_save_round_trip_has_the_property(spec):
    """torch.save / torch.load(weights_only=True) give back the same keys, bits, sharing
    and metadata, and separate storages stay independent."""
    case = build(spec)
    buffer = io.BytesIO()
    torch.save(case.state, buffer)
    buffer.seek(0)
    got = torch.load(buffer, weights_only=True)
    assert_same_tensors(got, case.state)
    assert_same_sharing(got, case.state)
    assert_no_overlap(got, case.state)
    assert_same_metadata(got, case.state)
    assert_independent(got, case.state)
    # safetensors carries every dtype, 0-d and empty tensor here (given its own copies).
    data = save({k: v.clone(memory_format=torch.contiguous_format) for k, v in case.state.items()},
                metadata={"format": "pt"})  # fmt: skip
    assert_same_tensors(load(data), case.state, ordered=False)


def test_control_helpers_catch_what_they_must():
    """The checks fail on the very faults the property is about."""
    x = torch.tensor([1.0, float("nan"), -0.0])
    assert same_bits(x, x.clone())
    assert not same_bits(x, torch.tensor([1.0, float("nan"), 0.0]))
    base = torch.arange(6.0).view(2, 3)
    src = OrderedDict(a=base[0], b=base[1:], c=base[0].clone(), e=base[:0])
    other = base.clone()
    merged = OrderedDict(a=other[0], b=other[1:], c=other[0], e=other[:0])  # c is a's memory
    with pytest.raises(AssertionError):
        assert_same_sharing(merged, src)
    with pytest.raises(AssertionError):
        assert_independent(merged, src)
    buf = bytearray(12)
    one = torch.frombuffer(buf, dtype=torch.float32)
    two = torch.frombuffer(buf, dtype=torch.float32)
    assert storage_id(one) != storage_id(two)  # two storages, one memory
    with pytest.raises(AssertionError, match="sharing memory"):
        assert_no_overlap({"a": one, "b": two}, {"a": one.clone(), "b": two.clone()})
    moved = OrderedDict(a=base.clone()[0], b=src["b"].clone(), c=src["c"], e=src["e"])
    with pytest.raises(AssertionError):
        assert_same_sharing(moved, src)  # a and b no longer one storage
    padded = torch.cat([torch.zeros(1, 3), base])
    shifted = OrderedDict(a=padded[1], b=padded[2:], c=src["c"], e=src["e"])
    with pytest.raises(AssertionError, match="places"):
        assert_same_sharing(shifted, src)  # one storage still, but at other offsets
    src._metadata = OrderedDict({"": {"version": 1}})  # type: ignore[attr-defined]
    with pytest.raises(AssertionError):
        assert_same_metadata(dict(src), src)
    assert_same_metadata(dict(src), dict(src))
