"""The README's command-line examples are executable documentation.

Every ``$ registry ...`` line in an example block of README.md runs, in the order the
README gives them, with the installed `registry` command in one temporary folder and
one temporary ``REGISTRY_HOME``, on weights this module makes (``base.pth``,
``tuned.pth``, ``epoch=3-step=10.ckpt``), as a user following the README from the top
would. The lines under a command are what it prints (stderr, then stdout, as a
terminal shows them for these commands) and must match:

- ``...`` inside a line matches any text (a time, a digest);
- a line that is only ``...`` matches any number of lines;
- an expected ``Error: `` line means the command must fail (exit 1, or 2 with a
  ``Usage:`` line); otherwise it must succeed.

A command without lines under it must only succeed. Lines of other programs
(``.venv/bin/python ...``) are not run.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import REGISTRY_EXE, make_model

README = Path(__file__).parent.parent / "README.md"


@dataclass
class Example:
    line: int  # 1-based line of the command in README.md
    argv: list[str]
    expected: list[str]

    def __str__(self) -> str:
        return f"README.md:{self.line}: $ {shlex.join(self.argv)}"


def examples(text: str) -> list[Example]:
    """The ``$ registry`` commands of the README's indented or fenced example blocks."""
    found: list[Example] = []
    current: Example | None = None
    fenced = False
    blanks = 0  # blank lines inside a block belong to the output if the block goes on
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.lstrip().startswith("```"):
            fenced = not fenced
            current = None
            continue
        if not raw.strip():
            blanks += 1
            continue
        indented = raw.startswith("    ") or fenced
        line = raw[4:] if raw.startswith("    ") else raw
        if not indented:
            current = None
            blanks = 0
            continue
        if current is not None and not line.startswith("$ "):
            current.expected.extend([""] * blanks)
        blanks = 0
        if line.startswith("$ "):
            argv = shlex.split(line[2:], comments=True)
            current = None
            if argv and argv[0] == "registry":
                current = Example(number, argv[1:], [])
                found.append(current)
        elif current is not None:
            current.expected.append(line.rstrip())
    return found


def pattern(expected: list[str]) -> re.Pattern[str]:
    parts = []
    for line in expected:
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(re.escape(line).replace(re.escape("..."), r"[^\n]*") + r"[ \t]*\n")
    return re.compile("".join(parts))


ALL = examples(README.read_text())


def test_the_readme_has_examples_to_run():
    assert len(ALL) >= 20
    assert any(e.expected for e in ALL)
    assert pattern(["a ... b", "...", "end"]).fullmatch("a xyz b\nmore\nlines\nend\n")
    assert not pattern(["a ... b"]).fullmatch("a b c\n")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's working folder: the weights the README's examples use."""
    work = tmp_path_factory.mktemp("readme")
    base = make_model("resnet18", seed=0).state_dict()
    torch.save(base, work / "base.pth")
    tuned = make_model("resnet18", seed=1, num_classes=10).state_dict()
    for key in tuned:
        if not key.startswith("fc."):
            tuned[key] = base[key]
    torch.save(tuned, work / "tuned.pth")  # a fine-tune: a new head on base's backbone
    lightning = torch.nn.Module()  # a LightningModule holding the net in `self.model`
    lightning.model = make_model("resnet18", seed=0)
    torch.save(
        {"state_dict": lightning.state_dict(), "epoch": 3, "global_step": 10},
        work / "epoch=3-step=10.ckpt",
    )
    (work / "home").mkdir()
    return work


@pytest.mark.parametrize("example", ALL, ids=[f"line{e.line}" for e in ALL])
def test_readme_example(example: Example, folder: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REGISTRY_HOME", str(folder / "home"))
    for name in ("REGISTRY_DATABASE_URL", "REGISTRY_STORAGE_URL", "REGISTRY_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REGISTRY_USER", "ana")
    monkeypatch.setenv("COLUMNS", "200")
    result = subprocess.run(
        [REGISTRY_EXE, *example.argv],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    shown = result.stderr + result.stdout
    fails = any(line.startswith("Error: ") for line in example.expected)
    assert (result.returncode != 0) == fails, f"{example}\nexit {result.returncode}\n{shown}"
    if fails:
        usage = any(line.startswith("Usage: ") for line in example.expected)
        assert result.returncode == (2 if usage else 1), f"{example}\n{shown}"
    if example.expected:
        assert pattern(example.expected).fullmatch(shown), (
            f"{example}\n--- the README says:\n"
            + "\n".join(example.expected)
            + "\n--- the command printed:\n"
            + shown
        )


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line, code) of each fenced ```python block, dedented as a list item's are."""
    return [
        (text[: m.start()].count("\n") + 2, textwrap.dedent(m.group(2)))
        for m in re.finditer(r"^( *)```python\n(.*?)^\1```", text, re.S | re.M)
    ]


def test_readme_python_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The Python examples run as they are, in order, in one namespace, in a fresh folder
    (their `assert` lines check what the comments beside them say)."""
    from registry import plugins

    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REGISTRY_HOME", str(tmp_path / "default-home"))
    namespace: dict[str, object] = {"__name__": "readme"}
    try:
        for line, code in blocks:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
    finally:
        for name in ("tinynet", "tinynet-wide"):
            plugins.unregister_architecture(name)
    reg = namespace["reg"]
    assert [v.ref for v in reg.list()] == ["resnet:2", "resnet:1"]  # model:1 was removed
    assert (tmp_path / "out.pth").is_file() and (tmp_path / "bundle.tar").is_file()
    assert [v.ref for v in namespace["Registry"](home=tmp_path / "other-home").list()] == [
        "resnet:2", "resnet:1"]
