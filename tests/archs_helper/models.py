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
