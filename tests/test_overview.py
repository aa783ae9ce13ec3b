"""The catalogue overviews: ``Registry.models`` / ``count_models`` (one row per model
name: its latest version, how many versions, its aliases, its last push) and
``Registry.storage`` (logical bytes against stored bytes, what dedup saved, what gc
would free), and the commands that show them, ``registry models`` and
``registry storage``.

The queries run on both backends (SQLite + folder, PostgreSQL + S3); the commands,
which only print what the API answers, on the local one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from archs_helper.models import TinyNet
from conftest import run_cli

from registry import Registry
from registry.errors import InvalidArgumentError

BACKENDS = ("local", "team")
TINY = "archs_helper.models:TinyNet"
PLUGIN = "archs_helper.models:PluginNet"  # a TinyNet subclass: same keys, another arch


def weights(seed: int, hidden: int = 16) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return TinyNet(hidden).state_dict()


def push(reg: Registry, name: str, seed: int, hidden: int = 16, arch: str = TINY, **kw):
    return reg.push(weights(seed, hidden), name, arch=arch, arch_kwargs={"hidden": hidden}, **kw)


def names(summaries) -> list[str]:
    return [s.name for s in summaries]


def as_json(data):
    """``data`` as the CLI's --json gives it back (datetimes as ISO strings, tuples as lists)."""
    return json.loads(json.dumps(data))


@pytest.fixture
def catalogue(reg: Registry) -> dict:
    """alpha (2 versions, tags stage=dev then stage=prod, aliases prod and best), beta (1
    version of another architecture, the largest), gamma (3 versions), delta (every
    version removed), pushed in this order; the versions by ref."""
    pushed = [
        push(reg, "alpha", 1, tags={"stage": "dev"}),
        push(reg, "alpha", 2, tags={"stage": "prod"}),
        push(reg, "delta", 9),
        push(reg, "beta", 3, hidden=32, arch=PLUGIN),
        push(reg, "gamma", 4),
        push(reg, "gamma", 5),
        push(reg, "gamma", 6),
    ]
    reg.alias("alpha:1", "prod")
    reg.alias("alpha:2", "best")
    reg.remove("delta:1")
    return {mv.ref: mv for mv in pushed}


# -- Registry.models / count_models ---------------------------------------------------------


def test_models_summarise_each_name(reg: Registry, catalogue: dict):
    """One row per model that has versions: latest (the highest-numbered version), how
    many versions, aliases by version number, last push, bytes of all its versions."""
    found = {s.name: s for s in reg.models()}
    assert set(found) == {"alpha", "beta", "gamma"}  # delta's versions were all removed
    alpha, gamma = found["alpha"], found["gamma"]
    assert alpha.latest.ref == "alpha:2" and alpha.latest.digest == catalogue["alpha:2"].digest
    assert alpha.versions == 2 and gamma.versions == 3 and found["beta"].versions == 1
    assert alpha.aliases == {"best": 2, "prod": 1} and gamma.aliases == {}
    assert gamma.latest.ref == "gamma:3"
    assert gamma.last_pushed_at == catalogue["gamma:3"].created_at
    assert gamma.all_versions_bytes == sum(catalogue[f"gamma:{i}"].total_bytes for i in (1, 2, 3))
    assert found["beta"].latest.arch == PLUGIN
    assert found["beta"].latest.tensors == ()  # no tensor table in an overview

    reg.remove("gamma:3")
    gamma = next(s for s in reg.models() if s.name == "gamma")
    assert (gamma.latest.ref, gamma.versions) == ("gamma:2", 2)
    assert gamma.last_pushed_at == catalogue["gamma:2"].created_at


def test_models_sorts_and_pages(reg: Registry, catalogue: dict):
    """Each sort order, reversed exactly by reverse=True; limit/offset cut one page."""
    expected = {
        "latest": ["gamma", "beta", "alpha"],  # last push first
        "name": ["alpha", "beta", "gamma"],
        "versions": ["gamma", "alpha", "beta"],  # most first
        "size": ["beta", "alpha", "gamma"],  # largest latest version, ties by name
    }
    for sort, order in expected.items():
        assert names(reg.models(sort=sort)) == order, sort
        assert names(reg.models(sort=sort, reverse=True)) == order[::-1], sort
    assert names(reg.models()) == expected["latest"]  # the default
    assert names(reg.models(sort="name", limit=2)) == ["alpha", "beta"]
    assert names(reg.models(sort="name", limit=2, offset=1)) == ["beta", "gamma"]
    assert names(reg.models(sort="name", offset=2)) == ["gamma"]
    assert names(reg.models(sort="name", offset=3)) == []
    assert names(reg.models(sort="name", limit=0)) == []

    push(reg, "beta", 7, hidden=32, arch=PLUGIN)  # beta: 2 versions, as many as alpha
    assert names(reg.models(sort="versions")) == ["gamma", "alpha", "beta"]  # ties by name
    assert names(reg.models(sort="versions", reverse=True)) == ["beta", "alpha", "gamma"]
    assert names(reg.models()) == ["beta", "gamma", "alpha"]
    assert names(reg.models(sort="versions", limit=2, offset=1)) == ["alpha", "beta"]


def test_models_filters_select_models_with_a_matching_version(reg: Registry, catalogue: dict):
    """Glob, tag, arch, since and before keep the models having at least one version that
    matches every filter; the row still describes the whole model. count_models agrees."""
    after_alpha_2 = catalogue["alpha:2"].created_at
    at_beta = catalogue["beta:1"].created_at
    cases = [
        ({"name": "a*"}, ["alpha"]),
        ({"name": "?eta"}, ["beta"]),
        ({"name": "gamma"}, ["gamma"]),
        ({"name": "delta"}, []),  # every version removed
        ({"name": "nothing*"}, []),
        ({"tags": {"stage": "dev"}}, ["alpha"]),  # an older version has it
        ({"tags": {"stage": "test"}}, []),
        ({"arch": PLUGIN}, ["beta"]),
        ({"arch": TINY}, ["alpha", "gamma"]),
        ({"since": at_beta}, ["beta", "gamma"]),
        ({"before": at_beta}, ["alpha"]),
        ({"since": after_alpha_2, "before": at_beta}, ["alpha"]),
        ({"since": at_beta.isoformat()}, ["beta", "gamma"]),  # ISO strings too
        # one version must match all: alpha:1 has the tag but is too old
        ({"tags": {"stage": "dev"}, "since": after_alpha_2}, []),
        ({"tags": {"stage": "prod"}, "since": after_alpha_2}, ["alpha"]),
    ]
    for filters, expected in cases:
        found = reg.models(**filters, sort="name")
        assert names(found) == expected, filters
        assert reg.count_models(**filters) == len(expected), filters
    alpha = reg.models(tags={"stage": "dev"})[0]
    assert (alpha.latest.ref, alpha.versions) == ("alpha:2", 2)
    assert reg.count_models() == len(reg.models()) == 3


@pytest.mark.local_only
@pytest.mark.parametrize(
    "kwargs",
    [
        {"sort": "bogus"},
        {"sort": "created"},  # list()'s sort, not a model sort
        {"limit": -1},
        {"offset": -1},
        {"name": "../x"},
        {"since": "not a date"},
        {"tags": {"bad key": "v"}},
    ],
)
def test_models_refuses_bad_arguments(reg: Registry, kwargs: dict):
    push(reg, "m", 1)
    with pytest.raises(InvalidArgumentError):
        reg.models(**kwargs)


@pytest.mark.local_only
def test_count_models_refuses_a_bad_filter(reg: Registry):
    with pytest.raises(InvalidArgumentError):
        reg.count_models("../x")
    with pytest.raises(InvalidArgumentError):
        reg.count_models(before="yesterday-ish")


def test_no_models_on_an_empty_registry(reg: Registry):
    assert reg.models() == [] and reg.count_models() == 0
    report = reg.storage()
    assert (report.versions, report.models, report.logical_bytes, report.saved_bytes) == (
        0,
        0,
        0,
        0,
    )


# -- Registry.storage --------------------------------------------------------------------------


def test_storage_counts_logical_unique_stored_and_what_gc_frees(reg: Registry):
    a = push(reg, "a", 1)
    b = push(reg, "b", 2, hidden=32)
    first = reg.storage()
    assert (first.versions, first.models) == (2, 2)
    assert first.logical_bytes == a.total_bytes + b.total_bytes
    assert first.unique_bytes == first.logical_bytes  # nothing shared yet
    assert first.saved_bytes == 0
    assert first.stored_bytes >= first.unique_bytes and first.packs >= 1
    assert first.gc is not None and first.gc.dry_run and first.gc.bytes_freed == 0

    copy = push(reg, "a-copy", 1)  # the same weights under another name: dedup
    assert copy.digest == a.digest
    second = reg.storage()
    assert (second.versions, second.models) == (3, 3)
    assert second.logical_bytes == first.logical_bytes + a.total_bytes
    assert second.unique_bytes == first.unique_bytes
    assert second.stored_bytes == first.stored_bytes
    assert second.packs == first.packs
    assert second.saved_bytes == a.total_bytes == second.logical_bytes - second.unique_bytes

    assert reg.storage(gc=False).gc is None
    assert reg.storage(gc=False).to_dict() == {**second.to_dict(), "gc": None}

    reg.remove("b:1")  # its tensors are b's alone
    third = reg.storage()
    assert third.logical_bytes == 2 * a.total_bytes and third.versions == 2
    assert third.gc is not None and third.gc.bytes_freed > 0
    freed = reg.gc()
    assert freed.bytes_freed == third.gc.bytes_freed
    assert freed.blobs_removed == third.gc.blobs_removed == b.tensor_count == 4
    after = reg.storage()
    assert after.gc is not None and after.gc.bytes_freed == 0
    assert after.stored_bytes == third.stored_bytes - freed.bytes_freed
    assert after.unique_bytes == a.total_bytes
    assert after.saved_bytes == a.total_bytes

    reg.remove("a-copy:1")  # its tensors are still a's: nothing to free
    assert reg.storage().gc.bytes_freed == 0


def test_a_removed_versions_tensors_are_not_unique_bytes_before_gc(reg: Registry):
    """``unique_bytes`` counts each distinct tensor some version uses (StorageReport:
    tensors no version uses are in ``stored_bytes`` until gc); removing a version that
    shares nothing does not change what dedup saved."""
    a = push(reg, "a", 1)
    push(reg, "a-copy", 1)
    push(reg, "b", 2, hidden=32)
    before = reg.storage()
    assert before.saved_bytes == a.total_bytes
    reg.remove("b:1")
    after = reg.storage()
    assert after.unique_bytes == a.total_bytes, (
        "unique_bytes still counts the removed version's tensors (until gc)"
    )
    assert after.saved_bytes == before.saved_bytes == a.total_bytes
    assert after.unique_bytes <= after.logical_bytes


# -- the commands --------------------------------------------------------------------------------


@pytest.mark.local_only
def test_models_command_table_and_json(home: Path, reg: Registry, catalogue: dict):
    shown = run_cli("models", check=True)
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:3] == ["MODEL", "VERSIONS", "LATEST"]
    assert [line.split()[0] for line in lines[1:]] == ["gamma", "beta", "alpha"]
    alpha_row = next(line for line in lines if line.startswith("alpha"))
    assert "alpha:2" in alpha_row and "@best=2" in alpha_row and "@prod=1" in alpha_row
    assert "delta" not in shown.stdout

    as_listed = json.loads(run_cli("models", "--json", check=True).stdout)
    assert as_listed == as_json([s.to_dict() for s in reg.models()])
    assert as_listed[2]["latest"]["ref"] == "alpha:2" and as_listed[2]["aliases"] == {
        "best": 2,
        "prod": 1,
    }

    filtered = run_cli(
        "models", "*a", "--tag", "stage=dev", "--sort", "name", "--reverse", "--json", check=True
    )
    assert json.loads(filtered.stdout) == as_json(
        [s.to_dict() for s in reg.models("*a", {"stage": "dev"}, sort="name", reverse=True)]
    )
    since = catalogue["beta:1"].created_at.isoformat()
    dated = run_cli("models", "--since", since, "--sort", "versions", "--json", check=True)
    assert [m["name"] for m in json.loads(dated.stdout)] == ["gamma", "beta"]
    by_arch = run_cli("models", "--arch", PLUGIN, "--json", check=True)
    assert [m["name"] for m in json.loads(by_arch.stdout)] == ["beta"]

    page = run_cli("models", "--sort", "name", "--limit", "1", "--offset", "1", check=True)
    assert [line.split()[0] for line in page.stdout.splitlines()[1:]] == ["beta"]
    assert "showing 2-2 of 3 models" in page.stderr

    none = run_cli("models", "nothing*", check=True)
    assert none.stdout == "" and "no models named nothing* match" in none.stderr


@pytest.mark.local_only
@pytest.mark.parametrize(
    "args", [["--sort", "bogus"], ["--limit", "-1"], ["--since", "soon"], ["../x"]]
)
def test_models_command_usage_errors(home: Path, args: list[str]):
    result = run_cli("models", *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.local_only
def test_storage_command_lines_and_json(home: Path, reg: Registry):
    a = push(reg, "a", 1)
    push(reg, "a-copy", 1)
    push(reg, "b", 2)
    reg.remove("b:1")
    shown = run_cli("storage", check=True)
    keys = [line[:13].strip() for line in shown.stdout.splitlines()]
    assert keys == ["versions", "logical", "unique", "stored", "dedup saved", "gc would free"]
    assert shown.stdout.splitlines()[0].split()[1:] == ["2", "in", "2", "models"]

    report = json.loads(run_cli("storage", "--json", check=True).stdout)
    assert report == reg.storage().to_dict()
    assert report["gc"]["dry_run"] is True and report["gc"]["bytes_freed"] > 0
    assert report["logical_bytes"] == 2 * a.total_bytes

    quick = run_cli("storage", "--no-gc", check=True)
    assert "gc would free" not in quick.stdout
    assert json.loads(run_cli("storage", "--no-gc", "--json", check=True).stdout) == {
        **reg.storage(gc=False).to_dict(),
        "gc": None,
    }
    assert run_cli("storage", "--bogus").returncode == 2


# -- Registry.tensor_table: one page of a tensor table, cut by the catalogue ------------


def _expected(mv, contains=None, key=None, descending=False):
    rows = [(i, t) for i, t in enumerate(mv.tensors)]
    if contains:
        rows = [(i, t) for i, t in rows if contains.lower() in t.name.lower()]
    if key is not None:
        rows.sort(key=key, reverse=descending)
    elif descending:
        rows.reverse()
    return [(i, t.name) for i, t in rows]


SORT_KEYS = {
    "position": None,
    "name": lambda it: (it[1].name, it[0]),
    "dtype": lambda it: (it[1].dtype, it[0]),
    "shape": lambda it: (len(it[1].shape), list(it[1].shape), it[0]),
    "size": lambda it: (it[1].nbytes, it[0]),
}


@pytest.mark.parametrize("sort", list(SORT_KEYS))
def test_tensor_table_sorts_filters_and_pages_like_the_whole_table(reg: Registry, sort: str):
    """Every sort, both ways, with and without a filter, page by page: the same rows in
    the same order as sorting the full tensor table ``get`` gives."""
    torch.manual_seed(0)
    state = {
        f"Block{i}.{kind}": torch.randn(*shape)
        for i in range(12)
        for kind, shape in (("weight", (i % 4 + 1, 3)), ("bias", (i % 3 + 2,)))
    }
    from archs_helper.models import StateBag

    entries = [[k, "float32", list(v.shape), "param", None] for k, v in state.items()]
    reg.push(state, "bag", arch="archs_helper.models:StateBag", arch_kwargs={"entries": entries})
    mv = reg.get("bag:1")
    assert isinstance(StateBag(entries), torch.nn.Module)
    for contains in (None, "block1", "BIAS"):
        for descending in (False, True):
            want = _expected(mv, contains, SORT_KEYS[sort], descending)
            got = []
            for offset in range(0, len(want) + 5, 5):
                page = reg.tensor_table(
                    "bag:1",
                    contains=contains,
                    sort=sort,
                    descending=descending,
                    limit=5,
                    offset=offset,
                )
                assert page.matching == len(want) and page.tensor_count == len(mv.tensors)
                assert page.offset == offset and page.ref == "bag:1"
                got += [(row.position, row.tensor.name) for row in page.rows]
            assert got == want, (contains, descending)
            whole = reg.tensor_table("bag:1", contains=contains, sort=sort, descending=descending)
            assert [(r.position, r.tensor.name) for r in whole.rows] == want
            assert all(r.tensor == mv.tensors[r.position] for r in whole.rows)


def test_tensor_table_names_what_a_tied_weight_shares(reg: Registry):
    from archs_helper.fidelity import TiedLM

    torch.manual_seed(0)
    reg.push(TiedLM().state_dict(), "lm", arch="archs_helper.fidelity:TiedLM")
    rows = {r.tensor.name: r for r in reg.tensor_table("lm:1").rows}
    assert rows["head.weight"].shares_with == "embed.weight"
    assert rows["embed.weight"].shares_with is None and rows["norm.weight"].shares_with is None
    assert rows["head.weight"].to_dict()["shares_with"] == "embed.weight"


def test_tensor_table_refuses_bad_arguments(reg: Registry):
    push(reg, "m", 1)
    with pytest.raises(InvalidArgumentError, match="unknown sort"):
        reg.tensor_table("m:1", sort="bogus")
    with pytest.raises(InvalidArgumentError, match="negative"):
        reg.tensor_table("m:1", limit=-1)
    page = reg.tensor_table("m:1", contains="%_!")  # LIKE's wildcards are plain text here
    assert page.matching == 0 and page.rows == ()
    assert reg.get("m:1", tensors=False).tensors == ()
    assert reg.get("m:1", tensors=False).tensor_count == len(reg.get("m:1").tensors)


# -- diff reads only the tensors that differ ----------------------------------------------


def test_diff_reads_and_checks_only_the_tensors_that_differ(reg: Registry, home, backend: str):
    """Identical digests are identical without a read: damage in a tensor both versions
    share does not stop a diff (verify finds it); damage in a tensor that differs is
    still caught, naming it."""
    if backend == "team":
        pytest.skip("damages a pack file of the local store")
    from test_fidelity import flip_byte

    from registry.errors import IntegrityError

    base = weights(1, hidden=64)
    tuned = {k: v.clone() for k, v in base.items()}
    last = list(tuned)[-1]
    tuned[last] += 0.5
    reg.push(base, "m", arch=TINY, arch_kwargs={"hidden": 64})
    reg.push(tuned, "m", arch=TINY, arch_kwargs={"hidden": 64})
    shared = reg.get("m:1").tensors[0]
    assert shared.digest == reg.get("m:2").tensors[0].digest and shared.nbytes > 100
    flip_byte(home, shared.digest, at=0)
    d = reg.diff("m:1", "m:2")
    assert [c.name for c in d.changed] == [last] and d.identical == len(base) - 1
    assert not reg.verify().ok  # the damage is there; diff just did not need those bytes
    changed = reg.get("m:2").tensors[-1]
    flip_byte(home, changed.digest, at=0)
    with pytest.raises(IntegrityError, match=last.replace(".", r"\.")):
        reg.diff("m:1", "m:2")
