"""The web page, ``registry ui``: browse models, versions, their history and tensors;
compare two versions tensor by tensor; see what storage dedup saved; with
``--allow-edits``, set aliases, tags and descriptions.

Starlette (routes) with Jinja2 (templates, autoescaped) under uvicorn. Modules:

    server   serve(): the socket, the token, uvicorn; what ``registry ui`` calls
    app      the Starlette app: routes, access checks (host, token, CSRF), rendering
    pages    what each page shows, read through Registry; the JSON endpoints' data
    graphs   the lineage graph and the change chart as geometry for SVG
    templates/, static/   the HTML, one stylesheet and one small script (no CDN)

Serving a page never imports torch; the compare page does, through ``Registry.diff``.
Imports ``registry.api`` and the records; nothing below the API.
"""

from __future__ import annotations

from .app import Settings, create_app
from .server import serve

__all__ = ["Settings", "create_app", "serve"]
