"""What each page shows, read through :class:`registry.Registry`: one function per
page, taking the registry and the request's query values, giving the template's
context. The JSON endpoints give the same records' ``to_dict()``, the shapes of the
CLI's ``--json``.

Query values are checked here (numbers, sort keys, the registry's own validation of
names, tags and dates): a bad one is an InvalidArgumentError, shown in one line.
Nothing here imports torch: only ``compare`` does, through ``Registry.diff``.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from ..errors import InvalidArgumentError
from ..keyvalue import parse_tags
from . import graphs

#: Rows per page: models on the models page, versions on a model's page, tensors in
#: a version's tensor table.
MODELS_PER_PAGE, VERSIONS_PER_PAGE, TENSORS_PER_PAGE = 50, 100, 500


def model_url(name: str) -> str:
    """The model page's address."""
    return "/models/" + quote(name, safe="/")


def version_url(ref: str, **query: Any) -> str:
    """A version page's address (``ref`` as ``NAME:V``), with query values if given."""
    url = "/versions/" + quote(ref, safe="/:@")
    pairs = {k: v for k, v in query.items() if v not in (None, "")}
    return url + ("?" + urlencode(pairs) if pairs else "")


def paged(path: str, pairs: Sequence[tuple[str, str]], page: int, pages: int) -> dict[str, str]:
    """``first_url``, and ``prev_url`` and ``next_url`` when there is such a page:
    ``path`` with the query ``pairs`` (empty values dropped) and the page number."""
    kept = [(k, v) for k, v in pairs if v and k != "page"]

    def url(number: int) -> str:
        return f"{path}?{urlencode([*kept, ('page', str(number))])}"

    urls = {"first_url": url(1)}
    if page > 1:
        urls["prev_url"] = url(page - 1)
    if page < pages:
        urls["next_url"] = url(page + 1)
    return urls


def choice(query: Mapping[str, Any], key: str, allowed: Sequence[str]) -> str:
    """The query value ``key``, one of ``allowed`` (absent or empty: the first)."""
    value = query.get(key) or allowed[0]
    if value not in allowed:
        raise InvalidArgumentError(f"{key} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def page_number(value: str | None) -> int:
    """A 1-based page number from the query (absent: 1)."""
    if value in (None, ""):
        return 1
    # ASCII digits only: str.isdigit() also says yes to "²", which int() refuses.
    if not re.fullmatch(r"[0-9]{1,10}", value) or not 1 <= int(value) <= 10**9:
        raise InvalidArgumentError(f"page must be a number from 1, not {value!r}")
    return int(value)


def model_filters(query: Mapping[str, Any], tags: Sequence[str]) -> dict[str, Any]:
    """The models page's filters, as ``Registry.models`` takes them."""
    return {
        "name": query.get("q") or None,
        "tags": parse_tags([t for t in tags if t]),
        "arch": query.get("arch") or None,
        "since": query.get("since") or None,
        "before": query.get("before") or None,
    }


def models(reg: Any, query: Mapping[str, Any], tags: Sequence[str]) -> dict[str, Any]:
    """Every model name with its latest version: one page, filtered and sorted."""
    filters = model_filters(query, tags)
    sort = query.get("sort") or "latest"  # Registry.models refuses an unknown one
    page = page_number(query.get("page"))
    offset = (page - 1) * MODELS_PER_PAGE
    found = reg.models(**filters, sort=sort, limit=MODELS_PER_PAGE, offset=offset)
    total = reg.count_models(**filters) if found or page > 1 else 0
    pages = max(math.ceil(total / MODELS_PER_PAGE), 1)
    pairs = [(k, query.get(k) or "") for k in ("q", "arch", "since", "before", "sort")]
    pairs += [("tag", t) for t in tags]
    return {
        **paged("/", pairs, page, pages),
        "models": found,
        "total": total,
        "first": offset + 1,
        "last": offset + len(found),
        "page": page,
        "pages": pages,
        "sort": sort,
        "query": {k: query.get(k) or "" for k in ("q", "arch", "since", "before")},
        "tag": next((t for t in tags if t), ""),
        "filtered": any(filters[k] for k in filters),
    }


def model(reg: Any, name: str, query: Mapping[str, Any]) -> dict[str, Any]:
    """One model's versions, newest first (one page), and its lineage."""
    page = page_number(query.get("page"))
    offset = (page - 1) * VERSIONS_PER_PAGE
    total = reg.count(name)  # ModelNotFoundError first, for a name never used
    versions = reg.list(name, limit=VERSIONS_PER_PAGE, offset=offset)
    if not versions and total == 0:
        reg.get(f"{name}:latest")  # says the model has no versions left
    here = {mv.ref for mv in versions}
    parents = []
    for ref in sorted({mv.parent for mv in versions if mv.parent and mv.parent not in here}):
        try:
            parents.append(reg.get(ref))
        except LookupError:  # removed meanwhile: drawn without it
            pass
    pages = max(math.ceil(total / VERSIONS_PER_PAGE), 1)
    return {
        **paged(model_url(name), [], page, pages),
        "name": name,
        "versions": versions,
        "total": total,
        "first": offset + 1,
        "last": offset + len(versions),
        "page": page,
        "pages": pages,
        "lineage": graphs.lineage(name, versions, parents),
        "external": [mv for mv in parents if mv.name != name],
    }


def version(reg: Any, ref: str, query: Mapping[str, Any]) -> dict[str, Any]:
    """Everything ``show`` knows about a version, its history, one page of its tensors
    (filtered, sorted and cut by the catalogue: ``Registry.tensor_table``)."""
    mv = reg.get(ref, tensors=False)
    sort = query.get("sort") or "position"  # Registry.tensor_table refuses an unknown one
    descending = choice(query, "dir", ("asc", "desc")) == "desc"
    needle = query.get("tq") or ""
    page = page_number(query.get("page"))
    offset = (page - 1) * TENSORS_PER_PAGE
    table = reg.tensor_table(
        mv.ref,
        contains=needle or None,
        sort=sort,
        descending=descending,
        limit=TENSORS_PER_PAGE,
        offset=offset,
    )
    pages = max(math.ceil(table.matching / TENSORS_PER_PAGE), 1)
    pairs = [("tq", needle), ("sort", sort if sort != "position" else "")]
    pairs.append(("dir", "desc" if descending else ""))
    return {
        **paged(version_url(mv.ref), pairs, page, pages),
        "mv": mv,
        "events": reg.log(mv.ref, limit=200),
        "lineage": reg.lineage(mv.ref) if mv.parent else [mv],
        "children": reg.children(mv.ref),
        "tensors": table.rows,
        "matching": table.matching,
        "first": offset + 1,
        "last": offset + len(table.rows),
        "page": page,
        "pages": pages,
        "sort": sort,
        "dir": "desc" if descending else "asc",
        "tq": needle,
        "snippets": {
            "pull": f"registry pull {shlex.quote(mv.ref)}",
            # A ref is ASCII without quotes or backslashes: its JSON text is Python's too.
            "load": f"from registry import Registry\n\nmodel = Registry().load({json.dumps(mv.ref)})",
        },
    }


def comparison(reg: Any, a: str, b: str) -> dict[str, Any]:
    """``diff``'s answer (B against A) with, per tensor of B in model order, its kind
    of change and relative change, and the bytes B shares with A. Reads both
    versions' tensors: the one page that imports torch."""
    if not a or not b:
        raise InvalidArgumentError("compare needs two versions: ?a=NAME:V&b=NAME:V")
    va, vb = reg.get(a), reg.get(b)
    result = reg.diff(va.ref, vb.ref)
    rel = {c.name: c.rel_l2 for c in result.changed}
    added = {t.name for t in result.added}
    reshaped = {n for n, *_ in result.reshaped} | {n for n, *_ in result.dtype_changed}
    rows = []
    for t in vb.tensors:
        if t.name in added:
            rows.append((t.name, "added", math.inf))
        elif t.name in reshaped:
            rows.append((t.name, "reshaped", math.inf))
        elif t.name in rel:  # NaN (a tensor holding NaN): not measurable, drawn in full
            change = rel[t.name]
            rows.append((t.name, "changed", math.inf if math.isnan(change) else change))
        else:
            rows.append((t.name, "identical", 0.0))
    digests = {t.digest for t in va.tensors}
    shared = sum(t.nbytes for t in vb.tensors if t.digest in digests)
    data = result.to_dict()
    data["shared_bytes"] = shared
    data["tensors"] = [
        {"name": n, "change": k, "rel_l2": r if math.isfinite(r) else None} for n, k, r in rows
    ]
    return {"a": va, "b": vb, "diff": result, "rows": rows, "shared": shared, "data": data}


def storage(reg: Any) -> dict[str, Any]:
    """Logical bytes against stored bytes and dedup's saving; what gc would free is
    asked separately (``/api/gc``, filled in by the page's script): a dry run lists
    the whole store, 0.5 s at 10,000 packs, which the page does not wait for."""
    report = reg.storage(gc=False)
    logical = max(report.logical_bytes, 1)
    return {"report": report, "stored_share": min(report.stored_bytes / logical, 1.0)}
