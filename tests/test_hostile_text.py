"""Hostile text in every field a user or a bundle can fill: model names, references,
tag keys and values, aliases, descriptions, and the provenance, architecture and tensor
names a bundle carries.

What a well-kept registry does, field by field (``registry/keyvalue.py``, ``refs.py``):

- names, aliases and tag keys are ASCII identifiers: anything else (``../``, NUL,
  control characters, escape sequences, look-alike letters, bidi overrides, 100 kB)
  is refused in one line, exit 2 through the CLI, before anything is stored;
- references follow the same rules, version numbers are ASCII digits ('¹' and '١'
  are not 1) up to what the catalogue holds;
- a tag value is one line of text: control characters are refused, anything else up
  to 4096 characters (SQL fragments, other scripts, bidi overrides, zero-width
  joiners) is stored exactly;
- a description is free text: everything but NUL and lone surrogates (which no
  catalogue can store) is stored exactly, 100 kB included;
- stored text never reaches a terminal raw: ``list``, ``show`` and ``log`` show every
  control and format character escaped, one row per version or event, checked here
  on a real pseudo-terminal (click strips escape sequences off one, so a pipe would
  hide them); ``--json`` gives every value back exactly;
- no text is ever used as a path: nothing appears outside REGISTRY_HOME and the
  output a command was asked to write.
"""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import tarfile
import time
import unicodedata
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REGISTRY_EXE, make_model, run_cli

from registry import Registry
from registry._format import printable, quoted, table, width
from registry.errors import (
    InvalidArgumentError,
    InvalidReferenceError,
    NotFoundError,
    RegistryError,
)
from registry.keyvalue import parse_date, validate_tags
from registry.refs import MAX_VERSION, parse_ref
from registry.sharing import manifest_terms
from registry.storage import manifest_digest

BACKENDS = ("local", "team")  # the round trip runs on PostgreSQL too; the rest is local_only

ARCH = "squeezenet1_1"
KWARGS = {"num_classes": 2}
EVIL = f"/tmp/registry-evil-{uuid.uuid4().hex}"

#: Text that has broken registries, terminals and databases before.
HOSTILE = {
    "dotdot": "../../evil",
    "absolute": EVIL,
    "nul": "a\x00b",
    "bell-backspace": "a\x07\x08b",
    "esc-colour": "\x1b[31mred\x1b[0m",
    "esc-title": "\x1b]0;pwned\x07",
    "esc-clear": "\x1b[2J\x1b[H",
    "c1-csi": "a\x9b31mb",
    "newline": "one\ntwo",
    "carriage-return": "over\rwrite",
    "tab": "a\tb",
    "delete": "a\x7fb",
    "long": "x" * 100_000,
    "sql": "'; DROP TABLE versions; --",
    "sql-like": "%_' OR '1'='1",
    "cyrillic": "r\u0435snet",  # Cyrillic 'е' for Latin 'e'
    "rtl-override": "a\u202eb",
    "zero-width-joiner": "a\u200db",
    "zero-width-bom": "\u200b\ufeffx",
    "line-separator": "a\u2028b",
    "emoji": "\U0001f642",
    "wide": "\u4e2d\u6587",
    "combining": "e\u0301",
}
CONTROL = {"nul", "bell-backspace", "esc-colour", "esc-title", "esc-clear", "c1-csi",
           "newline", "carriage-return", "tab", "delete"}  # fmt: skip
#: Stored exactly as a tag value (one line, at most 4096 characters).
TAG_VALUES = sorted(set(HOSTILE) - CONTROL - {"long"})
#: Stored exactly as a description (free text; NUL is refused).
DESCRIPTIONS = sorted(set(HOSTILE) - {"nul"})


def state(seed: int) -> OrderedDict:
    return make_model(ARCH, seed, **KWARGS).state_dict()


@pytest.fixture(scope="module")
def weights() -> list[OrderedDict]:
    return [state(1), state(2), state(3)]


# -- the terminal -----------------------------------------------------------------------


def run_tty(*args: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> tuple[int, str]:
    """Run the installed command with stdout and stderr on a pseudo-terminal, as a
    person sees it; (exit code, what the terminal received, line endings as ``\\n``)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [REGISTRY_EXE, *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        env={**os.environ, **env, "COLUMNS": "200"},
    )
    os.close(slave)
    received = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:  # the command exited and closed its end
                    break
                if not chunk:
                    break
                received += chunk
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"registry {args[0]} did not finish in {timeout} s")
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
    return code, received.decode("utf-8").replace("\r\n", "\n")


def assert_terminal_safe(text: str) -> None:
    """Nothing a terminal would act on: no control character but the newline, no format
    character (bidi overrides, zero-width), no line or paragraph separator."""
    for char in text:
        if char == "\n":
            continue
        assert unicodedata.category(char) not in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"), (
            f"raw {char!r} reached the terminal"
        )


def without_progress(text: str) -> str:
    """The terminal's text without the progress bars (tqdm redraws with a carriage
    return, which is the bar's, not a stored value's)."""
    return "\n".join(line for line in text.split("\n") if not ("\r" in line and "%|" in line))


def error_line(stderr: str) -> str:
    """The one ``Error: ...`` line of a refused command (click's usage lines aside)."""
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def files_outside(root: Path, allowed: list[Path]) -> set[str]:
    """Files and folders under ``root`` that are not under one of ``allowed``."""
    found = set()
    for path in root.rglob("*"):
        if not any(path == a or a in path.parents for a in allowed):
            found.add(str(path.relative_to(root)))
    return found


# -- names, aliases, tag keys: refused, whatever they hold -------------------------------------


@pytest.mark.local_only
def test_hostile_names_aliases_and_tag_keys_are_refused(reg: Registry, weights: list[OrderedDict]):
    """Each is refused in one printable line, and nothing changes. (A tag key may hold
    '/' and '.', as in ``team/owner``: ``k../../evil`` is a valid key, and harmless,
    keys being no paths; so the second key tried ends in a newline.)"""
    reg.push(weights[0], "m", arch=ARCH, arch_kwargs=KWARGS)
    before = reg.get("m:1")
    for case, text in HOSTILE.items():
        attempts = {
            "name": lambda text=text: reg.push(weights[1], text, arch=ARCH, arch_kwargs=KWARGS),
            "name part": lambda text=text: reg.push(weights[1], f"team/{text}", arch=ARCH),
            "alias": lambda text=text: reg.alias("m:1", text),
            "tag key": lambda text=text: reg.tag("m:1", {text: "v"}),
            "tag key 2": lambda text=text: reg.tag("m:1", {f"k{text}\n": "v"}),
            "ref": lambda text=text: reg.get(text),
            "ref alias": lambda text=text: reg.get(f"m:{text}"),
            "ref digest": lambda text=text: reg.get(f"m@sha256:{text}"),
            "glob": lambda text=text: reg.list(text),
            "log ref": lambda text=text: reg.log(f"m:{text}"),
        }
        for field, attempt in attempts.items():
            with pytest.raises(InvalidArgumentError) as info:
                attempt()
            message = str(info.value)
            assert "\n" not in message and len(message) < 1000, (case, field, message)
            assert message.isprintable(), (case, field, message)  # controls escaped
    assert [v.ref for v in reg.list()] == ["m:1"] and reg.get("m:1") == before


@pytest.mark.local_only
@pytest.mark.parametrize(
    "ref, error",
    [
        ("m:\u00b9", InvalidReferenceError),  # superscript one: str.isdigit() says yes
        ("m:\u0661", InvalidReferenceError),  # Arabic-Indic one: int() reads it as 1
        ("m:\U0001d7cf", InvalidReferenceError),  # mathematical bold one
        (f"m:{MAX_VERSION + 1}", InvalidReferenceError),  # past the catalogue's integer
        ("m:" + "9" * 5000, InvalidReferenceError),  # past int()'s digit limit
        (f"m:{MAX_VERSION}", NotFoundError),
        ("m:0001", None),  # ASCII digits with leading zeros are still version 1
        (" m:1\n", None),  # surrounding whitespace is ignored, never stored
    ],
)
def test_version_numbers_are_ascii_digits_the_catalogue_holds(
    ref: str, error: type | None, reg: Registry, weights: list[OrderedDict]
):
    reg.push(weights[0], "m", arch=ARCH, arch_kwargs=KWARGS)
    if error is None:
        assert reg.get(ref).ref == "m:1"
        return
    with pytest.raises(error) as info:
        reg.get(ref)
    assert "\n" not in str(info.value) and len(str(info.value)) < 1000


@pytest.mark.local_only
def test_hostile_arguments_through_the_command(
    home: Path, reg: Registry, weights: list[OrderedDict], tmp_path: Path
):
    """The installed command refuses each with one ``Error:`` line, exit 2 (usage), no
    raw control byte on the terminal, and writes nothing anywhere."""
    reg.push(weights[0], "m", arch=ARCH, arch_kwargs=KWARGS)
    checkpoint = tmp_path / "w.pth"
    torch.save(weights[1], checkpoint)
    work = tmp_path / "work"
    work.mkdir()
    before = files_outside(tmp_path, [home])
    env = {"REGISTRY_HOME": str(home)}
    cases = [
        ["push", str(checkpoint), "--arch", ARCH, "--name", HOSTILE["dotdot"]],
        ["push", str(checkpoint), "--arch", ARCH, "--name", HOSTILE["esc-title"]],
        ["push", str(checkpoint), "--arch", ARCH, "--name", HOSTILE["cyrillic"]],
        ["push", str(checkpoint), "--arch", ARCH, "--tag", f"k={HOSTILE['esc-colour']}"],
        ["push", str(checkpoint), "--arch", ARCH, "--tag", f"k={HOSTILE['long']}"],
        ["tag", "m:1", f"{HOSTILE['rtl-override']}=v"],
        ["tag", "m:1", f"k={HOSTILE['newline']}"],
        ["tag", "m:1", f"k={HOSTILE['c1-csi']}"],
        ["alias", "m:1", HOSTILE["zero-width-joiner"]],
        ["show", f"m:{HOSTILE['esc-clear']}"],
        ["show", HOSTILE["long"]],
        ["show", "m:\u0661"],
        ["log", f"m:{HOSTILE['sql']}"],
        ["list", HOSTILE["sql-like"]],
        ["list", "--tag", f"k={HOSTILE['nul'].replace(chr(0), chr(1))}"],
        ["pull", f"{HOSTILE['dotdot']}:1"],
    ]
    for args in cases:
        code, seen = run_tty(*args, env=env, cwd=work)
        assert code == 2, (args[:2], code, seen)
        line = error_line(seen)
        assert len(line) < 1000, line
        assert_terminal_safe(seen)
    assert [v.ref for v in reg.list()] == ["m:1"] and not reg.get("m:1").tags
    assert files_outside(tmp_path, [home]) == before
    assert not Path(EVIL).exists() and not (tmp_path / "evil").exists()


# -- tag values and descriptions: stored exactly, shown escaped --------------------------------


@pytest.mark.local_only
def test_tag_values_and_descriptions_are_stored_exactly_or_refused(
    reg: Registry, weights: list[OrderedDict]
):
    reg.push(weights[0], "m", arch=ARCH, arch_kwargs=KWARGS)
    for case, text in HOSTILE.items():
        if case in TAG_VALUES:
            assert reg.tag("m:1", {"k": text}).tags == {"k": text}, case
            assert reg.get("m:1").tags == {"k": text}, case
            assert [v.ref for v in reg.list(tags={"k": text})] == ["m:1"], (
                case
            )  # bound, not spliced
            assert reg.list(tags={"k": text + "x"}) == [], case
        else:
            for attempt in (
                lambda text=text: reg.tag("m:1", {"k": text}),
                lambda text=text: reg.push(
                    weights[1], "m", arch=ARCH, arch_kwargs=KWARGS, tags={"k": text}
                ),
            ):
                with pytest.raises(InvalidArgumentError) as info:
                    attempt()
                assert "\n" not in str(info.value) and len(str(info.value)) < 1000, case
        if case in DESCRIPTIONS:
            assert reg.describe("m:1", text).description == text, case
            assert reg.get("m:1").description == text, case
            assert reg.log("m:1")[0].after == {"description": text}, case
        else:
            with pytest.raises(InvalidArgumentError) as info:
                reg.describe("m:1", text)
            assert "NUL" in str(info.value) and "\x00" not in str(info.value)
    assert [v.ref for v in reg.list()] == ["m:1"]
    last = [case for case in HOSTILE if case in TAG_VALUES][-1]
    assert reg.get("m:1").tags == {"k": HOSTILE[last]}


@pytest.mark.local_only
@pytest.mark.parametrize("text", ["a\ud800b", "\udcff", "x" * 10 + "\udc80"])
def test_lone_surrogates_are_refused(text: str, reg: Registry, weights: list[OrderedDict]):
    """What Python makes of bytes that are not UTF-8 (a command line's, a file name's)
    can be stored by no catalogue: refused, never a UnicodeEncodeError from a driver."""
    reg.push(weights[0], "m", arch=ARCH, arch_kwargs=KWARGS)
    for attempt in (
        lambda: reg.describe("m:1", text),
        lambda: reg.tag("m:1", {"k": text}),
        lambda: reg.push(weights[1], "m", arch=ARCH, arch_kwargs=KWARGS, description=text),
    ):
        with pytest.raises(InvalidArgumentError) as info:
            attempt()
        assert "not valid Unicode" in str(info.value)
    assert reg.get("m:1").description is None and [v.ref for v in reg.list()] == ["m:1"]


@pytest.mark.local_only
def test_undecodable_bytes_on_the_command_line_are_refused(home: Path, reg: Registry, weights):
    reg.push(weights[0], "m", arch=ARCH, arch_kwargs=KWARGS)
    result = subprocess.run(
        [REGISTRY_EXE.encode(), b"describe", b"m:1", b"caf\xe9 latin-1"],
        capture_output=True,
        env={**os.environ, "REGISTRY_HOME": str(home)},
        timeout=120,
    )
    assert result.returncode == 1
    assert b"not valid Unicode" in result.stderr and b"Traceback" not in result.stderr
    assert reg.get("m:1").description is None


@pytest.fixture
def hostile_registry(reg: Registry, weights: list[OrderedDict]) -> Registry:
    """m:1 with every storable tag value (one key each), m:2 described with every
    storable description in turn (one event each) and m:3 with all of them at once."""
    reg.push(weights[0], "m", arch=ARCH, arch_kwargs=KWARGS)
    reg.tag("m:1", {f"k-{case}": HOSTILE[case] for case in TAG_VALUES})
    reg.push(weights[1], "m", arch=ARCH, arch_kwargs=KWARGS)
    for case in DESCRIPTIONS:
        reg.describe("m:2", HOSTILE[case])
    everything = "|".join(HOSTILE[case] for case in DESCRIPTIONS if case != "long")
    reg.push(weights[2], "m", arch=ARCH, arch_kwargs=KWARGS, description=everything,
             tags={"sql": HOSTILE["sql"]})  # fmt: skip
    return reg


@pytest.mark.local_only
def test_terminal_output_is_escaped_one_row_per_item(
    home: Path, hostile_registry: Registry, tmp_path: Path
):
    reg = hostile_registry
    env = {"REGISTRY_HOME": str(home)}
    code, listed = run_tty("list", env=env, cwd=tmp_path)
    assert code == 0
    assert_terminal_safe(listed)
    assert len(listed.splitlines()) == 1 + 3  # the header and one row per version
    assert "k-rtl-override=a\\u202eb" in listed and "k-line-separator=a\\u2028b" in listed
    assert "k-cyrillic=r\u0435snet" in listed  # other scripts are shown as they are

    code, shown = run_tty("show", "m:3", env=env, cwd=tmp_path)
    assert code == 0
    assert_terminal_safe(shown)
    (line,) = [line for line in shown.splitlines() if line.lstrip().startswith("description")]
    for piece in ("\\x1b[31mred\\x1b[0m", "\\x1b]0;pwned\\x07", "one\\ntwo", "a\\x9b31mb",
                  "over\\rwrite", "a\\tb", "a\\x7fb", "a\\u200db"):  # fmt: skip
        assert piece in line, piece
    assert shown.count("\n") == run_tty("show", "m:1", env=env, cwd=tmp_path)[1].count("\n") + 1

    code, history = run_tty("log", "m", "--limit", "0", env=env, cwd=tmp_path)
    assert code == 0
    assert_terminal_safe(history)
    events = reg.log("m")
    assert len(history.splitlines()) == 1 + len(events)  # one row per event
    assert max(len(line) for line in history.splitlines()) < 1200  # 100 kB cut short

    code, last = run_tty("show", "m:2", env=env, cwd=tmp_path)  # its last description
    assert code == 0 and "  description  a\\u200db\n" in last
    assert_terminal_safe(last)


@pytest.mark.local_only
def test_json_gives_the_stored_text_back_exactly(home: Path, hostile_registry: Registry):
    reg = hostile_registry
    env = {"REGISTRY_HOME": str(home)}
    shown = json.loads(run_cli("show", "m:1", "--json", env=env, check=True).stdout)
    assert shown["tags"] == {f"k-{case}": HOSTILE[case] for case in TAG_VALUES}
    listed = json.loads(run_cli("list", "--json", env=env, check=True).stdout)
    assert {v["ref"]: v["description"] for v in listed} == {
        v.ref: v.description for v in reg.list()
    }
    history = json.loads(
        run_cli("log", "m:2", "--limit", "0", "--json", env=env, check=True).stdout
    )
    described = [e["after"]["description"] for e in history if e["kind"] == "describe"]
    assert described == [HOSTILE[case] for case in reversed(DESCRIPTIONS)]
    found = json.loads(
        run_cli("list", "--tag", f"sql={HOSTILE['sql']}", "--json", env=env, check=True).stdout
    )
    assert [v["ref"] for v in found] == ["m:3"]
    raw = run_cli("show", "m:3", "--json", env=env, check=True).stdout
    assert raw.isascii()  # every other character is a \\u escape: nothing raw on a terminal


def test_hostile_text_round_trips_through_the_catalogue(reg: Registry, weights: list[OrderedDict]):
    """On SQLite and on PostgreSQL alike: stored and read back exactly, refused before
    the database where it could not be stored (NUL), never a driver's exception."""
    reg.push(weights[0], "m", arch=ARCH, arch_kwargs=KWARGS)
    reg.tag("m:1", {f"k-{case}": HOSTILE[case] for case in TAG_VALUES})
    for case in DESCRIPTIONS:
        assert reg.describe("m:1", HOSTILE[case]).description == HOSTILE[case]
        assert reg.get("m:1").description == HOSTILE[case]
    assert reg.get("m:1").tags == {f"k-{case}": HOSTILE[case] for case in TAG_VALUES}
    for case in ("sql", "sql-like", "cyrillic", "rtl-override", "emoji"):
        assert [v.ref for v in reg.list(tags={f"k-{case}": HOSTILE[case]})] == ["m:1"]
    with pytest.raises(InvalidArgumentError):
        reg.describe("m:1", HOSTILE["nul"])
    with pytest.raises(InvalidArgumentError):
        reg.tag("m:1", {"k": "a\x00b"})
    assert reg.get("m:1").description == HOSTILE[DESCRIPTIONS[-1]]
    history = reg.log("m:1")
    assert [e.after["description"] for e in history if e.kind == "describe"][0] == HOSTILE[
        DESCRIPTIONS[-1]
    ]


# -- hostile text inside a bundle ---------------------------------------------------------------


def rewrite_bundle(path: Path, edit) -> None:
    """Edit the manifest of the bundle at ``path`` in place, recomputing each version's
    digest from its tensor table (a hostile bundle would)."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    manifest = json.loads(members[0][1])
    edit(manifest)
    for version in manifest["versions"]:
        tensors = version["tensors"]
        terms = manifest_terms([t[0] for t in tensors], [None] * len(tensors))
        version["digest"] = manifest_digest(
            (t[0], t[1], t[2], t[3], term) for t, term in zip(tensors, terms)
        )
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, body in [("manifest.json", json.dumps(manifest).encode()), *members[1:]]:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))


@pytest.mark.local_only
def test_a_bundle_of_hostile_provenance_is_shown_safely(
    reg: Registry, weights: list[OrderedDict], tmp_path: Path
):
    """Who pushed, from which host and file, the architecture's name and the tensor names
    come from the bundle: stored as given, escaped on the terminal, exact in JSON."""
    reg.push(weights[0], "m", arch=ARCH, arch_kwargs=KWARGS)
    bundle = tmp_path / "hostile.tar"
    reg.export(["m:1"], bundle)
    hostile = {
        "pushed_by": "\x1b[31mroot\x1b[0m\nfake row",
        "pushed_host": "h\u202eost",
        "source_path": f"../../{HOSTILE['esc-clear']}{EVIL}",
        "arch": "squeezenet1_1\x1b[5m",
    }

    def edit(manifest: dict) -> None:
        version = manifest["versions"][0]
        version.update(hostile)
        version["tensors"][0][0] = "features.0.weight\n\x1b]0;pwned\x07"

    rewrite_bundle(bundle, edit)
    target = tmp_path / "target"
    env = {"REGISTRY_HOME": str(target)}
    work = tmp_path / "work"
    work.mkdir()
    code, said = run_tty("import", str(bundle), env=env, cwd=work)
    assert code == 0, said
    assert_terminal_safe(without_progress(said))
    with Registry(home=target) as other:
        stored = other.get("m:1")
        for field, value in hostile.items():
            assert getattr(stored, field) == value, field
        assert stored.tensors[0].name == "features.0.weight\n\x1b]0;pwned\x07"
        for args in (["list"], ["show", "m:1"], ["log"]):
            code, seen = run_tty(*args, env=env, cwd=work)
            assert code == 0, seen
            assert_terminal_safe(seen)
        code, seen = run_tty("log", env=env, cwd=work)
        assert len(seen.splitlines()) == 1 + len(other.log())
        data = json.loads(run_cli("show", "m:1", "--json", env=env, check=True).stdout)
        assert data["pushed_by"] == hostile["pushed_by"]
        assert data["tensors"][0]["name"] == stored.tensors[0].name
        with pytest.raises(RegistryError):  # the name is stored, never resolved into code
            other.load("m:1")
    assert list(work.iterdir()) == [] and not Path(EVIL).exists()


@pytest.mark.local_only
@pytest.mark.parametrize(
    "field, value",
    [
        ("tags", {"k": "a\nb"}),
        ("tags", {"k\x1b": "v"}),
        ("aliases", ["a\u202eb"]),
        ("name", "../evil"),
        ("description", "a\x00b"),
        ("description", ""),
        ("pushed_by", "x" * 300),
        ("source_path", "a\x00b"),
        ("torch_version", "\ud800"),
        ("arch", "x" * 256),
        ("version", 2**31),
        ("param_count", 2**63),
        ("created_at", "0001-01-01T00:00:00+14:00"),
    ],
)
def test_a_bundle_of_text_no_push_could_store_is_refused(
    field: str, value: Any, reg: Registry, weights: list[OrderedDict], tmp_path: Path
):
    """What push refuses, import refuses too, in one line, storing nothing."""
    reg.push(weights[0], "m", arch=ARCH, arch_kwargs=KWARGS)
    bundle = tmp_path / "bad.tar"
    reg.export(["m:1"], bundle)
    rewrite_bundle(bundle, lambda manifest: manifest["versions"][0].update({field: value}))
    result = run_cli("import", str(bundle), env={"REGISTRY_HOME": str(tmp_path / "target")})
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    with Registry(home=tmp_path / "target") as other:
        assert other.list() == []


# -- the formatting helpers themselves ----------------------------------------------------------


def test_printable_escapes_only_what_a_terminal_would_act_on():
    for case, text in HOSTILE.items():
        shown = printable(text)
        assert_terminal_safe(shown.replace("\n", "?"))
        assert "\n" not in shown, case
        kept = [c for c in text if unicodedata.category(c)[0] not in "CZ" or c == " "]
        assert all(c in shown for c in kept), case  # letters, marks, symbols stay
    assert printable("plain text / ../path") == "plain text / ../path"
    assert printable("a\x1b[31mb") == "a\\x1b[31mb"
    assert printable("\u202e\U000e0001") == "\\u202e\\U000e0001"


def test_tables_stay_one_row_per_line_and_aligned():
    rows = [["a\nb", "1"], ["\u4e2d\u6587", "2"], ["x" * 500, "3"]]
    lines = table(["NAME", "N"], rows, right=(1,), limit=40).splitlines()
    assert len(lines) == 4
    assert {width(line) for line in lines} == {43}  # aligned: 中文 takes two columns each
    assert "more characters" in lines[3] and "a\\nb" in lines[1]


def test_messages_quote_hostile_values_short_and_on_one_line():
    assert quoted("x" * 100_000).endswith("(100,000 characters)")
    assert len(quoted("x" * 100_000)) < 120
    assert quoted("a\nb\x1b") == "'a\\nb\\x1b'"
    with pytest.raises(InvalidReferenceError) as info:
        parse_ref("m" * 100_000)
    assert len(str(info.value)) < 500
    with pytest.raises(InvalidArgumentError) as info:
        validate_tags({"k": object()})  # neither text nor JSON: refused, not a TypeError
    with pytest.raises(InvalidArgumentError) as info:
        parse_date("9999-12-31T23:59:59-14:00", "since")  # past year 9999 in UTC
    assert (
        parse_date("2026-01-01T05:00:00+05:00", "since").isoformat() == "2026-01-01T00:00:00+00:00"
    )


@pytest.mark.local_only
def test_an_error_naming_a_hostile_path_is_escaped(home: Path, tmp_path: Path):
    code, seen = run_tty("import", f"\x1b[2J{uuid.uuid4().hex}.tar",
                         env={"REGISTRY_HOME": str(home)}, cwd=tmp_path)  # fmt: skip
    assert code == 1
    assert_terminal_safe(seen)
