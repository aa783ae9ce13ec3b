"""Every torchvision model under 500 MB round-trips push, load_state_dict, load and pull.

One test per ``torchvision.models.list_models()`` entry, so a failure names the model.
Weights are random (fixed seed, never downloaded). For each model:

1. ``load_state_dict`` gives the same keys in the same order, with the same dtype,
   shape and bits, and no two tensors share memory unless they did in the original;
2. ``load`` rebuilds a module in eval mode whose outputs on a seeded input are
   bit-identical to the original's (the original is deterministic on these inputs:
   it was checked by running it twice, so any difference is a registry bug);
3. ``pull`` writes a file that ``torch.load(weights_only=True)`` reads back to the
   same tensors, and that a freshly built model loads strictly and runs identically.

The steps run independently and the test reports every step that failed. The sweep
takes several minutes on two cores: it is marked ``slow`` (skip with ``-m "not slow"``).
"""

from __future__ import annotations

import gc
import inspect
import shutil
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from conftest import make_model
from torch import nn

from registry import Registry

#: Models whose state dict is at least this large are skipped.
SIZE_LIMIT = 500e6
MODELS = sorted(torchvision.models.list_models())

SEED = 0
OTHER_SEED = 1  # the model the pulled file is loaded into starts from other weights
INPUT_SEED = 1234

DETECTION = ("fasterrcnn_", "fcos_", "retinanet_", "ssd", "maskrcnn_", "keypointrcnn_")
SEGMENTATION = ("fcn_", "deeplabv3_", "lraspp_")
VIDEO = ("r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_", "swin3d_")
FLOW = ("raft_",)

#: Image side for classifiers that accept small inputs (adaptive pooling).
SMALL_IMAGE = 64
#: Classifiers that need a larger image.
IMAGE_SIDE = {
    "inception_v3": 80,  # at least 75x75
    "quantized_inception_v3": 80,
    "maxvit_t": 224,  # window partitions need 224
    "vit_b_16": 224,  # the position embedding fixes the image size
    "vit_b_32": 224,
    "vit_h_14": 224,
    "vit_l_16": 224,
    "vit_l_32": 224,
}
#: Video input (T, H, W): the smallest each family accepts.
VIDEO_SIZE = {
    "s3d": (16, 224, 224),  # the final 2x7x7 average pool
    "mvit_v1_b": (16, 224, 224),  # fixed by the position embeddings / pooling sizes
    "mvit_v2_s": (16, 224, 224),
}
SMALL_VIDEO = (2, 32, 32)
DETECTION_SIDE = 128
RAFT_SIDE = 128  # the smallest that keeps four levels of the correlation pyramid
RAFT_UPDATES = 3


def _kwargs(name: str) -> dict[str, Any]:
    """Constructor arguments (beyond weights=None), also stored as arch_kwargs: JSON values."""
    if name.startswith("quantized_"):
        # The float, quantizable twin: what get_model_builder(name)(weights=None) builds.
        return {"quantize": False}
    if name.startswith(DETECTION) and not name.startswith("ssd"):  # SSD fixes its size
        return {"min_size": DETECTION_SIDE, "max_size": DETECTION_SIDE}
    return {}


def _builder_extras(name: str) -> dict[str, Any]:
    builder = torchvision.models.get_model_builder(name)
    params = inspect.signature(builder).parameters
    return {"weights_backbone": None} if "weights_backbone" in params else {}


@contextmanager
def _registered_on_meta() -> Iterator[None]:
    """Build on the CPU, but every parameter and buffer moves to meta as it is registered.

    For builders that compute with real tensors while constructing (RegNet's widths):
    nothing is initialised or filled with data.
    """
    register_parameter = nn.Module.register_parameter
    register_buffer = nn.Module.register_buffer

    def parameter(self, name, param):  # type: ignore[no-untyped-def]
        register_parameter(self, name, param)
        if param is not None:
            self._parameters[name] = nn.Parameter(param.to("meta"), param.requires_grad)

    def buffer(self, name, tensor, persistent=True):  # type: ignore[no-untyped-def]
        register_buffer(self, name, tensor, persistent)
        if tensor is not None:
            self._buffers[name] = tensor.to("meta")

    nn.Module.register_parameter = parameter  # type: ignore[method-assign]
    nn.Module.register_buffer = buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]


@cache
def _state_dict_bytes(name: str) -> int:
    """Size of the model's state dict, from a meta-device build (no memory, no init)."""
    builder = torchvision.models.get_model_builder(name)
    kwargs = {"weights": None, **_builder_extras(name), **_kwargs(name)}
    try:
        with torch.device("meta"):
            module = builder(**kwargs)
    except NotImplementedError:  # "Cannot copy out of meta tensor": see _registered_on_meta
        with _registered_on_meta():
            module = builder(**kwargs)
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def _inputs(name: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The (args, kwargs) of the forward call; the same tensors every time it is called."""
    g = torch.Generator().manual_seed(INPUT_SEED)
    if name.startswith(DETECTION):
        return ([torch.rand(3, DETECTION_SIDE, DETECTION_SIDE, generator=g)],), {}
    if name.startswith(SEGMENTATION):
        return (torch.rand(1, 3, 96, 96, generator=g),), {}
    if name.startswith(VIDEO):
        t, h, w = VIDEO_SIZE.get(name, SMALL_VIDEO)
        return (torch.rand(1, 3, t, h, w, generator=g),), {}
    if name.startswith(FLOW):
        frames = [torch.rand(1, 3, RAFT_SIDE, RAFT_SIDE, generator=g) for _ in range(2)]
        return tuple(frames), {"num_flow_updates": RAFT_UPDATES}
    side = IMAGE_SIDE.get(name, SMALL_IMAGE)
    return (torch.rand(1, 3, side, side, generator=g),), {}


def _run(model: nn.Module, name: str) -> Any:
    args, kwargs = _inputs(name)
    with torch.no_grad():
        return model(*args, **kwargs)


def _run_backbone(model: nn.Module, reference: nn.Module, name: str) -> Any:
    """A detector's backbone features on the image as ``reference``'s transform prepares it.

    Random-weight detectors may detect nothing, which would make their outputs equal
    whatever the weights; the feature maps always depend on them.
    """
    (images,), _ = _inputs(name)
    with torch.no_grad():
        batch, _targets = reference.transform(images)
        return model.backbone(batch.tensors)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def _describe_difference(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"{a.dtype} {list(a.shape)} vs {b.dtype} {list(b.shape)}"
    if a.is_floating_point() and a.numel():
        delta = (a.double() - b.double()).abs()
        return f"{int((delta > 0).sum())} of {a.numel()} values differ, max abs diff {float(delta.max()):.3g}"
    return f"{int((a != b).sum())} of {a.numel()} values differ"


def assert_same_output(got: Any, expected: Any, where: str = "output") -> None:
    """Bit-identical tensors in the same structure (tuples, lists, dicts, namedtuples)."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor), f"{where}: got a {type(got).__name__}"
        assert _same_bits(got, expected), f"{where}: {_describe_difference(got, expected)}"
    elif isinstance(expected, Mapping):
        assert type(got) is type(expected), f"{where}: {type(got).__name__}"
        assert list(got) == list(expected), f"{where}: keys {list(got)} vs {list(expected)}"
        for key in expected:
            assert_same_output(got[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (tuple, list)):  # namedtuples too: the type is compared
        assert type(got) is type(expected), f"{where}: {type(got).__name__}"
        assert len(got) == len(expected), f"{where}: length {len(got)} vs {len(expected)}"
        for i, (x, y) in enumerate(zip(got, expected)):
            assert_same_output(x, y, f"{where}[{i}]")
    else:
        assert got == expected, f"{where}: {got!r} vs {expected!r}"


def assert_same_tensors(got: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]):
    """Same keys in the same order, each with the same dtype, shape and bits."""
    assert list(got) == list(expected), "keys or their order differ"
    bad = [k for k in expected if not _same_bits(got[k], expected[k])]
    assert not bad, f"{len(bad)} tensors differ, first {bad[0]!r}: " + _describe_difference(
        got[bad[0]], expected[bad[0]]
    )


def assert_no_new_sharing(
    got: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> None:
    """Keys whose (non-empty) tensors share memory in ``got`` share it in ``expected`` too.

    Equal-valued tensors (zeros, ones, num_batches_tracked) must not come back aliased:
    writing to one would change the others.
    """
    groups: dict[int, list[str]] = {}
    for key, tensor in got.items():
        storage = tensor.untyped_storage()
        if tensor.numel() and storage.nbytes():
            groups.setdefault(storage.data_ptr(), []).append(key)
    ptr = {k: t.untyped_storage().data_ptr() for k, t in expected.items()}
    bad = [keys for keys in groups.values() if len({ptr[k] for k in keys}) > 1]
    assert not bad, (
        f"{len(bad)} groups of tensors share memory that did not in the original, "
        f"e.g. {bad[0][:4]}"
    )


class _Steps:
    """Runs the steps of a round trip independently and collects their failures."""

    def __init__(self, name: str):
        self.name = name
        self.failures: list[str] = []

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            self.failures.append(
                f"[{title}] {type(exc).__name__}: {first}\n{traceback.format_exc(limit=-4)}"
            )

    def check(self) -> None:
        if self.failures:
            heads = "; ".join(f.splitlines()[0] for f in self.failures)
            pytest.fail(
                f"{self.name}: {heads}\n\n" + "\n".join(self.failures), pytrace=False
            )


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The default weight initialization of:FutureWarning")
@pytest.mark.parametrize("name", MODELS)
def test_round_trip(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    size = _state_dict_bytes(name)
    if size >= SIZE_LIMIT:
        pytest.skip(f"{name}: state dict is {size / 1e6:.1f} MB (limit {SIZE_LIMIT / 1e6:.0f} MB)")
    monkeypatch.delenv("REGISTRY_DATABASE_URL", raising=False)
    monkeypatch.delenv("REGISTRY_STORAGE_URL", raising=False)
    kwargs = _kwargs(name)
    detector = name.startswith(DETECTION)
    home, out = tmp_path / "home", tmp_path / "out.pth"
    reg = Registry(home=home)
    steps = _Steps(name)

    def run(module: nn.Module) -> Any:
        return _run(module, name)

    try:
        model = make_model(name, seed=SEED, **kwargs)
        assert not model.training
        sd = model.state_dict()
        expected = run(model)
        expected_features = _run_backbone(model, model, name) if detector else None

        mv = reg.push(sd, name="m", arch=name, arch_kwargs=kwargs)
        assert mv.arch == name and mv.arch_kwargs == kwargs

        with steps.step("1 load_state_dict"):
            loaded_sd = reg.load_state_dict(mv.ref)
            assert_same_tensors(loaded_sd, sd)
            assert_no_new_sharing(loaded_sd, sd)
        loaded_sd = None

        with steps.step("2 load"):
            m2 = reg.load(mv.ref)
            assert type(m2) is type(model)
            assert not any(m.training for m in m2.modules()), "loaded model is not in eval mode"
            assert not any(t.is_meta for t in [*m2.parameters(), *m2.buffers()])
            assert_same_tensors(m2.state_dict(), sd)
            assert_same_output(run(m2), expected)
            if detector:
                assert_same_output(
                    _run_backbone(m2, model, name), expected_features, "backbone output"
                )
        m2 = None

        with steps.step("3 pull"):
            path = reg.pull(mv.ref, out)
            pulled = torch.load(path, weights_only=True)
            assert_same_tensors(pulled, sd)
            fresh = make_model(name, seed=OTHER_SEED, **kwargs)
            fresh.load_state_dict(pulled)  # strict
            assert not fresh.training
            assert_same_output(run(fresh), expected)
            if detector:
                assert_same_output(
                    _run_backbone(fresh, model, name), expected_features, "backbone output"
                )
            assert_no_new_sharing(pulled, sd)
        pulled = fresh = None
    finally:
        # At most one model's files on disk at a time: drop the memory-mapped tensors,
        # then the registry and the pulled file.
        reg.close()
        loaded_sd = m2 = pulled = fresh = None
        gc.collect()
        shutil.rmtree(home, ignore_errors=True)
        out.unlink(missing_ok=True)
    steps.check()
