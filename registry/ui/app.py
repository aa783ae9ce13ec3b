"""The web page's Starlette application: routes, access checks, rendering.

Every route answers from :mod:`registry.ui.pages` (HTML through the Jinja2 templates
in ``templates/``, autoescaped) or from the same records' ``to_dict()`` under
``/api/`` (the CLI's ``--json`` shapes). Static files come from a fixed table loaded
at start: no route reads or writes a path taken from a request.

Access, checked by ``_Guard`` on every request before any route:

- the ``Host`` header must name this server: on loopback, a loopback name only (a
  page elsewhere cannot reach the registry by rebinding its DNS name to 127.0.0.1);
- with a token (REGISTRY_UI_TOKEN, or generated when bound beyond loopback), every
  request carries it: ``Authorization: Bearer TOKEN``, or the cookie a first visit
  to ``/?token=TOKEN`` sets (HttpOnly, SameSite=Strict), else 401;
- edits (POST) only with ``allow_edits``; each form carries the process's CSRF
  token and a cross-site POST (``Origin`` or ``Sec-Fetch-Site``) is refused.

Registry calls run in worker threads (at most ``WORKERS`` at once), each thread with
a :class:`registry.Registry` of its own.
"""

from __future__ import annotations

import hmac
import json
import math
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import anyio
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import _format
from ..errors import (
    CatalogReadOnlyError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    RegistryError,
    StoreReadOnlyError,
)
from ..keyvalue import format_kwargs, parse_tags
from . import pages
from .pages import model_url, version_url

#: Registry calls served at once (threads, each with its own Registry).
WORKERS = 4
#: The largest form an edit may send, in bytes.
MAX_FORM_BYTES = 256 * 1024
#: The cookie a token visit sets.
TOKEN_COOKIE = "registry_ui_token"
#: Host names that are this machine.
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: Files served under /static/: name -> media type.
STATIC = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null"
    # with a form's POST, and the CSRF check could not tell the page's own forms.
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


@dataclass
class Settings:
    """How the page serves: ``loopback`` (bound to this machine only), ``token``
    (None: none asked for), ``allow_edits``, and ``open_registry`` (makes the
    Registry each worker thread uses; tests and the CLI give their own)."""

    open_registry: Callable[[], Any]
    allow_edits: bool = False
    token: str | None = None
    loopback: bool = True
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class VersionedRef(Convertor):
    """A path segment run naming a version with a number, alias or digest (``NAME:V``,
    ``NAME@sha256:HEX``): what ``/tensors`` and the edit addresses follow. A bare name
    is not one, so ``/api/versions/team/tensors`` is model ``team/tensors``'s latest
    version, as ``registry show team/tensors`` reads it. (``/log`` takes a bare name
    too, as ``registry log NAME`` does: a model named ``.../log`` is reached there
    with an explicit version, ``NAME:latest``.)"""

    regex = r"[^:@]+[:@][^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class Ref(VersionedRef):
    """A reference as the version page takes it: a name (its latest version), or a
    versioned ref. Nothing may follow the version (``/versions/m:1/alias`` is the
    alias form's address, not a version: a GET there is 405)."""

    regex = r"[^:@]+(?:[:@][^/]+)?"


register_url_convertor("vref", VersionedRef())
register_url_convertor("ref", Ref())


def create_app(settings: Settings) -> ASGIApp:
    """The ASGI application serving the web page with ``settings``."""
    ui = _Pages(settings)
    routes = [
        Route("/", ui.models_page),
        Route("/models/{name:path}", ui.model_page),
        Route("/versions/{ref:vref}/alias", ui.edit_alias, methods=["POST"]),
        Route("/versions/{ref:vref}/tags", ui.edit_tags, methods=["POST"]),
        Route("/versions/{ref:vref}/description", ui.edit_description, methods=["POST"]),
        Route("/versions/{ref:ref}", ui.version_page),
        Route("/compare", ui.compare_page),
        Route("/storage", ui.storage_page),
        Route("/static/{name}", ui.static),
        Route("/api/models", ui.api_models),
        Route("/api/models/{name:path}", ui.api_model),
        Route("/api/versions/{ref:path}/log", ui.api_log),
        Route("/api/versions/{ref:vref}/tensors", ui.api_tensors),
        Route("/api/versions/{ref:path}", ui.api_version),
        Route("/api/compare", ui.api_compare),
        Route("/api/storage", ui.api_storage),
        Route("/api/gc", ui.api_gc),
    ]
    app = Starlette(routes=routes)
    app.add_exception_handler(404, ui.not_found)
    app.add_exception_handler(405, ui.not_allowed)
    return _Guard(app, settings)


class _Guard:
    """The access checks of the module docstring, and the security headers."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._refusal(request)
        if isinstance(refusal, Response):
            await _with_headers(refusal)(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for key, value in SECURITY_HEADERS.items():
                    if key.encode() not in present:
                        headers.append((key.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, request: Request) -> Response | None:
        host = _host_name(request.headers.get("host", ""))
        if self.settings.loopback and host not in LOOPBACK_NAMES:
            return _plain(400, f"this page answers only to a loopback host name, not {host!r}")
        token = self.settings.token
        if token is None:
            return None
        given = request.headers.get("authorization", "")
        if given.startswith("Bearer ") and _same(given[7:], token):
            return None
        if _same(request.cookies.get(TOKEN_COOKIE, ""), token):
            return None
        if _same(request.query_params.get("token", ""), token) and request.method == "GET":
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + ("?" + urlencode(rest) if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response
        response = _plain(
            401,
            "this page needs its access token: open the address registry ui printed "
            "(…/?token=…), or send Authorization: Bearer TOKEN",
        )
        response.headers["www-authenticate"] = 'Bearer realm="registry ui"'
        return response


def _host_name(header: str) -> str:
    """The host name of a Host header, without its port (IPv6 in brackets kept)."""
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _same(given: str, wanted: str) -> bool:
    return hmac.compare_digest(given.encode(), wanted.encode())


def _plain(status: int, message: str) -> Response:
    return Response(message + "\n", status_code=status, media_type="text/plain; charset=utf-8")


def _with_headers(response: Response) -> Response:
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


#: HTTP status of each kind of RegistryError, most specific first.
STATUS = (
    (NotFoundError, 404),
    (CatalogReadOnlyError, 403),
    (StoreReadOnlyError, 403),
    (InvalidArgumentError, 400),
    (ConflictError, 409),
)


def status_of(error: RegistryError) -> int:
    return next((code for kind, code in STATUS if isinstance(error, kind)), 500)


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("registry.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        size=_format.size,
        count=_format.count,
        when=_format.when,
        shape=_format.shape,
        kwargs=format_kwargs,
        model_url=model_url,
        version_url=version_url,
        short=lambda digest: str(digest)[:12],
        number=lambda n: f"{n:,}",
        rel=lambda r: f"{r:.3g}" if math.isfinite(r) else "not finite (A all zeros, or NaN)",
        as_json=lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True),
    )
    env.globals.update(quote=quote)
    return env


class _Pages:
    """The route handlers; one instance per application."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.env = _templates()
        self.limiter = anyio.CapacityLimiter(WORKERS)
        self.local = threading.local()
        self.static_files = {
            name: (resources.files("registry.ui").joinpath("static", name).read_bytes(), kind)
            for name, kind in STATIC.items()
        }

    # -- running registry calls ----------------------------------------------------

    def _registry(self) -> Any:
        reg = getattr(self.local, "registry", None)
        if reg is None:
            reg = self.local.registry = self.settings.open_registry()
        return reg

    async def _call(self, job: Callable[[Any], Any]) -> Any:
        return await anyio.to_thread.run_sync(lambda: job(self._registry()), limiter=self.limiter)

    def _render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(
            allow_edits=self.settings.allow_edits, csrf=self.settings.csrf, **context
        )
        return HTMLResponse(html, status_code=status)

    async def _page(
        self, template: str, job: Callable[[Any], dict[str, Any]], **context: Any
    ) -> Response:
        try:
            data = await self._call(job)
        except RegistryError as exc:
            return self._error(exc)
        return self._render(template, **context, **data)

    def _error(self, exc: RegistryError, status: int | None = None) -> Response:
        return self._render(
            "error.html", status=status or status_of(exc), message=_format.printable(str(exc))
        )

    async def _json(self, job: Callable[[Any], Any]) -> Response:
        try:
            data = await self._call(job)
        except RegistryError as exc:
            return JSONResponse(
                {"error": str(exc), "kind": type(exc).__name__}, status_code=status_of(exc)
            )
        return JSONResponse(data)

    # -- pages ---------------------------------------------------------------------

    async def models_page(self, request: Request) -> Response:
        query, tags = request.query_params, request.query_params.getlist("tag")
        return await self._page("models.html", lambda reg: pages.models(reg, query, tags))

    async def model_page(self, request: Request) -> Response:
        name, query = request.path_params["name"], request.query_params
        return await self._page("model.html", lambda reg: pages.model(reg, name, query))

    async def version_page(self, request: Request) -> Response:
        ref, query = request.path_params["ref"], request.query_params
        return await self._page("version.html", lambda reg: pages.version(reg, ref, query))

    async def compare_page(self, request: Request) -> Response:
        query = request.query_params
        a, b = query.get("a", ""), query.get("b", "")

        def job(reg: Any) -> dict[str, Any]:
            scale = pages.choice(query, "scale", ("linear", "log"))
            found = pages.comparison(reg, a, b)
            from .graphs import change_chart

            return {**found, "chart": change_chart(found["rows"], scale)}

        return await self._page("compare.html", job)

    async def storage_page(self, request: Request) -> Response:
        return await self._page("storage.html", pages.storage)

    async def static(self, request: Request) -> Response:
        found = self.static_files.get(request.path_params["name"])
        if found is None:
            return _plain(404, "no such file")
        body, kind = found
        response = Response(body, media_type=kind)
        response.headers["cache-control"] = "max-age=3600"
        return response

    async def not_found(self, request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "no such endpoint", "kind": "NotFound"}, 404)
        return self._render("error.html", status=404, message="no such page")

    async def not_allowed(self, request: Request, exc: Exception) -> Response:
        message = (
            "this address takes an edit form's POST: open the version's page"
            if request.method == "GET"
            else "this address only shows a page"
        )
        return self._render("error.html", status=405, message=message)

    # -- JSON (the CLI's --json shapes) ------------------------------------------------

    async def api_models(self, request: Request) -> Response:
        query, tags = request.query_params, request.query_params.getlist("tag")

        def job(reg: Any) -> list[dict[str, Any]]:
            return [m.to_dict() for m in pages.models(reg, query, tags)["models"]]

        return await self._json(job)

    async def api_model(self, request: Request) -> Response:
        name, query = request.path_params["name"], request.query_params

        def job(reg: Any) -> list[dict[str, Any]]:  # `registry list NAME --json`: [] if none
            page = pages.page_number(query.get("page"))
            limit = pages.VERSIONS_PER_PAGE
            found = reg.list(name, limit=limit, offset=(page - 1) * limit)
            return [mv.to_dict(tensors=False) for mv in found]

        return await self._json(job)

    async def api_version(self, request: Request) -> Response:
        ref = request.path_params["ref"]
        return await self._json(lambda reg: reg.get(ref).to_dict())

    async def api_log(self, request: Request) -> Response:
        ref = request.path_params["ref"]
        return await self._json(lambda reg: [e.to_dict() for e in reg.log(ref)])

    async def api_tensors(self, request: Request) -> Response:
        ref, query = request.path_params["ref"], request.query_params

        def job(reg: Any) -> dict[str, Any]:
            page = pages.page_number(query.get("page"))
            return reg.tensor_table(
                ref,
                contains=query.get("tq") or None,
                sort=query.get("sort") or "position",
                descending=pages.choice(query, "dir", ("asc", "desc")) == "desc",
                limit=pages.TENSORS_PER_PAGE,
                offset=(page - 1) * pages.TENSORS_PER_PAGE,
            ).to_dict()

        return await self._json(job)

    async def api_compare(self, request: Request) -> Response:
        a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
        return await self._json(lambda reg: pages.comparison(reg, a, b)["data"])

    async def api_storage(self, request: Request) -> Response:
        query = request.query_params

        def job(reg: Any) -> dict[str, Any]:
            return reg.storage(gc=pages.choice(query, "gc", ("1", "0")) == "1").to_dict()

        return await self._json(job)

    async def api_gc(self, request: Request) -> Response:
        return await self._json(lambda reg: reg.gc(dry_run=True).to_dict())

    # -- edits -------------------------------------------------------------------------

    async def _edit(
        self, request: Request, change: Callable[[Any, str, dict[str, list[str]]], Any]
    ) -> Response:
        """Check the edit may happen, apply ``change(reg, ref, form)``, go back to the
        version's page (303); a refusal or a RegistryError is one line."""
        if not self.settings.allow_edits:
            return self._render(
                "error.html",
                status=403,
                message="this page is read-only: start it with `registry ui --allow-edits` "
                "to set aliases, tags and descriptions",
            )
        form = await _form(request)
        if form is None:
            return self._render("error.html", status=413, message="the form is too large")
        site = request.headers.get("sec-fetch-site")
        origin = request.headers.get("origin")
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        token = (form.get("csrf") or [""])[0]
        if (
            (site is not None and site not in ("same-origin", "none"))
            or (origin is not None and origin != own)
            or not _same(token, self.settings.csrf)
        ):
            return self._render(
                "error.html",
                status=403,
                message="refused: the form did not come from this page (reload it and try again)",
            )
        ref = request.path_params["ref"]
        try:
            mv = await self._call(lambda reg: change(reg, ref, form))
        except RegistryError as exc:
            return self._error(exc)
        return RedirectResponse(version_url(mv.ref), status_code=303)

    async def edit_alias(self, request: Request) -> Response:
        def change(reg: Any, ref: str, form: dict[str, list[str]]) -> Any:
            alias = (form.get("alias") or [""])[0].strip()
            if not alias:
                raise InvalidArgumentError("give the alias to set, e.g. production")
            return reg.alias(ref, alias)

        return await self._edit(request, change)

    async def edit_tags(self, request: Request) -> Response:
        def change(reg: Any, ref: str, form: dict[str, list[str]]) -> Any:
            lines = [line for text in form.get("set", []) for line in text.splitlines()]
            tags = parse_tags([line for line in lines if line.strip()])
            keys = [k for text in form.get("remove", []) for k in text.split() if k]
            if not tags and not keys:
                raise InvalidArgumentError("give tags to set (KEY=VALUE lines) or keys to remove")
            mv = reg.tag(ref, tags) if tags else None
            if keys:
                mv = reg.untag(mv.ref if mv else ref, keys)
            return mv

        return await self._edit(request, change)

    async def edit_description(self, request: Request) -> Response:
        def change(reg: Any, ref: str, form: dict[str, list[str]]) -> Any:
            text = (form.get("description") or [""])[0].replace("\r\n", "\n")
            return reg.describe(ref, text if text.strip() else None)

        return await self._edit(request, change)


async def _form(request: Request) -> dict[str, list[str]] | None:
    """An ``application/x-www-form-urlencoded`` body, or None past MAX_FORM_BYTES."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
