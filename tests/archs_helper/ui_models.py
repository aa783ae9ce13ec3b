"""Models for the browser tests of `registry ui` (tests/test_ui_browser.py)."""

from __future__ import annotations

from torch import nn


class LayeredNet(nn.Module):
    """8 -> 32 (batch norm) -> 64 -> 4: tensors of several sizes and two dtypes.

    The largest tensor (``body.3.weight``) is not the first one and the head
    (``body.5.*``) is last in ``state_dict()`` order, which the tests rely on.
    """

    def __init__(self, hidden: int = 32, wide: int = 64, out: int = 4):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(8, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, wide),
            nn.ReLU(),
            nn.Linear(wide, out),
        )

    def forward(self, x):
        return self.body(x)


class Stack(nn.Module):
    """``depth`` Linear(4, 4) layers: 2 x depth tensors, for the tensor table's pages."""

    def __init__(self, depth: int = 300):
        super().__init__()
        self.layers = nn.Sequential(*(nn.Linear(4, 4) for _ in range(depth)))

    def forward(self, x):
        return self.layers(x)
