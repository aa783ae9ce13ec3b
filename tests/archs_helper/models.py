"""Small nn.Module classes that the registry must be able to rebuild by import path."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


class TinyNet(nn.Module):
    """8 inputs -> hidden -> 3 outputs; no `config`, every argument has a default."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, x):
        return self.body(x)


class PluginNet(TinyNet):
    """What the `tinyplug` entry point of the test distribution names."""

    def __init__(self, hidden: int = 6):
        super().__init__(hidden=hidden)


def tiny_factory(hidden: int = 4, out: int = 2) -> nn.Module:
    """A factory function (not a class) building a module."""
    return nn.Sequential(nn.Linear(8, hidden), nn.Tanh(), nn.Linear(hidden, out))


class NeedsArgs(nn.Module):
    """Its constructor needs `width` and it keeps no config: cannot be rebuilt unaided."""

    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(8, width)

    def forward(self, x):
        return self.fc(x)


class ConfigNet(nn.Module):
    """Keeps its constructor arguments in a `config` dict."""

    def __init__(self, hidden, out=3):
        super().__init__()
        self.config = {"hidden": hidden, "out": out}
        self.body = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, out))

    def forward(self, x):
        return self.body(x)


@dataclass
class NetConfig:
    hidden: int
    out: int = 3


class DataclassNet(ConfigNet):
    """`config` is a dataclass."""

    def __init__(self, hidden, out=3):
        super().__init__(hidden, out)
        self.config = NetConfig(hidden, out)


class _ToDict:
    def __init__(self, **values):
        self._values = values

    def to_dict(self):
        return dict(self._values)


class ToDictNet(ConfigNet):
    """`config` is an object with `to_dict()` (like a transformers config)."""

    def __init__(self, hidden, out=3):
        super().__init__(hidden, out)
        self.config = _ToDict(hidden=hidden, out=out)


class HparamsNet(nn.Module):
    """Keeps its arguments in `hparams` (like a Lightning module)."""

    def __init__(self, hidden, out=3):
        super().__init__()
        self.hparams = {"hidden": hidden, "out": out}
        self.body = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, out))

    def forward(self, x):
        return self.body(x)


class StateBag(nn.Module):
    """Holds exactly the tensors `entries` lists, for the round-trip property tests.

    Each entry is ``[key, dtype_name, shape, kind, tie]``: a dotted key (the segments
    before the last are plain ``nn.Module()`` containers made on demand), a torch dtype
    name, a shape, ``"param"`` or ``"buffer"``, and ``tie``: None or the key of an
    earlier entry whose very tensor this entry is as well (same dtype, shape and kind).
    Tensors are ``torch.empty`` (it builds on the meta device); entries must be listed
    in the order ``state_dict()`` gives them (per module: parameters, buffers, then
    submodules), and the constructor refuses them otherwise.
    """

    def __init__(self, entries):
        import torch

        super().__init__()
        made: dict[str, tuple[torch.Tensor, str]] = {}
        for key, dtype_name, shape, kind, tie in entries:
            if kind not in ("param", "buffer"):
                raise ValueError(f"{key}: kind must be 'param' or 'buffer', not {kind!r}")
            dtype = getattr(torch, dtype_name, None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"{key}: unknown dtype {dtype_name!r}")
            shape = tuple(int(n) for n in shape)
            *path, leaf = key.split(".")
            owner: nn.Module = self
            for part in path:
                child = owner._modules.get(part)
                if child is None:
                    if part in owner._parameters or part in owner._buffers:
                        raise ValueError(f"{key}: {part!r} is a tensor, not a container")
                    child = nn.Module()
                    owner.add_module(part, child)
                owner = child
            if leaf in owner._modules:
                raise ValueError(f"{key}: {leaf!r} is a container, not a tensor")
            if tie is not None:
                if tie not in made:
                    raise ValueError(f"{key}: tie {tie!r} is not an earlier entry")
                tensor, tied_kind = made[tie]
                if (tied_kind, tensor.dtype, tuple(tensor.shape)) != (kind, dtype, shape):
                    raise ValueError(f"{key}: tied to {tie!r} but differs in kind/dtype/shape")
            else:
                tensor = torch.empty(shape, dtype=dtype)
                if kind == "param":
                    if not (dtype.is_floating_point or dtype.is_complex):
                        raise ValueError(f"{key}: a {dtype_name} tensor cannot be a parameter")
                    tensor = nn.Parameter(tensor)
            if kind == "param":
                owner.register_parameter(leaf, tensor)
            else:
                owner.register_buffer(leaf, tensor)
            made[key] = (tensor, kind)
        keys = [entry[0] for entry in entries]
        if list(self.state_dict(keep_vars=True)) != keys:
            raise ValueError("entries are not in state_dict() order")
