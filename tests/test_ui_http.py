"""`registry ui` over HTTP: the JSON under /api/ against the CLI's --json, hostile text
on every page, the access checks (edits, CSRF, host, token, security headers, paths),
paging, no torch on the reading pages, a read-only catalogue role, and the real
`registry ui` process.

Most tests drive the Starlette app in-process (starlette.testclient.TestClient on
http://127.0.0.1:8000); the tests at the end start the installed `registry ui` and
talk to it with httpx and http.client. tests/test_ui_browser.py drives the same
pages in a browser.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import anyio
import httpx
import pytest
import torch
from archs_helper.models import TinyNet
from conftest import REGISTRY_EXE, run_cli
from markupsafe import escape
from starlette.testclient import TestClient
from test_hostile_text import rewrite_bundle

from registry import Registry
from registry.ui import Settings, create_app

BACKENDS = ("local", "team")  # JSON shapes on both; the rest is local_only
TINY = "archs_helper.models:TinyNet"
BASE = "http://127.0.0.1:8000"
OWN_ORIGIN = BASE
STATIC = Path(__file__).resolve().parent.parent / "registry" / "ui" / "static"

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "</script><script>alert(1)</script>"
QUOTE = '" onmouseover="x'
QUOTE1 = "' onfocus='x"
RTL = "safe\u202etxt.exe"
#: Text that is markup: it must never reach a page as it is.
MARKUP = (IMG, SCRIPT, QUOTE, QUOTE1)
#: Tensor names any state dict may have (a bundle carries them as given).
HOSTILE_KEYS = [IMG, SCRIPT, QUOTE + QUOTE1, "multi\nline " + RTL]
DESCRIPTION = "\n".join([IMG, SCRIPT, QUOTE, QUOTE1, RTL, "last line"])


def weights(seed: int, hidden: int = 16) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return TinyNet(hidden).state_dict()


def push(reg: Registry, name: str, state: dict | int, **kw):
    state = weights(state) if isinstance(state, int) else state
    return reg.push(state, name, arch=TINY, arch_kwargs={"hidden": 16}, **kw)


@pytest.fixture
def ui():
    """Makes TestClients of the app serving the registry at HOME (as the environment
    says, or at ``database_url``); closes them and every Registry they opened."""
    opened: list[Registry] = []
    with contextlib.ExitStack() as stack:

        def make(home: Path, *, database_url: str | None = None, raise_errors=True, **settings):
            def open_registry() -> Registry:
                reg = Registry(home=home, database_url=database_url)
                opened.append(reg)
                return reg

            app_settings = Settings(open_registry=open_registry, **settings)
            client = TestClient(
                create_app(app_settings), base_url=BASE, raise_server_exceptions=raise_errors
            )
            stack.enter_context(client)
            client.app_settings = app_settings
            return client

        yield make
    for reg in opened:
        reg.close()


def error_line(response: httpx.Response) -> str:
    """The one line of an error page (the text of its only <p class="error">)."""
    found = re.findall(r'<p class="error">(.*?)</p>', response.text, re.S)
    assert len(found) == 1, response.text
    line = unescape(found[0])
    assert line and "\n" not in line, line
    return line


def csrf_of(page: httpx.Response) -> str:
    values = set(re.findall(r'<input type="hidden" name="csrf" value="([^"]*)">', page.text))
    assert len(values) == 1, values
    return unescape(values.pop())


# -- hostile text -------------------------------------------------------------------------------


class _Scan(HTMLParser):
    """Every element with its attributes, as a browser would read the page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag


def assert_safe(html: str, shown: tuple[str, ...] = ()) -> None:
    """No hostile markup reached ``html``: no element or attribute it could have made,
    its raw text nowhere; each text of ``shown`` is there, escaped."""
    for raw in MARKUP:
        assert raw not in html, raw
    for text in shown:
        assert str(escape(text)) in html, text
    scan = _Scan()
    scan.feed(html)
    scan.close()
    tags = [tag for tag, _ in scan.elements]
    assert not {"img", "iframe", "object", "embed", "style", "base"} & set(tags), tags
    scripts = [attrs for tag, attrs in scan.elements if tag == "script"]
    assert scripts == [{"src": "/static/ui.js", "defer": None}], scripts
    for tag, attrs in scan.elements:
        for name, value in attrs.items():
            assert not name.startswith("on") and name != "style", (tag, attrs)
            assert not (value or "").strip().lower().startswith("javascript:"), (tag, attrs)


@pytest.fixture
def hostile(reg: Registry, tmp_path: Path) -> Registry:
    """m:1 with hostile tag values and description (and their events); evil:1, imported
    from a bundle, with the same tensors under hostile names."""
    tags = {"img": IMG, "script": SCRIPT, "quote": QUOTE + QUOTE1, "rtl": RTL}
    push(reg, "m", 1, tags=tags, description=DESCRIPTION)
    reg.tag("m:1", {"img": IMG + IMG})
    reg.describe("m:1", DESCRIPTION + "\n" + IMG)
    bundle = tmp_path / "hostile.tar"
    reg.export(["m:1"], bundle)

    def edit(manifest: dict) -> None:
        version = manifest["versions"][0]
        version["name"] = "evil"
        for tensor, name in zip(version["tensors"], HOSTILE_KEYS):
            tensor[0] = name

    rewrite_bundle(bundle, edit)
    reg.import_bundle(bundle)
    assert [t.name for t in reg.get("evil:1").tensors] == HOSTILE_KEYS
    return reg


@pytest.mark.local_only
def test_hostile_text_is_escaped_on_every_page(hostile: Registry, home: Path, ui):
    """Tag values, descriptions, tensor names and filters holding markup are shown as
    text on every page, never as markup; a newline in a tensor name is no new row."""
    values = (IMG, SCRIPT, QUOTE + QUOTE1, RTL)
    pages = {
        "/": (),
        "/?" + urlencode({"tag": f"img={IMG + IMG}"}): (f"img={IMG + IMG}",),
        "/?" + urlencode({"arch": QUOTE, "q": "m*"}): (QUOTE,),
        "/models/m": (*values[1:], IMG + IMG, DESCRIPTION),
        "/models/evil": (*values[1:], IMG + IMG),
        "/versions/m:1": (*values[1:], IMG + IMG, DESCRIPTION + "\n" + IMG),
        "/versions/evil:1": tuple(HOSTILE_KEYS),
        "/versions/evil:1?" + urlencode({"tq": "<"}): (IMG, SCRIPT, "<"),
        "/versions/evil:1?" + urlencode({"sort": "name", "dir": "desc"}): tuple(HOSTILE_KEYS),
        "/compare?a=m:1&b=evil:1": tuple(HOSTILE_KEYS),
        "/compare?a=evil:1&b=m:1&scale=log": tuple(HOSTILE_KEYS),
    }
    client = ui(home)
    for url, shown in pages.items():
        page = client.get(url)
        assert page.status_code == 200, (url, page.text)
        assert_safe(page.text, shown)
    evil = client.get("/versions/evil:1").text
    assert evil.count('<tr class="tensor">') == len(HOSTILE_KEYS)
    chart = client.get("/compare?a=m:1&b=evil:1").text
    scan = _Scan()
    scan.feed(chart)
    bars = [
        attrs["data-tensor"]
        for tag, attrs in scan.elements
        if tag == "rect" and "data-tensor" in attrs
    ]
    assert bars == HOSTILE_KEYS  # each name one attribute value, whole

    # the JSON gives the text back exactly
    assert [t["name"] for t in client.get("/api/versions/evil:1").json()["tensors"]] == HOSTILE_KEYS
    assert client.get("/api/versions/m:1").json()["tags"]["img"] == IMG + IMG

    # with edits allowed the description is also inside a <textarea>
    editing = ui(home, allow_edits=True)
    page = editing.get("/versions/m:1")
    assert "<textarea" in page.text
    assert_safe(page.text, (DESCRIPTION + "\n" + IMG,))

    # error pages: a bad ref, name, filter or sort holding markup is one escaped line
    errors = [
        "/versions/" + quote(SCRIPT, safe=""),
        "/versions/m:" + quote(IMG, safe=""),
        "/models/" + quote(IMG, safe=""),
        "/api-not/" + quote(IMG, safe=""),
        "/?" + urlencode({"since": IMG}),
        "/?" + urlencode({"q": QUOTE}),
        "/?" + urlencode({"tag": SCRIPT}),
        "/?" + urlencode({"sort": QUOTE1}),
        "/versions/m:1?" + urlencode({"sort": IMG}),
        "/compare?" + urlencode({"a": "m:1", "b": QUOTE}),
        "/compare?" + urlencode({"a": SCRIPT, "b": "m:1"}),
        "/versions/" + quote("m" + RTL, safe=""),
    ]
    for url in errors:
        page = client.get(url)
        assert page.status_code in (400, 404), (url, page.status_code)
        error_line(page)
        assert_safe(page.text)
        assert "\u202e" not in page.text  # an error line shows it escaped, as the CLI does


# -- JSON = the CLI's --json --------------------------------------------------------------------


#: Runs CLI commands (argv lists, JSON in argv[1]) with --json in this one process
#: (each command in a process of its own costs a second on the team backend), and
#: prints their answers as one JSON list.
CLI_JSON = r"""
import contextlib, io, json, sys
from registry.cli import cli

answers = []
for args in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            cli([*args, "--json"], prog_name="registry")
        except SystemExit as exit:
            assert not exit.code, (args, exit.code)
    answers.append(json.loads(out.getvalue()))
print(json.dumps(answers))
"""
VERSION_REFS = ("team/m:1", "team/m:prod", "team/m:latest", "other:1")
LOG_REFS = ("team/m:1", "team/m:2", "team/m", "other:2", "other")


def run_cli_json_list(name: str) -> object:
    """`registry list NAME --json`, through the installed command."""
    return json.loads(run_cli("list", name, "--json", check=True).stdout)


def cli_json(commands: dict[str, list[str]]) -> dict[str, object]:
    """Each command's --json answer, by key, from the CLI in a subprocess."""
    result = subprocess.run(
        [sys.executable, "-c", CLI_JSON, json.dumps(list(commands.values()))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return dict(zip(commands, json.loads(result.stdout)))


def test_json_is_what_the_cli_gives(reg: Registry, home: Path, ui):
    """Every /api/ read gives what the same command's --json gives, on both backends."""
    base = weights(1)
    tuned = {**base, "body.2.bias": base["body.2.bias"] + 0.5}
    push(reg, "team/m", base, tags={"stage": "dev"}, description="the first")
    push(reg, "team/m", tuned, parent="team/m:1")
    push(reg, "other", 3)
    push(reg, "other", 4)
    reg.alias("team/m:1", "prod")
    reg.tag("team/m:2", {"stage": "test", "owner": "ana"})
    reg.untag("team/m:2", ["owner"])
    reg.describe("team/m:2", "tuned\nhead only")
    reg.remove("other:2")
    client = ui(home)
    commands = {
        "models": ["models"],
        "models by name": ["models", "--sort", "name"],
        "models filtered": ["models", "team/*", "--tag", "stage=test"],
        **{f"list {name}": ["list", name] for name in ("team/m", "other")},
        **{f"show {ref}": ["show", ref] for ref in VERSION_REFS},
        **{f"log {ref}": ["log", ref] for ref in LOG_REFS},
        "diff": ["diff", "team/m:1", "team/m:2"],
        "storage": ["storage"],
    }
    answers = cli_json(commands)

    def cli(*args: str):
        return answers[next(k for k, v in commands.items() if v == list(args))]

    def api(url: str):
        response = client.get(url)
        assert response.status_code == 200, (url, response.text)
        assert response.headers["content-type"] == "application/json"
        return response.json()

    assert api("/api/models") == cli("models")
    assert api("/api/models?sort=name") == cli("models", "--sort", "name")
    assert api("/api/models?" + urlencode({"q": "team/*", "tag": "stage=test"})) == cli(
        "models", "team/*", "--tag", "stage=test"
    )
    assert [m["name"] for m in api("/api/models?sort=versions")] == ["team/m", "other"]
    for name in ("team/m", "other"):
        assert api(f"/api/models/{name}") == cli("list", name)
    for ref in VERSION_REFS:
        assert api(f"/api/versions/{ref}") == cli("show", ref)
    for ref in LOG_REFS:
        assert api(f"/api/versions/{ref}/log") == cli("log", ref)
    kinds = [e["kind"] for e in api("/api/versions/team/m:2/log")]
    assert kinds == ["describe", "untag", "tag", "push"]

    compared = api("/api/compare?a=team/m:1&b=team/m:2")
    diff = cli("diff", "team/m:1", "team/m:2")
    assert set(compared) == set(diff) | {"shared_bytes", "tensors"}
    assert {k: compared[k] for k in diff} == diff
    assert [c["name"] for c in diff["changed"]] == ["body.2.bias"]
    second = reg.get("team/m:2")
    assert compared["shared_bytes"] == second.total_bytes - 12  # all but the 3 float32s
    assert [(t["name"], t["change"]) for t in compared["tensors"]] == [
        (t.name, "changed" if t.name == "body.2.bias" else "identical") for t in second.tensors
    ]
    assert compared["tensors"][-1]["rel_l2"] == diff["changed"][0]["rel_l2"]

    assert api("/api/storage") == cli("storage")
    # and through the installed command itself
    for args in (["models"], ["storage"]):
        assert json.loads(run_cli(*args, "--json", check=True).stdout) == cli(*args)

    # a name with no versions lists none, as `registry list NAME --json` does
    assert client.get("/api/models/nobody").json() == [] == run_cli_json_list("nobody")

    # errors are JSON too, with the status of their kind
    for url, status, kind in [
        ("/api/versions/team/m:9", 404, "VersionNotFoundError"),
        ("/api/nosuch", 404, "NotFound"),
        ("/api/versions/..%2f..%2fetc%2fpasswd", 400, "InvalidReferenceError"),
        ("/api/models?sort=bogus", 400, "InvalidArgumentError"),
        ("/api/compare?a=team/m:1", 400, "InvalidArgumentError"),
    ]:
        response = client.get(url)
        assert response.status_code == status, (url, response.text)
        assert response.json()["kind"] == kind and response.json()["error"]


@pytest.mark.local_only
def test_api_compare_answers_when_a_tensor_was_all_zeros(reg: Registry, home: Path, ui):
    """A bias initialised to zeros and then trained has no finite relative change: the
    JSON still answers (the CLI says Infinity), never an internal error."""
    base = weights(1)
    base["body.0.bias"] = torch.zeros_like(base["body.0.bias"])
    trained = {**base, "body.0.bias": torch.full_like(base["body.0.bias"], 0.25)}
    push(reg, "m", base)
    push(reg, "m", trained)
    client = ui(home, raise_errors=False)
    assert client.get("/compare?a=m:1&b=m:2").status_code == 200
    response = client.get("/api/compare?a=m:1&b=m:2")
    assert response.status_code == 200, response.text
    data = response.json()
    assert [c["name"] for c in data["changed"]] == ["body.0.bias"]
    assert next(t for t in data["tensors"] if t["name"] == "body.0.bias")["change"] == "changed"


# -- edits and the access checks -------------------------------------------------------------


def snapshot(reg: Registry, ref: str = "m:1"):
    mv = reg.get(ref)
    return [e.to_dict() for e in reg.log(ref)], mv.tags, mv.aliases, mv.description


EDITS = {
    "alias": {"alias": "prod"},
    "tags": {"set": "stage=prod", "remove": ""},
    "description": {"description": "changed"},
}


@pytest.mark.local_only
def test_without_allow_edits_every_post_is_refused(reg: Registry, home: Path, ui):
    push(reg, "m", 1, tags={"stage": "dev"})
    before = snapshot(reg)
    client = ui(home)
    page = client.get("/versions/m:1")
    assert 'id="read-only"' in page.text and '<form id="alias-form"' not in page.text
    assert 'name="csrf"' not in page.text
    csrf = client.app_settings.csrf
    for route, form in EDITS.items():
        response = client.post(
            f"/versions/m:1/{route}",
            data={**form, "csrf": csrf},
            headers={"origin": OWN_ORIGIN, "sec-fetch-site": "same-origin"},
            follow_redirects=False,
        )
        assert response.status_code == 403, (route, response.text)
        assert "--allow-edits" in error_line(response)
    for url in ("/", "/api/models", "/versions/m:1", "/models/m", "/storage"):
        response = client.post(url, data={"csrf": csrf}, follow_redirects=False)
        assert response.status_code in (403, 405), (url, response.status_code)
    assert snapshot(reg) == before


@pytest.mark.local_only
def test_edits_need_this_pages_form(reg: Registry, home: Path, ui):
    """A POST without the page's CSRF token, or from another site (Origin,
    Sec-Fetch-Site), is refused in one line and changes nothing."""
    push(reg, "m", 1)
    before = snapshot(reg)
    client = ui(home, allow_edits=True)
    csrf = csrf_of(client.get("/versions/m:1"))
    assert csrf == client.app_settings.csrf
    refused = [
        ({}, {}),
        ({"csrf": ""}, {}),
        ({"csrf": csrf[:-1]}, {}),
        ({"csrf": "x" + csrf}, {}),
        ({"csrf": csrf}, {"origin": "http://evil.example"}),
        ({"csrf": csrf}, {"origin": "null"}),
        ({"csrf": csrf}, {"origin": "http://127.0.0.1:9999"}),
        ({"csrf": csrf}, {"sec-fetch-site": "cross-site"}),
        ({"csrf": csrf}, {"sec-fetch-site": "same-site"}),
        ({"csrf": csrf}, {"origin": OWN_ORIGIN, "sec-fetch-site": "cross-site"}),
    ]
    for route, form in EDITS.items():
        for extra, headers in refused:
            response = client.post(
                f"/versions/m:1/{route}",
                data={**form, **extra},
                headers=headers,
                follow_redirects=False,
            )
            assert response.status_code == 403, (route, extra, headers, response.status_code)
            assert "refused" in error_line(response)
    other = ui(home, allow_edits=True)  # another server: another token
    response = other.post(
        "/versions/m:1/alias", data={"alias": "prod", "csrf": csrf}, follow_redirects=False
    )
    assert response.status_code == 403
    assert snapshot(reg) == before


@pytest.mark.local_only
def test_edits_from_the_page_are_recorded(reg: Registry, home: Path, ui):
    push(reg, "m", 1)
    push(reg, "m", 2)
    client = ui(home, allow_edits=True)
    page = client.get("/versions/m:1")
    csrf = csrf_of(page)
    assert 'action="/versions/m:1/alias"' in page.text

    def post(route: str, ref: str = "m:1", **form: str) -> httpx.Response:
        return client.post(
            f"/versions/{ref}/{route}",
            data={**form, "csrf": csrf},
            headers={"origin": OWN_ORIGIN, "sec-fetch-site": "same-origin"},
            follow_redirects=False,
        )

    response = post("alias", alias="prod")
    assert response.status_code == 303 and response.headers["location"] == "/versions/m:1"
    assert post("tags", set="stage=prod\r\nteam=vision\r\n", remove="").status_code == 303
    assert post("tags", set="", remove="team").status_code == 303
    assert post("description", description="line one\r\nline two").status_code == 303
    mv = reg.get("m:1")
    assert list(mv.aliases) == ["prod"] and mv.tags == {"stage": "prod"}
    assert mv.description == "line one\nline two"
    assert [e.kind for e in reg.log("m:1")] == ["describe", "untag", "tag", "alias", "push"]
    alias = reg.log("m:1")[3]
    assert alias.after["alias"] == "prod"

    # an alias given as m:latest lands on the version, and the page follows it there
    moved = post("alias", ref="m:latest", alias="prod")
    assert moved.status_code == 303 and moved.headers["location"] == "/versions/m:2"
    assert reg.get("m:prod").ref == "m:2"
    # a Sec-Fetch-Site of none (typed by hand) with the token is the page's own
    plain = client.post(
        "/versions/m:2/description",
        data={"description": "by hand", "csrf": csrf},
        headers={"sec-fetch-site": "none"},
        follow_redirects=False,
    )
    assert plain.status_code == 303 and reg.get("m:2").description == "by hand"
    # an empty description clears it
    assert post("description", ref="m:2", description=" \r\n").status_code == 303
    assert reg.get("m:2").description is None

    # a bad value is one line, and nothing changes
    before = snapshot(reg)
    for route, form, status in [
        ("alias", {"alias": "no spaces"}, 400),
        ("alias", {"alias": ""}, 400),
        ("tags", {"set": "novalue"}, 400),
        ("tags", {"set": "", "remove": ""}, 400),
        ("tags", {"remove": "absent"}, None),
    ]:
        response = post(route, **form)
        assert response.status_code >= 400 if status is None else response.status_code == status
        error_line(response)
    assert post("alias", ref="m:7", alias="x").status_code == 404
    assert snapshot(reg) == before


@pytest.mark.local_only
def test_only_a_loopback_host_name_is_answered_on_loopback(reg: Registry, home: Path, ui):
    push(reg, "m", 1)
    client = ui(home)
    for host in ("127.0.0.1:8000", "127.0.0.1", "localhost:8000", "localhost", "[::1]:8000"):
        assert client.get("/", headers={"host": host}).status_code == 200, host
    for host in (
        "evil.example",
        "evil.example:8000",
        "127.0.0.1.evil.example",
        "localhost.evil.example:8000",
        "192.0.2.1:8000",
        "",
    ):
        response = client.get("/api/models", headers={"host": host})
        assert response.status_code == 400, host
        assert response.text.count("\n") == 1 and "loopback" in response.text
    wide = ui(home, loopback=False)
    assert wide.get("/", headers={"host": "evil.example"}).status_code == 200


@pytest.mark.local_only
def test_a_token_is_needed_when_set(reg: Registry, home: Path, ui):
    push(reg, "m", 1)
    token = "tok-" + "x" * 20
    client = ui(home, token=token)
    for url in ("/", "/api/models", "/versions/m:1", "/static/ui.css", "/nope"):
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.text.count("\n") == 1 and "token" in response.text
    for headers in (
        {"authorization": "Bearer wrong"},
        {"authorization": f"Bearer {token}x"},
        {"authorization": f"Basic {token}"},
        {"cookie": "registry_ui_token=wrong"},
    ):
        assert client.get("/", headers=headers).status_code == 401, headers
    assert client.get("/?token=wrong").status_code == 401
    # a token in a POST's query is no login
    response = client.post(f"/versions/m:1/alias?token={token}", data={"alias": "x"})
    assert response.status_code == 401

    visit = client.get(f"/?token={token}&sort=name", follow_redirects=False)
    assert visit.status_code == 303 and visit.headers["location"] == "/?sort=name"
    cookie = visit.headers["set-cookie"]
    assert cookie.startswith(f"registry_ui_token={token};")
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert "token" not in visit.headers["location"]
    for url in ("/", "/api/models", "/versions/m:1", "/storage"):
        assert client.get(url).status_code == 200, url  # the cookie
    bearer = ui(home, token=token)
    assert (
        bearer.get("/api/models", headers={"authorization": f"Bearer {token}"}).status_code == 200
    )
    # the host is checked before the token
    response = bearer.get("/", headers={"authorization": f"Bearer {token}", "host": "evil.example"})
    assert response.status_code == 400


def _assert_security_headers(response: httpx.Response) -> None:
    csp = response.headers.get("content-security-policy", "")
    where = (response.request.method, str(response.request.url), response.status_code)
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, where
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp, where
    assert "unsafe-eval" not in csp, where
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("x-frame-options") == "DENY", where
    assert response.headers.get("referrer-policy") in ("same-origin", "no-referrer"), where


@pytest.mark.local_only
def test_security_headers_are_on_every_response(reg: Registry, home: Path, ui):
    push(reg, "m", 1)
    push(reg, "m", 2)
    client = ui(home, allow_edits=True, raise_errors=False)
    responses = [
        client.get(url, follow_redirects=False)
        for url in (
            "/", "/models/m", "/versions/m:1", "/compare?a=m:1&b=m:2", "/storage",
            "/api/models", "/api/models/m", "/api/versions/m:1", "/api/versions/m:1/log",
            "/api/compare?a=m:1&b=m:2", "/api/storage", "/static/ui.css", "/static/ui.js",
            "/static/nope.css", "/nope", "/versions/m:9", "/?page=0", "/api/versions/m:9",
        )
    ]  # fmt: skip
    responses.append(client.get("/", headers={"host": "evil.example"}))
    responses.append(
        client.post("/versions/m:1/alias", data={"alias": "x"}, follow_redirects=False)
    )
    responses.append(client.put("/api/models"))
    csrf = client.app_settings.csrf
    responses.append(
        client.post(
            "/versions/m:1/alias", data={"alias": "x", "csrf": csrf}, follow_redirects=False
        )
    )
    locked = ui(home, token="t0ken")
    responses.append(locked.get("/"))
    responses.append(locked.get("/?token=t0ken", follow_redirects=False))
    statuses = {r.status_code for r in responses}
    assert {200, 303, 400, 401, 403, 404, 405} <= statuses, statuses
    for response in responses:
        _assert_security_headers(response)
    # the pages' HTML needs nothing the policy forbids
    for url in ("/", "/models/m", "/versions/m:1", "/compare?a=m:1&b=m:2", "/storage"):
        assert_safe(client.get(url).text)


def _asgi_get(app, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as given (an HTTP client would resolve the dot segments)."""
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    anyio.run(app, scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


@pytest.mark.local_only
def test_no_route_reads_a_path(reg: Registry, home: Path, ui):
    """Static files come from a fixed table; a ref or name holding a path is just a
    bad ref or name."""
    push(reg, "m", 1)
    client = ui(home)
    for name in ("ui.css", "ui.js"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and response.content == (STATIC / name).read_bytes()
    assert client.get("/static/ui.css").headers["content-type"] == "text/css; charset=utf-8"
    app = client.app
    secret = str((home / "registry.db").resolve())
    for path in (
        "/static/../../etc/passwd",
        "/static/../../../../../../etc/passwd",
        "/static/..%2f..%2fetc%2fpasswd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/../app.py",
        "/static/../__init__.py",
        "/static/../templates/base.html",
        "/static/nope.js",
        "/static/ui.css.map",
        "/static/UI.CSS",
        "/static/",
        f"/static/{secret}",
    ):
        status, body = _asgi_get(app, path)
        assert status == 404, (path, status)
        assert b"root:" not in body and b"import" not in body and b"{%" not in body, path
    for url in (
        "/static/..%2f..%2fetc%2fpasswd",
        "/static/%2e%2e%2fapp.py",
        "/versions/..%2f..%2fetc%2fpasswd",
        "/versions/%2fetc%2fpasswd:1",
        "/models/..%2f..%2fetc%2fpasswd",
        "/models/%2fetc%2fpasswd",
        "/compare?a=/etc/passwd&b=../../etc/passwd",
        "/versions/m:1/..%2f..%2f..%2fetc%2fpasswd",
        "/api/versions/..%2f..%2fetc%2fpasswd/log",
        "/api/models/" + quote(secret, safe=""),
    ):
        response = client.get(url)
        assert response.status_code in (400, 404), (url, response.status_code)
        assert "root:" not in response.text, url
        if response.headers["content-type"].startswith("text/html"):
            error_line(response)


# -- paging, sorting and bad query values ------------------------------------------------------


@pytest.fixture(scope="module")
def bulk_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local registry of 120 models, bulk/m000 pushed first ... bulk/m119 last."""
    home = tmp_path_factory.mktemp("bulk") / "home"
    state = weights(0)
    with pytest.MonkeyPatch.context() as env:
        env.delenv("REGISTRY_DATABASE_URL", raising=False)
        env.delenv("REGISTRY_STORAGE_URL", raising=False)
        with Registry(home=home) as reg:
            for i in range(120):
                push(reg, f"bulk/m{i:03d}", state)
    return home


def model_names(page: httpx.Response) -> list[str]:
    return re.findall(r'<a class="model-link" href="/models/[^"]*">([^<]*)</a>', page.text)


def next_page(page: httpx.Response) -> str | None:
    found = re.search(r'<a id="next-page" href="([^"]*)"', page.text)
    return unescape(found.group(1)) if found else None


@pytest.mark.local_only
def test_the_models_page_pages_and_sorts(bulk_home: Path, ui, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("REGISTRY_DATABASE_URL", raising=False)
    monkeypatch.delenv("REGISTRY_STORAGE_URL", raising=False)
    client = ui(bulk_home)
    newest_first = [f"bulk/m{i:03d}" for i in reversed(range(120))]

    first = client.get("/")
    assert model_names(first) == newest_first[:50]
    assert "1–50 of 120 models" in first.text
    assert 'id="prev-page"' not in first.text
    second = client.get(next_page(first))
    assert model_names(second) == newest_first[50:100]
    assert 'id="prev-page"' in second.text
    third_url = next_page(second)
    assert urlsplit(third_url).query == "page=3"
    third = client.get(third_url)
    assert model_names(third) == newest_first[100:]
    assert len(model_names(third)) == 20 and next_page(third) is None
    assert "101–120 of 120 models" in third.text

    by_name = client.get("/?sort=name")
    assert model_names(by_name) == sorted(newest_first)[:50]
    assert next_page(by_name) == "/?sort=name&page=2"
    last = client.get(next_page(client.get(next_page(by_name))))
    assert model_names(last) == sorted(newest_first)[100:]
    assert [m["name"] for m in client.get("/api/models?sort=name&page=3").json()] == sorted(
        newest_first
    )[100:]
    filtered = client.get("/?" + urlencode({"q": "bulk/m1*", "sort": "name"}))
    assert model_names(filtered) == [f"bulk/m{i}" for i in range(100, 120)]
    assert next_page(filtered) is None

    for query in (
        "page=0",
        "page=-1",
        "page=x",
        "page=1.5",
        "page=99999999999",
        "sort=bogus",
        "sort=created",
        "since=notadate",
        "before=2026-13-45",
        "tag=novalue",
        "q=..%2Fx",
    ):
        response = client.get("/?" + query)
        assert response.status_code == 400, (query, response.status_code)
        error_line(response)
        api = client.get("/api/models?" + query)
        assert api.status_code == 400, query
        assert api.json()["kind"] in ("InvalidArgumentError", "InvalidReferenceError"), query


@pytest.mark.local_only
def test_a_page_number_in_other_digits_is_a_bad_page(reg: Registry, home: Path, ui):
    """'²' and '١' pass str.isdigit(); int() refuses the first: a page number must be
    ASCII digits, refused in one line like any other bad page, never an internal error."""
    push(reg, "m", 1)
    client = ui(home, raise_errors=False)
    for url in ("/?page=%C2%B2", "/versions/m:1?page=%C2%B2", "/models/m?page=%C2%B2"):
        response = client.get(url)
        assert response.status_code == 400, (url, response.status_code)
        error_line(response)


@pytest.mark.local_only
def test_a_page_past_the_last_does_not_say_there_are_no_models(
    bulk_home: Path, ui, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("REGISTRY_DATABASE_URL", raising=False)
    monkeypatch.delenv("REGISTRY_STORAGE_URL", raising=False)
    page = ui(bulk_home).get("/?page=4")
    assert model_names(page) == []
    assert "No models yet" not in page.text, "120 models, and page 4 says there are none"


# -- no torch for reading -------------------------------------------------------------------------

READ_WITHOUT_TORCH = r"""
import sys
from starlette.testclient import TestClient
from registry import Registry
from registry.ui import Settings, create_app

home, urls = sys.argv[1], sys.argv[2:]
app = create_app(Settings(open_registry=lambda: Registry(home=home)))
with TestClient(app, base_url="http://127.0.0.1:8000") as client:
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.text[:500])
print("torch:" + ",".join(sorted(m for m in sys.modules if m.split(".")[0] == "torch")))
"""


@pytest.mark.local_only
def test_serving_pages_imports_no_torch(reg: Registry, home: Path):
    push(reg, "m", 1, tags={"stage": "dev"})
    push(reg, "m", 2, parent="m:1")
    reg.alias("m:1", "prod")
    urls = [
        "/", "/?sort=size", "/models/m", "/versions/m:1", "/versions/m:prod?sort=size&dir=desc",
        "/storage", "/static/ui.css", "/api/models", "/api/models/m", "/api/versions/m:2",
        "/api/versions/m:2/log", "/api/storage",
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", READ_WITHOUT_TORCH, str(home), *urls],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "torch:", result.stdout


# -- a read-only catalogue role ------------------------------------------------------------------


def test_an_edit_on_a_read_only_catalogue_is_refused_in_one_line(
    team_env: dict[str, str],
    reader_env: dict[str, str],
    postgres_server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ui,
):
    """A server with --allow-edits whose registry connects as a PostgreSQL role made a
    reader (Registry.reader_grants) shows the pages and refuses every edit in one line."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "REGISTRY_CACHE_MAX_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in team_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REGISTRY_CACHE_DIR", str(tmp_path / "cache"))
    home = tmp_path / "home"
    role = f"ui_reader_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    postgres_server.execute(f'CREATE ROLE "{role}" LOGIN')
    with Registry(home=home) as owner:
        push(owner, "m", 1, tags={"stage": "dev"})
        owner.reader_grants(role, run=True)
        before = snapshot(owner)
    for name, value in reader_env.items():  # the S3 identity that may only read
        monkeypatch.setenv(name, value)
    reader_url = postgres_server.url_for(team_env["REGISTRY_DATABASE_URL"], role)
    client = ui(home, database_url=reader_url, allow_edits=True)
    page = client.get("/versions/m:1")
    assert page.status_code == 200
    csrf = csrf_of(page)
    for route, form in EDITS.items():
        response = client.post(
            f"/versions/m:1/{route}",
            data={**form, "csrf": csrf},
            headers={"origin": OWN_ORIGIN},
            follow_redirects=False,
        )
        assert response.status_code == 403, (route, response.status_code, response.text)
        assert error_line(response).startswith("the catalogue refused to write"), route
    assert client.get("/api/models").status_code == 200
    with Registry(home=home) as owner:
        assert snapshot(owner) == before


# -- the real `registry ui` process --------------------------------------------------------------


class UiProcess:
    """`registry ui ARGS` running; ``url`` is the address it printed."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [REGISTRY_EXE, "ui", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(60):
            raise AssertionError(f"registry ui printed no address in 60 s: {self.lines}")
        self.wait_for("registry ui: serving")
        found = [m for line in self.lines if (m := re.match(r"registry ui: serving (\S+)$", line))]
        assert found, (self.proc.poll(), self.lines)
        self.url = found[0].group(1)
        self.port = urlsplit(self.url).port
        self.local = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith(("read-only", "edits allowed")):  # printed after the address
                self._ready.set()
        self._ready.set()

    def wait_for(self, text: str, timeout: float = 20) -> str:
        """The first line printed that holds ``text`` (waiting for it)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.lines if text in line]
            if found:
                return found[0]
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"registry ui never printed {text!r}: {self.lines}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def start_ui():
    started: list[UiProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> UiProcess:
        server = UiProcess(*args, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.local_only
def test_the_registry_ui_process(reg: Registry, home: Path, start_ui):
    push(reg, "m", 1, description=IMG)
    server = start_ui("--port", "0", env={"REGISTRY_UI_TOKEN": ""})
    assert server.url == f"http://127.0.0.1:{server.port}/" and server.port > 0
    assert "read-only (--allow-edits to change)" in server.lines
    with httpx.Client(base_url=server.local, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and 'href="/models/m"' in page.text
        _assert_security_headers(page)
        version = client.get("/versions/m:1")
        assert version.status_code == 200 and IMG not in version.text
        assert client.get("/api/versions/m:1").json()["description"] == IMG
        assert client.post("/versions/m:1/alias", data={"alias": "x"}).status_code == 403
        assert client.get("/", headers={"host": f"evil.example:{server.port}"}).status_code == 400
    assert not reg.get("m:1").aliases
    raw = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for path in ("/static/../../etc/passwd", "/static/..%2f..%2fetc%2fpasswd"):
        raw.request("GET", path)
        response = raw.getresponse()
        body = response.read()
        assert response.status == 404 and b"root:" not in body, path
    raw.close()

    # a port in use: one line, exit 1
    busy = subprocess.run(
        [REGISTRY_EXE, "ui", "--port", str(server.port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert busy.returncode == 1, busy.stderr
    lines = busy.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(server.port) in lines[0]
    assert "Traceback" not in busy.stderr
    server.stop()
    assert server.proc.returncode is not None


@pytest.mark.local_only
def test_a_port_another_program_holds_is_one_line(home: Path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        busy = subprocess.run(
            [REGISTRY_EXE, "ui", "--port", str(port)], capture_output=True, text=True, timeout=60
        )
    assert busy.returncode == 1
    assert busy.stderr.splitlines() == [
        f"Error: cannot serve on 127.0.0.1:{port}: Address already in use"
    ]


@pytest.mark.local_only
def test_registry_ui_beyond_loopback_needs_its_token(reg: Registry, home: Path, start_ui):
    push(reg, "m", 1)
    server = start_ui("--host", "0.0.0.0", "--port", "0", env={"REGISTRY_UI_TOKEN": ""})
    token = dict(p.split("=", 1) for p in urlsplit(server.url).query.split("&"))["token"]
    # every address: the printed one names this machine, which others can open
    here = socket.gethostname()
    assert len(token) >= 24 and server.url.startswith(f"http://{here}:{server.port}/?token=")
    assert token in server.wait_for("every request needs the token")
    with httpx.Client(base_url=server.local, timeout=30) as client:
        assert client.get("/").status_code == 401
        assert client.get("/", headers={"authorization": "Bearer nope"}).status_code == 401
        assert client.get("/", headers={"authorization": f"Bearer {token}"}).status_code == 200
        visit = client.get(f"/?token={token}", follow_redirects=True)  # 303, cookie set
        assert visit.status_code == 200 and visit.url.path == "/" and "token" not in str(visit.url)
        assert client.get("/api/models").json()[0]["name"] == "m"
        # not loopback: any host name, still the token
        other_host = {"host": f"registry.example:{server.port}"}
        assert client.get("/api/models", headers=other_host).status_code == 200
    with httpx.Client(base_url=server.local, timeout=30) as fresh:
        assert fresh.get("/api/models", headers={"host": "registry.example"}).status_code == 401

    chosen = start_ui("--host", "0.0.0.0", "--port", "0", env={"REGISTRY_UI_TOKEN": "abc"})
    assert chosen.url == f"http://{here}:{chosen.port}/?token=abc"
    with httpx.Client(base_url=chosen.local, timeout=30) as client:
        assert client.get("/").status_code == 401
        assert client.get("/", headers={"authorization": f"Bearer {token}"}).status_code == 401
        assert client.get("/", headers={"authorization": "Bearer abc"}).status_code == 200

    # REGISTRY_UI_TOKEN asks for a token on loopback too
    local = start_ui("--port", "0", env={"REGISTRY_UI_TOKEN": "abc"})
    assert local.url == f"http://127.0.0.1:{local.port}/?token=abc"
    with httpx.Client(base_url=local.local, timeout=30) as client:
        assert client.get("/").status_code == 401
        assert client.get("/?token=abc", follow_redirects=True).status_code == 200
        assert client.get("/storage").status_code == 200


@pytest.mark.local_only
def test_what_a_new_user_met(reg: Registry, home: Path, ui):
    """Found by a first-time user: bad query values are refused rather than ignored, a
    page past the last says so with a way back, an edit address opened in the browser
    says what it is for, and a model named like a sub-address is reached as `show`
    reads its name."""
    push(reg, "m", 1)
    push(reg, "m/tensors", 2)
    client = ui(home)
    for url in (
        "/versions/m:1?dir=up",
        "/compare?a=m:1&b=m:1&scale=bogus",
        "/api/versions/m:1/tensors?dir=up",
        "/api/storage?gc=maybe",
    ):
        response = client.get(url)
        assert response.status_code == 400, url
    page = client.get("/versions/m:1?page=5")
    assert page.status_code == 200 and 'id="tensor-first"' in page.text
    assert "no tensors on page 5" in page.text
    page = client.get("/models/m?page=2")
    assert page.status_code == 200 and 'id="first-page"' in page.text
    opened = client.get("/versions/m:1/alias")
    assert opened.status_code == 405 and "POST" in error_line(opened)
    # a bare name is a model's latest version, as `registry show m/tensors` reads it
    assert client.get("/api/versions/m/tensors").json()["ref"] == "m/tensors:1"
    assert client.get("/api/versions/m:1/tensors").json()["ref"] == "m:1"
    missing = client.get("/api/nosuch")
    assert missing.status_code == 404 and missing.json()["kind"] == "NotFound"
    assert client.get("/api/models/nobody").json() == []
