"""Round trips for several torchvision families: push a .pth, load, same outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import assert_same_state, make_model

from registry import Registry

FAMILIES = [
    # (architecture, constructor arguments, input shape)
    ("resnet50", {}, (1, 3, 64, 64)),
    ("mobilenet_v3_small", {"num_classes": 10}, (2, 3, 64, 64)),
    ("vit_b_32", {"image_size": 64, "num_classes": 10}, (1, 3, 64, 64)),
    ("efficientnet_b0", {}, (1, 3, 64, 64)),
    ("fasterrcnn_mobilenet_v3_large_320_fpn", {"num_classes": 5}, "detection"),
    # Builders that need real tensors while constructing: loaded through the CPU path.
    ("regnet_y_400mf", {}, (1, 3, 64, 64)),
    ("raft_small", {}, "flow"),
]


def _outputs_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_outputs_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_outputs_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("arch,kwargs,shape", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_round_trip(reg: Registry, tmp_path: Path, arch, kwargs, shape):
    original = make_model(arch, seed=11, **kwargs)
    path = tmp_path / f"{arch}.pth"
    torch.save(original.state_dict(), path)
    mv = reg.push(path, arch=arch, arch_kwargs=kwargs)
    assert mv.ref == f"{arch}:1" and mv.arch_kwargs == kwargs

    model = reg.load(mv.ref)
    assert type(model) is type(original) and not model.training
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert_same_state(model.state_dict(), original.state_dict())
    torch.manual_seed(0)
    if shape == "detection":  # a list of images in, a list of dicts out
        inputs = ([torch.rand(3, 96, 128)],)
    elif shape == "flow":  # two frames in, a list of flow estimates out
        inputs = (torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128), 2)
    else:
        inputs = (torch.randn(*shape),)
    with torch.no_grad():
        expected = original(*inputs)
        got = model(*inputs)
    assert _outputs_equal(got, expected)
