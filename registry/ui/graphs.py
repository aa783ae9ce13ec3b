"""The two drawings of the web page, as geometry its templates turn into SVG: a model's
lineage (versions as nodes, parent -> child as edges, parents from other names in
columns of their own) and the chart of relative change per tensor of a comparison.

Pure functions of records: no I/O, no torch. Every text that reaches the SVG is a
record's value, escaped by the template like any other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Pixels: a lineage row's height, a column's width, the left margin of the labels.
ROW, COLUMN, MARGIN = 30, 190, 16
#: The chart's size in pixels, and the most bars drawn: a larger model's tensors are
#: drawn in bins of consecutive tensors, each bar the largest change in its bin.
CHART_WIDTH, CHART_HEIGHT, MAX_BARS = 960, 220, 1200


@dataclass(frozen=True)
class Node:
    ref: str
    x: int
    y: int
    label: str
    current: bool  # a version of the model the page is about
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Edge:
    parent: str
    child: str
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True)
class Lineage:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int


def lineage(name: str, versions: Sequence[Any], parents: Sequence[Any]) -> Lineage:
    """Lay out ``versions`` of model ``name`` (records, newest first) with their
    ``parents`` that are not among them (records of other names or older versions).

    One row per version in time order, newest at the top; this model's versions in
    the first column, each other name in a column of its own. Edges go from a parent
    to its child.
    """
    shown = {mv.ref: mv for mv in versions}
    for mv in parents:
        shown.setdefault(mv.ref, mv)
    order = sorted(shown.values(), key=lambda mv: (mv.created_at, mv.name, mv.version))
    order.reverse()
    columns = {name: 0}
    for mv in order:
        columns.setdefault(mv.name, len(columns))
    nodes = {}
    for row, mv in enumerate(order):
        x = MARGIN + 8 + columns[mv.name] * COLUMN
        y = ROW // 2 + row * ROW
        nodes[mv.ref] = Node(mv.ref, x, y, mv.ref, mv.name == name, tuple(mv.aliases))
    edges = [
        Edge(mv.parent, mv.ref, nodes[mv.parent].x, nodes[mv.parent].y, node.x, node.y)
        for mv in order
        if mv.parent in nodes and (node := nodes[mv.ref])
    ]
    width = MARGIN + len(columns) * COLUMN + 40
    return Lineage(list(nodes.values()), edges, width, max(len(order), 1) * ROW)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    tensor: str  # the tensor's name, or "first … last" for a bin
    rel: float  # relative change ||b - a|| / ||a||; 0 identical; inf: new or reshaped
    kind: str  # "identical", "changed", "added", "reshaped" (dtype changes too)


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    width: int
    height: int
    top: float  # the relative change the chart's full height stands for
    scale: str  # "linear" or "log"
    binned: int  # tensors per bar (1: one bar per tensor)


#: The smallest change a log-scale chart shows above its floor.
LOG_FLOOR = 1e-6


def change_chart(rows: Sequence[tuple[str, str, float]], scale: str = "linear") -> Chart:
    """Bars for ``rows`` ((tensor name, kind, relative change) in B's order).

    Height: the change over the largest finite change (``linear``) or its log between
    LOG_FLOOR and the largest (``log``); added and reshaped tensors, which have no
    relative change, stand at full height in a colour of their own.
    """
    finite = [rel for _, kind, rel in rows if kind == "changed" and math.isfinite(rel)]
    top = max(finite, default=0.0) or 1.0
    per = max(1, math.ceil(len(rows) / MAX_BARS))
    bins = [rows[i : i + per] for i in range(0, len(rows), per)]
    width = CHART_WIDTH / max(len(bins), 1)
    rank = {"identical": 0, "changed": 1, "reshaped": 2, "added": 3}
    bars = []
    for i, group in enumerate(bins):
        kind = max((k for _, k, _ in group), key=rank.__getitem__)
        rel = max(r for _, _, r in group)
        if kind in ("added", "reshaped"):
            fraction = 1.0
        elif rel <= 0:
            fraction = 0.0
        elif scale == "log":
            low = math.log10(LOG_FLOOR)
            fraction = (math.log10(max(rel, LOG_FLOOR)) - low) / (math.log10(top) - low or 1)
        else:
            fraction = rel / top
        fraction = min(max(fraction, 0.0), 1.0)
        height = max(fraction * CHART_HEIGHT, 2.0 if kind != "identical" else 0.0)
        label = group[0][0] if per == 1 else f"{group[0][0]} … {group[-1][0]}"
        bars.append(
            Bar(
                round(i * width, 2),
                round(CHART_HEIGHT - height, 2),
                round(max(width - (1 if width > 3 else 0), 0.5), 2),
                round(height, 2),
                label,
                rel,
                kind,
            )
        )
    return Chart(bars, CHART_WIDTH, CHART_HEIGHT, top, scale, per)
