"""Modules whose state dicts test the registry's fidelity rules (tests/test_fidelity.py)."""

from __future__ import annotations

import torch
from torch import nn


class TiedLM(nn.Module):
    """A language-model head tied to its embedding, as GPT-2 and most LMs do."""

    def __init__(self, vocab: int = 50, width: int = 16):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(self.norm(self.embed(tokens)))


class HoldsModule(nn.Module):
    """A net whose child really is called ``module``: its keys start with ``module.``."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.module = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2))

    def forward(self, x):
        return self.module(x)


class WithExtraState(nn.Module):
    """Keeps a tensor as ``_extra_state``, restored through ``set_extra_state``."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.calls = torch.zeros(1, dtype=torch.int64)

    def get_extra_state(self):
        return self.calls

    def set_extra_state(self, state):
        self.calls = state

    def forward(self, x):
        return self.fc(x)


class Versioned(nn.Module):
    """A module that, like mnasnet, refuses weights whose module version it cannot tell."""

    _version = 2

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        if local_metadata.get("version") not in (1, 2):
            raise ValueError(f"version should be 1 or 2, not {local_metadata.get('version')}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def forward(self, x):
        return self.fc(x)
