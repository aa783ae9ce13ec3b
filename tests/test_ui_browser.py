"""`registry ui` in a real browser: headless Chromium driven by Selenium visits the
pages of a running `registry ui` process, fills its forms and clicks its links.

One registry is filled once for the module; two servers serve it (read-only, and
with --allow-edits); one browser visits both. tests/browser.py finds Chromium (or
installs it with apt-get when running as root); without it these tests SKIP saying
why. Screenshots of the main pages are taken on every run; with
REGISTRY_UI_SCREENSHOTS=docs/screenshots (or another folder) they are kept there,
which is how the README's were made.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import torch
from archs_helper.models import TinyNet
from archs_helper.ui_models import LayeredNet, Stack
from browser import (
    Browser,
    BrowserUnavailable,
    ServerProcess,
    find_chromium,
    make_driver,
    registry_exe,
    ui_server,
)

from registry import Registry

TESTS = Path(__file__).resolve().parent
#: Where the screenshots are kept: REGISTRY_UI_SCREENSHOTS (relative to the checkout),
#: else a temporary folder (a test run does not rewrite the README's images).
SCREENSHOTS = (
    TESTS.parent / os.environ["REGISTRY_UI_SCREENSHOTS"]
    if os.environ.get("REGISTRY_UI_SCREENSHOTS")
    else Path(tempfile.mkdtemp(prefix="registry-ui-screenshots-"))
)

LAYERED = "archs_helper.ui_models:LayeredNet"
TINY = "archs_helper.models:TinyNet"
STACK = "archs_helper.ui_models:Stack"
#: LayeredNet's tensors, in state_dict order, and its head (the last two).
LAYERED_KEYS = list(LayeredNet().state_dict())
HEAD = ["body.5.weight", "body.5.bias"]
#: Models named bulk/tiny-NN, pushed first (so the newest-first listing starts with
#: the others): enough for the models page to need a second page.
BULK = 56
#: Stack(STACK_DEPTH): 2 tensors a layer, more than one page (500 rows) of tensors.
STACK_DEPTH = 300
SHOWCASE = [
    "vision/resnet-a",
    "vision/resnet-b",
    "text/bert",
    "edits/ranker",
    "locked/ranker",
    "wide/many-tensors",
]
WAIT = 10  # seconds a page may take to come after a click
#: text/bert:1's description and a tag value: markup that must be shown as text.
MARKUP_DESCRIPTION = "<script>window.pwned = 1</script><i>wiki</i> & books"
MARKUP_TAG = '<b>bold</b> & "quoted"'


# -- the registry ------------------------------------------------------------------------


def layered(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return LayeredNet().state_dict()


def tune_head(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A fine-tune that changed only the head: the other tensors are equal copies."""
    torch.manual_seed(seed)
    tuned = {key: value.clone() for key, value in state.items()}
    for key in HEAD:
        tuned[key] = tuned[key] + 0.05 * torch.randn_like(tuned[key])
    return tuned


@dataclass
class Filled:
    home: Path
    digests: dict[str, str]  # ref -> digest
    sizes: dict[str, int]  # LayeredNet tensor name -> bytes
    models: list[str]  # every model name


@pytest.fixture(scope="module")
def local_env() -> Iterator[None]:
    """No team catalogue or store from the environment while this module runs: the
    registry here, its servers and its CLI calls all use the local home."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("REGISTRY_DATABASE_URL", raising=False)
        patch.delenv("REGISTRY_STORAGE_URL", raising=False)
        yield


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, local_env: None) -> Filled:
    """The registry the servers serve (pushed in this order, so newest last):

    - bulk/tiny-00 .. bulk/tiny-55: TinyNet, tag family=bulk
    - vision/resnet-a: 1 (alias stable), 2 = 1 with only the head tuned (parent 1)
    - vision/resnet-b: 1 (parent vision/resnet-a:2, another model), 2, 3 (a chain)
    - text/bert: 1 (tag family=bert; markup in a tag and the description)
    - edits/ranker, locked/ranker: 1 (alias production), 2
    - wide/many-tensors: 1, Stack(300): 600 tensors, the largest version
    """
    home = tmp_path_factory.mktemp("ui-registry")
    reg = Registry(home=home)
    digests: dict[str, str] = {}

    def push(state, name, arch=LAYERED, **kw) -> str:
        mv = reg.push(state, name, arch=arch, **kw)
        digests[mv.ref] = mv.digest
        return mv.ref

    try:
        for i in range(BULK):
            torch.manual_seed(1000 + i)
            push(
                TinyNet(16).state_dict(),
                f"bulk/tiny-{i:02d}",
                arch=TINY,
                arch_kwargs={"hidden": 16},
                tags={"family": "bulk"},
            )
        a1 = layered(1)
        resnet = {"family": "resnet", "task": "classification"}
        push(
            a1,
            "vision/resnet-a",
            tags={**resnet, "dataset": "imagenet-mini"},
            description="Baseline trained from scratch.",
        )
        push(
            tune_head(a1, 2),
            "vision/resnet-a",
            parent="vision/resnet-a:1",
            tags={**resnet, "stage": "finetuned"},
            description="Only the head fine-tuned.",
        )
        reg.alias("vision/resnet-a:1", "stable")
        push(layered(3), "vision/resnet-b", parent="vision/resnet-a:2", tags=resnet)
        push(layered(4), "vision/resnet-b", parent="vision/resnet-b:1", tags=resnet)
        push(tune_head(layered(4), 5), "vision/resnet-b", parent="vision/resnet-b:2", tags=resnet)
        push(
            layered(6),
            "text/bert",
            tags={"family": "bert", "task": "nlp", "note": MARKUP_TAG},
            description=MARKUP_DESCRIPTION,
        )
        for name in ("edits/ranker", "locked/ranker"):
            push(layered(7), name, tags={"family": "ranker"})
            push(layered(8), name, parent=f"{name}:1", tags={"family": "ranker"})
            reg.alias(f"{name}:1", "production")
        push(
            Stack(STACK_DEPTH).state_dict(),
            "wide/many-tensors",
            arch=STACK,
            arch_kwargs={"depth": STACK_DEPTH},
        )
    finally:
        reg.close()
    sizes = {key: t.numel() * t.element_size() for key, t in layered(0).items()}
    models = [f"bulk/tiny-{i:02d}" for i in range(BULK)] + SHOWCASE
    return Filled(home, digests, sizes, models)


# -- browser and servers -----------------------------------------------------------------


def _say(config: pytest.Config):
    """Write a line on pytest's terminal now, past its output capture."""

    def say(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or capture is None:
            print(line)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    return say


@pytest.fixture(scope="session")
def chromium(pytestconfig: pytest.Config) -> Browser:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install '.[test]')")
    try:
        return find_chromium(log=_say(pytestconfig))
    except BrowserUnavailable as error:
        pytest.skip(f"no browser for the UI tests: {error}")


@pytest.fixture(scope="module")
def driver(chromium: Browser):
    browser = make_driver(chromium)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def servers(filled: Filled) -> Iterator[dict[str, ServerProcess]]:
    """{"read-only": a `registry ui`, "edits": one with --allow-edits}, both serving
    the filled registry, started together."""
    made = {
        "read-only": ui_server(filled.home, python_path=[TESTS]),
        "edits": ui_server(filled.home, allow_edits=True, python_path=[TESTS]),
    }
    try:
        for server in made.values():
            server.launch()
        for server in made.values():
            server.wait()
        yield made
    finally:
        for server in made.values():
            server.close()


@pytest.fixture(scope="module")
def ui(servers: dict[str, ServerProcess]) -> ServerProcess:
    return servers["read-only"]


@pytest.fixture(scope="module")
def edit_ui(servers: dict[str, ServerProcess]) -> ServerProcess:
    return servers["edits"]


# -- helpers -----------------------------------------------------------------------------


def model_path(name: str) -> str:
    return "/models/" + quote(name, safe="")


def version_path(ref: str) -> str:
    return "/versions/" + quote(ref, safe="")


def by_css(driver, css: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def one(driver, css: str):
    found = by_css(driver, css)
    assert found, f"no {css} on {driver.current_url}"
    return found[0]


def texts(driver, css: str) -> list[str]:
    """The rendered text of each element matching ``css`` (one round trip for all)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText.trim());",
        css,
    )


def listed_models(driver) -> list[str]:
    return texts(driver, "table#models tr.model a.model-link")


def visit(driver, server: ServerProcess, path: str) -> None:
    driver.get_log("browser")  # what earlier pages logged is not this page's
    driver.get(server.url(path))
    assert_no_console_errors(driver)


def submit(driver, form_css: str, fields: dict[str, str] | None = None) -> None:
    """Fill a form's fields (inputs, textareas, selects: by name), press its submit
    button and wait for the next page."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    form = one(driver, form_css)
    for name, value in (fields or {}).items():
        field = form.find_elements("css selector", f"[name='{name}']")
        assert field, f"{form_css} has no field named {name!r} on {driver.current_url}"
        if field[0].tag_name == "select":
            Select(field[0]).select_by_value(value)
        else:
            field[0].clear()
            field[0].send_keys(value)
    button = form.find_elements("css selector", "button[type='submit'], input[type='submit']")
    if not button:
        button = form.find_elements("css selector", "button:not([type])")
    assert button, f"{form_css} has no submit button on {driver.current_url}"
    page = one(driver, "html")
    button[0].click()
    WebDriverWait(driver, WAIT).until(expected_conditions.staleness_of(page))
    refused = texts(driver, "p.error")
    assert not refused, f"submitting {form_css} led to {driver.current_url}: {refused}"
    assert_no_console_errors(driver)


def click_and_wait(driver, element) -> None:
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = one(driver, "html")
    element.click()
    WebDriverWait(driver, WAIT).until(expected_conditions.staleness_of(page))
    assert_no_console_errors(driver)


def assert_no_console_errors(driver) -> None:
    """The page logged no error to the console (a failed script or stylesheet, a
    JavaScript exception)."""
    errors = [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
    ]
    assert not errors, f"console errors on {driver.current_url}: {errors}"


def screenshot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"could not write {path}"
    assert path.stat().st_size > 5000, f"{path} is nearly empty"


def post_from_page(driver, url: str, fields: dict[str, str]) -> dict:
    """POST a urlencoded form with fetch from the current page: its status, and the
    p.error lines of the answer."""
    result = driver.execute_async_script(
        """
        const [url, fields, done] = arguments;
        fetch(url, {method: "POST", body: new URLSearchParams(fields), redirect: "manual"})
          .then(async (r) => {
            const text = await r.text();
            const page = new DOMParser().parseFromString(text, "text/html");
            const errors = [...page.querySelectorAll("p.error")].map((p) => p.textContent.trim());
            done({status: r.status, type: r.type, errors: errors});
          })
          .catch((e) => done({status: -1, errors: [String(e)]}));
        """,
        url,
        fields,
    )
    driver.get_log("browser")  # a refusal is logged as a failed load: expected here
    return result


def fetch_status(driver, url: str) -> int:
    return driver.execute_async_script(
        "const [url, done] = arguments;"
        "fetch(url).then((r) => done(r.status)).catch(() => done(-1));",
        url,
    )


def csrf_of(driver) -> str:
    """The page's CSRF token, if it has one (a hidden input, else a meta tag)."""
    for css, attribute in (("input[name='csrf']", "value"), ("meta[name='csrf']", "content")):
        found = by_css(driver, css)
        if found:
            return found[0].get_attribute(attribute) or ""
    return ""


def loads(snippet: str) -> str | None:
    """The ref a Python snippet passes to ``Registry().load(...)``, if it is Python
    that does (either quote style: the contract shows ``Registry().load("NAME:V")``)."""
    try:
        tree = ast.parse(snippet)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load"
            and isinstance(node.func.value, ast.Call)
            and getattr(node.func.value.func, "id", None) == "Registry"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            return node.args[0].value
    return None


def box(driver, css: str) -> tuple[float, float, float, float]:
    """Where the element is on the page: left, top, right, bottom."""
    rect = driver.execute_script(
        "const b = arguments[0].getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom];",
        one(driver, css),
    )
    return tuple(rect)


def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def history_kinds(driver) -> list[str]:
    return texts(driver, "table#history tr.event td.kind")


def query(driver) -> dict[str, list[str]]:
    return parse_qs(urlsplit(driver.current_url).query)


# -- the models page -----------------------------------------------------------------------


def test_models_page_lists_searches_and_filters_by_tag(driver, ui, filled):
    visit(driver, ui, "/")
    first_page = listed_models(driver)
    assert set(SHOWCASE) <= set(first_page), first_page
    assert first_page[0] == "wide/many-tensors"  # sort=latest: the last push first
    info = one(driver, "#page-info").text
    assert re.search(rf"\b{len(filled.models)} models\b", info), info
    screenshot(driver, "models")

    submit(driver, "form#search", {"q": "vision/*"})
    assert query(driver).get("q") == ["vision/*"]
    assert sorted(listed_models(driver)) == ["vision/resnet-a", "vision/resnet-b"]
    assert not by_css(driver, "a#next-page")

    submit(driver, "form#search", {"q": "", "tag": "family=ranker"})
    assert sorted(listed_models(driver)) == ["edits/ranker", "locked/ranker"]
    submit(driver, "form#search", {"q": "*/ranker", "tag": "family=bert"})
    assert listed_models(driver) == []

    # A model link leads to that model's page.
    visit(driver, ui, "/?q=text/*")
    link = one(driver, "a.model-link")
    assert link.text.strip() == "text/bert"
    click_and_wait(driver, link)
    assert urlsplit(driver.current_url).path in (model_path("text/bert"), "/models/text/bert")
    assert "text/bert" in one(driver, "h1").text


def test_models_page_sorts_filters_and_pages(driver, ui, filled):
    visit(driver, ui, "/")
    submit(driver, "form#search", {"sort": "name"})
    assert query(driver).get("sort") == ["name"]
    names = listed_models(driver)
    assert names == sorted(filled.models)[: len(names)]

    visit(driver, ui, "/?sort=versions")
    assert listed_models(driver)[0] == "vision/resnet-b"  # the only one with 3 versions
    visit(driver, ui, "/?sort=size")
    assert listed_models(driver)[0] == "wide/many-tensors"

    visit(driver, ui, "/?arch=" + quote(TINY))
    info = one(driver, "#page-info").text
    assert re.search(rf"\b{BULK} models\b", info), info
    assert all(name.startswith("bulk/") for name in listed_models(driver))
    visit(driver, ui, "/?before=2000-01-01")
    assert listed_models(driver) == []
    visit(driver, ui, "/?since=2000-01-01&q=text/*")
    assert listed_models(driver) == ["text/bert"]

    # Pages: follow a#next-page to the end; every bulk model exactly once.
    visit(driver, ui, "/?q=bulk/*&sort=name")
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        seen += listed_models(driver)
        assert re.search(rf"\b{BULK} models\b", one(driver, "#page-info").text)
        more = by_css(driver, "a#next-page")
        if not more:
            break
        assert pages < 10, "a#next-page never ends"
        click_and_wait(driver, more[0])
        assert query(driver).get("page") == [str(pages + 1)]
        assert query(driver).get("q") == ["bulk/*"], "the next page lost the search"
    assert pages >= 2, f"{BULK} models fitted on one page: no paging seen"
    assert seen == [f"bulk/tiny-{i:02d}" for i in range(BULK)]


# -- a model -------------------------------------------------------------------------------


def test_model_page_versions_and_lineage(driver, ui):
    visit(driver, ui, "/?q=vision/*")
    [link] = [a for a in by_css(driver, "a.model-link") if a.text.strip() == "vision/resnet-b"]
    click_and_wait(driver, link)
    assert "vision/resnet-b" in one(driver, "h1").text
    rows = by_css(driver, "table#versions tr.version")
    assert [row.get_attribute("data-ref") for row in rows] == [
        "vision/resnet-b:3",
        "vision/resnet-b:2",
        "vision/resnet-b:1",
    ]
    assert all(row.find_elements("css selector", "a.version-link") for row in rows)

    nodes = {node.get_attribute("data-ref") for node in by_css(driver, "svg#lineage g.node")}
    expected = {"vision/resnet-b:1", "vision/resnet-b:2", "vision/resnet-b:3"}
    assert expected <= nodes, nodes
    assert "vision/resnet-a:2" in nodes, f"the parent from another model is not drawn: {nodes}"
    edges = by_css(driver, "svg#lineage path.edge, svg#lineage line.edge")
    assert len(edges) >= 3, f"{len(edges)} edges for b:3 -> b:2 -> b:1 -> a:2"

    form = one(driver, "form#compare-form")
    assert (form.get_attribute("method") or "get").lower() == "get"
    assert urlsplit(form.get_attribute("action") or "").path.endswith("/compare")
    assert form.find_elements("css selector", "select[name='a']")
    assert form.find_elements("css selector", "select[name='b']")
    screenshot(driver, "model")
    table, graph = box(driver, "table#versions"), box(driver, "svg#lineage")
    assert not overlap(table, graph), f"the lineage {graph} is drawn over the versions {table}"

    # The version link of a row leads to that version.
    link = rows[1].find_element("css selector", "a.version-link")
    click_and_wait(driver, link)
    assert "vision/resnet-b:2" in one(driver, "h1").text


# -- a version -----------------------------------------------------------------------------


def test_version_page_info_history_tensors_snippets(driver, ui, filled):
    ref = "vision/resnet-a:2"
    visit(driver, ui, version_path(ref))
    assert ref in one(driver, "h1").text
    info = one(driver, "dl#info").text
    digest = filled.digests[ref].split(":")[-1]
    assert digest[:12] in info, info
    assert LAYERED in info, info
    assert "stage" in info and "finetuned" in info, info  # tags
    assert "vision/resnet-a:1" in info, info  # lineage: the parent
    assert "Only the head fine-tuned." in info, info
    labels = " | ".join(texts(driver, "dl#info dt")).lower()
    for label in ("digest", "arch", "created", "pushed by", "size", "parameters", "tags",
                  "aliases", "lineage", "description"):  # fmt: skip
        assert label in labels, f"dl#info has no {label!r}: {labels}"
    assert history_kinds(driver) == ["push"]

    names = texts(driver, "table#tensors tr.tensor td.name")
    assert names == LAYERED_KEYS
    row = {
        r.find_element("css selector", "td.name").text.strip(): r
        for r in by_css(driver, "table#tensors tr.tensor")
    }
    assert (
        row["body.1.num_batches_tracked"].find_element("css selector", "td.dtype").text.strip()
        == "int64"
    )
    assert row["body.3.weight"].find_element("css selector", "td.dtype").text.strip() == "float32"
    shape = row["body.3.weight"].find_element("css selector", "td.shape").text
    assert re.search(r"64\D+32", shape), shape
    assert row["body.3.weight"].find_element("css selector", "td.size").text.strip()

    snippets = texts(driver, "pre.snippet")
    assert any(f"registry pull {ref}" in s for s in snippets), snippets
    assert any(loads(s) == ref for s in snippets), snippets
    assert len(by_css(driver, "button.copy")) >= 2
    assert not by_css(driver, "form#alias-form"), "an edit form on a read-only server"
    assert one(driver, "p#read-only").text.strip()
    screenshot(driver, "version")

    # The filter keeps the tensors whose name has the substring.
    submit(driver, "form#tensor-filter", {"tq": "body.1."})
    assert query(driver).get("tq") == ["body.1."]
    assert texts(driver, "table#tensors tr.tensor td.name") == [
        k for k in LAYERED_KEYS if "body.1." in k
    ]

    # The header's size link sorts by size; both directions.
    visit(driver, ui, version_path(ref))
    [size_link] = [
        a for a in by_css(driver, "table#tensors a.sort") if "sort=size" in a.get_attribute("href")
    ]
    click_and_wait(driver, size_link)
    shown = texts(driver, "table#tensors tr.tensor td.name")
    sizes = [filled.sizes[name] for name in shown]
    assert sizes in (sorted(sizes), sorted(sizes, reverse=True)), list(zip(shown, sizes))
    visit(driver, ui, version_path(ref) + "?sort=size&dir=desc")
    shown = texts(driver, "table#tensors tr.tensor td.name")
    assert shown[0] == "body.3.weight"
    sizes = [filled.sizes[name] for name in shown]
    assert sizes == sorted(sizes, reverse=True), list(zip(shown, sizes))
    visit(driver, ui, version_path(ref) + "?sort=size&dir=asc")
    assert texts(driver, "table#tensors tr.tensor td.name")[0] == "body.1.num_batches_tracked"
    visit(driver, ui, version_path(ref) + "?sort=name&dir=desc")
    shown = texts(driver, "table#tensors tr.tensor td.name")
    assert shown == sorted(LAYERED_KEYS, reverse=True)


def test_version_page_pages_of_tensors(driver, ui):
    visit(driver, ui, version_path("wide/many-tensors:1"))
    first = texts(driver, "table#tensors tr.tensor td.name")
    assert len(first) == 500
    assert str(2 * STACK_DEPTH) in one(driver, "#tensor-page-info").text
    click_and_wait(driver, one(driver, "a#tensor-next"))
    second = texts(driver, "table#tensors tr.tensor td.name")
    assert len(second) == 2 * STACK_DEPTH - 500
    assert not set(first) & set(second)
    assert not by_css(driver, "a#tensor-next")
    everything = [f"layers.{i}.{kind}" for i in range(STACK_DEPTH) for kind in ("weight", "bias")]
    assert first + second == everything

    visit(driver, ui, version_path("wide/many-tensors:1") + "?tq=" + quote("layers.29"))
    shown = texts(driver, "table#tensors tr.tensor td.name")
    assert shown == [name for name in everything if "layers.29" in name]  # 29, 290-299


def test_copy_buttons_copy_their_snippet(driver, ui):
    """Each button.copy puts its snippet (the n-th pre.snippet) on the clipboard."""
    ref = "text/bert:1"
    visit(driver, ui, version_path(ref))
    driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": ui.base_url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    snippets = by_css(driver, "pre.snippet")
    buttons = by_css(driver, "button.copy")
    assert len(buttons) == len(snippets) >= 2
    for button, snippet in zip(buttons, snippets):
        button.click()
        copied = driver.execute_async_script(
            "const done = arguments[0];"
            "navigator.clipboard.readText().then(done).catch((e) => done('ERROR ' + e));"
        )
        assert copied.strip() == snippet.get_attribute("textContent").strip(), copied
        assert ref in copied
    assert_no_console_errors(driver)


def test_descriptions_and_tags_are_text_not_markup(driver, ui):
    """Markup in a description or a tag is shown as written, never run or rendered."""
    for path, where in (
        (version_path("text/bert:1"), "dl#info"),
        (model_path("text/bert"), "table#versions"),
    ):
        visit(driver, ui, path)
        assert driver.execute_script("return window.pwned === undefined"), f"{path} ran a script"
        assert not by_css(driver, f"{where} script, {where} i, {where} b"), path
        text = texts(driver, where)[0]
        assert MARKUP_TAG in text, (path, text)
        assert MARKUP_DESCRIPTION in text, (path, text)


# -- compare ---------------------------------------------------------------------------------


def test_compare_a_fine_tune_of_the_head(driver, ui, filled):
    visit(driver, ui, model_path("vision/resnet-a"))
    submit(driver, "form#compare-form", {"a": "vision/resnet-a:1", "b": "vision/resnet-a:2"})
    assert urlsplit(driver.current_url).path == "/compare"
    assert query(driver).get("a") == ["vision/resnet-a:1"]
    assert query(driver).get("b") == ["vision/resnet-a:2"]
    assert one(driver, "#summary").text.strip()

    assert sorted(texts(driver, "#changed tr td.name")) == sorted(HEAD)
    for table in ("#added", "#removed", "#reshaped"):
        assert texts(driver, f"{table} tr td.name") == [], table

    bars = by_css(driver, "svg#chart rect.bar")
    assert [bar.get_attribute("data-tensor") for bar in bars] == LAYERED_KEYS
    changed = [b.get_attribute("data-tensor") for b in by_css(driver, "svg#chart rect.bar.changed")]
    assert changed == HEAD  # the last ones in model order
    for bar in bars:
        name, rel = bar.get_attribute("data-tensor"), float(bar.get_attribute("data-rel"))
        assert (rel > 0) if name in HEAD else (rel == 0), (name, rel)
    shared = sum(size for name, size in filled.sizes.items() if name not in HEAD)
    shown = re.sub(r"[,.\s\u00a0\u202f_']", "", one(driver, "#shared").text)
    assert str(shared) in shown, f"#shared does not say {shared} bytes: {shown}"
    screenshot(driver, "compare")


# -- edits -----------------------------------------------------------------------------------


def test_edit_alias_form_moves_an_alias(driver, edit_ui, filled):
    ref = "edits/ranker:2"
    visit(driver, edit_ui, version_path(ref))
    assert not by_css(driver, "p#read-only")
    for form in ("form#alias-form", "form#tags-form", "form#description-form"):
        assert one(driver, form).find_elements("css selector", "input[name='csrf']"), form

    submit(driver, "form#alias-form", {"alias": "production"})  # was on edits/ranker:1
    assert urlsplit(driver.current_url).path in (version_path(ref), f"/versions/{ref}")
    assert "production" in one(driver, "dl#info").text
    assert history_kinds(driver)[0] == "alias"
    reg = Registry(home=filled.home)
    try:
        assert reg.get("edits/ranker:production").version == 2
        assert reg.get("edits/ranker:1").aliases == ()
    finally:
        reg.close()
    log = subprocess.run(
        [registry_exe(), "log", ref, "--json"],
        env={**os.environ, "REGISTRY_HOME": str(filled.home)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert log.returncode == 0, log.stderr
    newest = json.loads(log.stdout)[0]
    assert (newest["kind"], newest["version"]) == ("alias", 2), newest


def test_edit_tags_and_description_forms(driver, edit_ui, filled):
    ref = "edits/ranker:1"
    visit(driver, edit_ui, version_path(ref))
    submit(driver, "form#tags-form", {"set": "reviewed=yes\nowner=ui-test", "remove": "family"})
    assert urlsplit(driver.current_url).path in (version_path(ref), f"/versions/{ref}")
    kinds = history_kinds(driver)
    assert sorted(kinds[:2]) == ["tag", "untag"], kinds
    info = one(driver, "dl#info").text
    assert "reviewed=yes" in info and "family=ranker" not in info, info

    submit(driver, "form#description-form", {"description": "Checked in the browser."})
    assert history_kinds(driver)[0] == "describe"
    assert "Checked in the browser." in one(driver, "dl#info").text
    reg = Registry(home=filled.home)
    try:
        mv = reg.get(ref)
    finally:
        reg.close()
    assert mv.tags == {"reviewed": "yes", "owner": "ui-test"}
    assert mv.description == "Checked in the browser."


def test_edits_need_the_pages_csrf_token(driver, edit_ui, filled):
    ref = "edits/ranker:2"
    visit(driver, edit_ui, version_path(ref))
    assert csrf_of(driver), "the edit forms carry no csrf value"
    answer = post_from_page(
        driver, edit_ui.url(version_path(ref) + "/alias"), {"alias": "canary", "csrf": "forged"}
    )
    assert 400 <= answer["status"] < 500, answer
    reg = Registry(home=filled.home)
    try:
        assert "canary" not in reg.get(ref).aliases
    finally:
        reg.close()


def test_read_only_server_refuses_edits(driver, ui, filled):
    ref = "locked/ranker:2"
    visit(driver, ui, version_path(ref))
    for form in ("form#alias-form", "form#tags-form", "form#description-form"):
        assert not by_css(driver, form), f"{form} on a read-only server"
    assert one(driver, "p#read-only").text.strip()

    answer = post_from_page(
        driver,
        ui.url(version_path(ref) + "/alias"),
        {"alias": "production", "csrf": csrf_of(driver) or "none"},
    )
    assert answer["status"] == 403, answer
    assert len(answer["errors"]) == 1 and answer["errors"][0], answer
    reg = Registry(home=filled.home)
    try:
        assert reg.get("locked/ranker:production").version == 1
    finally:
        reg.close()


# -- storage, errors ----------------------------------------------------------------------


def test_storage_page(driver, ui, filled):
    """The totals come with the page; what gc would free is filled in by the page's
    script from a dry run (/api/gc), and is what gc itself reports."""
    from selenium.webdriver.support.ui import WebDriverWait

    visit(driver, ui, "/")
    links = [
        a for a in by_css(driver, "a") if urlsplit(a.get_attribute("href") or "").path == "/storage"
    ]
    assert links, "no link to /storage on the models page"
    click_and_wait(driver, links[0])
    for dd in ("logical", "stored", "saved"):
        assert re.search(r"\d", one(driver, f"dl#storage dd#{dd}").text), dd
    WebDriverWait(driver, WAIT).until(
        lambda d: "done" in (one(d, "dd#gc-frees").get_attribute("class") or "")
    )
    reg = Registry(home=filled.home)
    try:
        expected = reg.gc(dry_run=True).bytes_freed
        totals = reg.storage(gc=False)
    finally:
        reg.close()
    gc_frees = one(driver, "dd#gc-frees")
    assert int(gc_frees.get_attribute("data-bytes")) == expected
    assert "unused tensors" in gc_frees.text
    assert int(one(driver, "dd#logical").get_attribute("data-bytes")) == totals.logical_bytes
    assert int(one(driver, "dd#saved").get_attribute("data-bytes")) == totals.saved_bytes
    assert_no_console_errors(driver)
    screenshot(driver, "storage")


@pytest.mark.parametrize(
    "path",
    [model_path("no/such-model"), version_path("vision/resnet-a:99"), version_path("nope:1")],
)
def test_unknown_model_or_version_is_404(driver, ui, path):
    driver.get(ui.url(path))
    driver.get_log("browser")  # the 404 itself is logged as a failed load
    assert len(by_css(driver, "p.error")) == 1
    assert one(driver, "p.error").text.strip()
    assert fetch_status(driver, ui.url(path)) == 404
